"""Frames of random training layouts with the simulator's object position: an auxiliary target for SFT.

A policy trained on two demonstrations per task sees two object positions per task; nothing in behaviour cloning
asks its trunk to say where the object is, and online RL with that trunk frozen then moves one place for every
layout. Levine et al. (2016) pretrain their visuomotor keypoints on object poses for this reason. Here SFT can add
a loss that predicts ``info["obj_pos"]`` (and/or ``info["goal_pos"]``, the goal the instruction names) from the
action readout on frames of many *training* layouts (RL's seed
range, never the validation or evaluation seeds): the frame at reset and the frame after a few random arm moves
(so the hand is not always at home). No expert runs and no action is recorded: these frames teach where things
are, not what to do. The target is training-only state; the policy's inputs stay the image, the arm's state and
the instruction.
"""

from __future__ import annotations

import numpy as np

from rlvla.envs.splits import RL_SEEDS

# The last frames rendered in this process, by their arguments (rendering is seeded: the same call, the same frames).
_LAST: dict[tuple, dict] = {}

# Layouts are drawn from here upward: inside RL's training range, away from the demonstrations (seed 0 upward).
LAYOUT_SEED_OFFSET = 500_000


def _frames_of_task(job: dict) -> dict:
    """One task's frames (in a worker process): reset, then ``moves`` random arm actions, one frame each end."""
    from rlvla.envs import make_env

    task, n, moves = job["task"], job["layouts"], job["moves"]
    env = make_env(task, split="id", image_size=job["image_size"], cameras=tuple(job["cameras"]), camera_every=max(moves, 1))
    rng = np.random.default_rng([job["seed"], 104_729])
    cams = list(env.cameras)
    images, proprio, instr, pos, goal, rank, by_colour, px, named = [], [], [], [], [], [], [], [], []

    def keep(obs, info):
        images.append(np.stack([obs["image"] if i == 0 else obs[f"image_{c}"] for i, c in enumerate(cams)]))
        proprio.append(np.asarray(obs["proprio"], np.float32))
        instr.append(str(obs["instruction"]))
        pos.append(np.asarray(info["obj_pos"], np.float32)[:3])
        goal.append(np.asarray(info["goal_pos"], np.float32)[:3])
        cands = info.get("candidates")  # several candidates: the named one's place among them, left to right in x
        rank.append(int(np.argsort(np.argsort(np.asarray(cands)[:, 0]))[info["target_index"]]) if cands is not None else -1)
        colours = list(info.get("colours", []))  # every candidate's place, in the order of its colour's name
        by_colour.append(np.concatenate([np.asarray(cands[colours.index(c)], np.float32)[:3] for c in sorted(colours)])
                         if cands is not None and colours else np.zeros(0, np.float32))  # fmt: skip
        # where the first camera draws each colour's candidate (pixels, colour-name order) and which colour is named
        order = [colours.index(c) for c in sorted(colours)] if cands is not None and colours else []
        px.append(env.candidate_pixels()[order].astype(np.float32).reshape(-1) if order else np.zeros(0, np.float32))
        named.append(sorted(colours).index(colours[info["target_index"]]) if order else -1)

    try:
        for k in range(n):
            obs, info = env.reset(seed=LAYOUT_SEED_OFFSET + job["seed"] + k)
            keep(obs, info)
            if moves:
                direction = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
                direction[-1] = 0.0  # the gripper stays as it is
                for _ in range(moves):
                    obs, _r, term, trunc, info = env.step(direction)
                    if term or trunc:
                        break
                keep(obs, info)
    finally:
        env.close()
    return {"images": np.stack(images), "proprio": np.stack(proprio), "instructions": instr, "obj_pos": np.stack(pos),
            "goal_pos": np.stack(goal), "target_rank": np.asarray(rank, np.int64), "colour_pos": np.stack(by_colour),
            "colour_px": np.stack(px), "named_colour": np.asarray(named, np.int64), "task": [task] * len(instr)}  # fmt: skip


def layout_frames(tasks, layouts: int, image_size: int, cameras, moves: int = 8, seed: int = 0) -> dict:
    """``layouts`` random training layouts per task -> ``{"images": (N, cams, H, W, 3) uint8, "proprio": (N, P),
    "instructions": [N], "obj_pos": (N, 3), "goal_pos": (N, 3), "target_rank": (N,), "task": [N]}`` (two frames per
    layout with ``moves`` > 0; where a suite has several candidates, ``goal_pos`` is the goal the instruction names
    and ``target_rank`` its place among them sorted by x, else -1; ``colour_pos`` (N, 3 x candidates): every
    candidate's position, in the order of its colour's name, or (N, 0) where a task has none; ``colour_px``
    (N, 2 x candidates): where the first camera draws each of them, (column, row) pixels in the same order;
    ``named_colour``: the named candidate's index in that order, else -1). Rendered in spawned
    worker processes (a GL context is never created in the trainer); a second call with the same arguments in the
    same process returns the same frames (shared: callers read them, never write) without rendering again."""
    import multiprocessing as mp

    key = (tuple(tasks), int(layouts), int(image_size), tuple(cameras), int(moves), int(seed))
    if key in _LAST:  # the same frames again in this process (the quickstart's VLA and its baselines)
        return _LAST[key]
    if layouts < 1:
        raise ValueError(f"layout frames need layouts >= 1 per task (got {layouts})")
    if LAYOUT_SEED_OFFSET + seed + layouts > RL_SEEDS.stop:
        raise ValueError(f"layout seeds {LAYOUT_SEED_OFFSET + seed}..{LAYOUT_SEED_OFFSET + seed + layouts} leave RL's training range")
    jobs = [{"task": t, "layouts": layouts, "moves": moves, "image_size": image_size, "cameras": list(cameras), "seed": seed}
            for t in tasks]  # fmt: skip
    with mp.get_context("spawn").Pool(min(2, len(jobs))) as pool:
        parts = pool.map(_frames_of_task, jobs)
    keys = ("images", "proprio", "obj_pos", "goal_pos", "target_rank", "named_colour")
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    for k in ("colour_pos", "colour_px"):  # tasks without candidates (or with other counts): none
        widths = {p[k].shape[1] for p in parts}
        out[k] = np.concatenate([p[k] for p in parts]) if len(widths) == 1 else np.zeros((len(out["proprio"]), 0), np.float32)
    out = {**out, "instructions": [s for p in parts for s in p["instructions"]], "task": [s for p in parts for s in p["task"]]}
    _LAST.clear()
    _LAST[key] = out
    return out
