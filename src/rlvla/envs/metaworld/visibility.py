"""Measure whether a task's randomised layout can be read from pixels.

For each task: how many pixels the goal marker covers (image with the marker minus image with it hidden), and
how many pixels change between two layouts with the arm in the same pose. Used to write docs/TASKS.md.
"""

from __future__ import annotations

import numpy as np

from rlvla.envs import make_env, train_seeds
from rlvla.envs.metaworld.scene import GOAL_MARKER_RGBA


def changed_pixels(a: np.ndarray, b: np.ndarray, threshold: int = 30) -> int:
    """Pixels whose summed absolute RGB difference exceeds ``threshold``."""
    return int((np.abs(a.astype(int) - b.astype(int)).sum(-1) > threshold).sum())


def goal_marker_pixels(env) -> int:
    """Pixels that change when the goal marker is hidden, in the env's current state."""
    m = env._mw.model
    shown = env._renderer.render(env._mw.data)[env.cameras[0]]
    alpha = m.site_rgba[:, 3].copy()
    goal_sites = [i for i in range(m.nsite) if np.allclose(m.site_rgba[i], GOAL_MARKER_RGBA)]
    m.site_rgba[goal_sites, 3] = 0.0
    hidden = env._renderer.render(env._mw.data)[env.cameras[0]]
    m.site_rgba[:, 3] = alpha
    return changed_pixels(shown, hidden)


def task_visibility(task: str, seeds=None, image_size: int = 64, camera: str = "corner") -> dict:
    seeds = list(seeds or train_seeds(5))
    env = make_env(task, image_size=image_size, cameras=(camera,))
    marker, first, rel = [], [], []
    for s in seeds:
        obs, info = env.reset(seed=s)
        marker.append(goal_marker_pixels(env))
        first.append(obs["image"])
        rel.append(info["goal_pos"] - info["obj_pos"])
    env.close()
    layout_px = [changed_pixels(first[0], f) for f in first[1:]]
    return {"goal_marker_px_min": min(marker), "goal_marker_px_mean": float(np.mean(marker)),
            "layout_change_px_min": min(layout_px),
            # a goal that moves relative to the object must itself be seen; one fixed to the object need not
            "goal_independent": bool(np.max(np.std(rel, axis=0)) > 1e-3)}  # fmt: skip


def grounded_visibility(task: str, seeds=None, image_size: int = 64, camera: str = "corner") -> dict:
    """A grounded task at reset: the pixels that show the real target's colour and each decoy's (min and mean
    over layouts), and how often some candidate shows fewer than 4 pixels (too small to read its colour)."""
    seeds = list(seeds or train_seeds(20))
    env = make_env(f"grounded/{task}", image_size=image_size, cameras=(camera,))
    target, decoys = [], []
    for s in seeds:
        _, info = env.reset(seed=s)
        px = env.colour_pixels()
        k = info["target_index"]
        target.append(px[k])
        decoys.extend(p for i, p in enumerate(px) if i != k)
    env.close()
    return {"target_px_min": min(target), "target_px_mean": float(np.mean(target)), "decoy_px_min": min(decoys),
            "decoy_px_mean": float(np.mean(decoys)),
            "under_4px": float(np.mean([p < 4 for p in target + decoys]))}  # fmt: skip


def expert_success(task: str, split: str, episodes: int) -> float:
    """The suite's scripted expert on ``episodes`` evaluation layouts of ``split`` (no rendering)."""
    return expert_episodes(task, split, episodes)["success_rate"]


def expert_episodes(task: str, split: str, episodes: int) -> dict:
    """The scripted expert on ``episodes`` evaluation layouts: ``success_rate`` and its successful episodes'
    lengths in env steps (``steps_p95``, ``steps_max``; 0 when none succeeded) against the episode limit ``limit``."""
    from rlvla.envs import eval_seeds, split_task

    suite, name = split_task(task)
    env = make_env(task, split=split, cameras=())
    expert = suite.expert(name)
    lengths = []
    for s in eval_seeds(episodes):
        _, info = env.reset(seed=s)
        expert.begin_episode()
        done, steps = False, 0
        while not done:
            _, _, term, trunc, info = env.step(expert.act(info))
            done, steps = term or trunc, steps + 1
        if info["success"]:
            lengths.append(steps)
    env.close()
    return {"success_rate": len(lengths) / episodes, "steps_p95": float(np.percentile(lengths, 95)) if lengths else 0.0,
            "steps_max": max(lengths, default=0), "limit": int(env.max_steps)}  # fmt: skip
