"""Evaluate a policy checkpoint on named splits: success with 95% Wilson intervals, return, length, latency.

Episode ``k`` of task ``t`` uses the ``k``-th evaluation layout seed of ``t`` on every split, so split results are
paired (same layouts on id / ood-visual / ood-camera / ood-language). Episodes run batched over an
:class:`~rlvla.envs.pool.EnvPool`; one decision = one batched policy call for all running envs, executed as an
action chunk by each env.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from rlvla.collectors.scheduler import Lanes
from rlvla.envs import resolve_tasks
from rlvla.envs.pool import EnvPool, stack_obs
from rlvla.envs.splits import SPLITS, check_split, eval_seeds, validation_seeds
from rlvla.eval.metrics import wilson_interval


def _save_gif(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = [Image.fromarray(f).resize((f.shape[1] * 2, f.shape[0] * 2), Image.NEAREST) for f in frames]
    tmp = path.with_name(path.name + ".tmp")
    imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)


class torch_threads:
    """Temporarily set torch's intra-op threads. With env workers rendering on the other cores, one inference
    thread is faster: idle OpenMP threads spin and starve the workers (measured 93 vs 53 env steps/s)."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def _bar(label: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
    p.start()
    return p, p.add_task("", total=total)


def evaluate(
    policy,
    tasks,
    splits=("id",),
    episodes: int = 20,
    num_envs: int = 8,
    workers: int | None = None,
    max_steps: int | None = None,
    deterministic: bool = True,
    video_dir=None,
    videos: int = 2,
    seed_offset: int = 0,
    progress: bool = False,
    test_time=None,
    seeds: str = "eval",
) -> dict:
    """``episodes`` per split (an int, or a dict split -> int), spread round-robin over ``tasks``. Returns
    ``{"splits": {split: result}}``.

    ``seeds``: ``eval`` (evaluation seeds: report results there) or ``validation`` (the training-range slice no run
    trains on: tune there; ``id`` only, as out-of-distribution splits take evaluation seeds). ``deterministic``
    False evaluates the policy as it explores (its sampling distribution, as during RL).

    ``test_time``: a :class:`rlvla.eval.testtime.TestTimeConfig` (default: the policy's own chunk); its
    per-decision time is in ``latency_ms`` (the overhead is the difference to the base)."""
    from rlvla.eval.testtime import TestTimeConfig, make_selector

    selector = make_selector(policy, test_time or TestTimeConfig())
    selector.deterministic = deterministic
    tasks = resolve_tasks(tasks)
    per_split = episodes if isinstance(episodes, dict) else {s: episodes for s in splits}
    _check_request(splits, per_split, episodes, seeds)
    seed_list = eval_seeds if seeds == "eval" else validation_seeds
    policy.eval()
    _embed_instructions(policy.cfg, tasks)
    out = {"splits": {}}
    pool = None
    try:
        for split in splits:
            # diffusion/flow sampling noise (deterministic ones start from noise too): seeded by the split, not its place
            torch.manual_seed(seed_offset * 1000 + SPLITS.index(split))
            env_tasks, queues = _plan(tasks, per_split[split], seed_list, seed_offset, num_envs)
            run = _SplitRun(policy.cfg, selector, split, env_tasks, queues, max_steps, video_dir, videos, progress)
            if pool is None:  # its worker count is chosen for the first split and kept for the others
                pool = EnvPool(run.specs, workers=workers)
            else:  # the same worker processes with this split's envs (a new pool per split cost ~5 s each)
                pool.respec(run.specs)
            results, latencies, wall, decisions = run.run(pool)
            out["splits"][split] = _summarise(results, latencies, tasks, wall, decisions)
            if progress:
                r = out["splits"][split]
                print(f"{split:13s} success {r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] over {len(results)} "
                      f"episodes (latency p50 {r['latency_ms']['p50']:.1f} ms, {r['env_steps_per_s']:.0f} env steps/s)", flush=True)  # fmt: skip
    finally:
        if pool is not None:
            pool.close()
    out["seeds"] = seeds
    out["deterministic"] = deterministic
    out["test_time"] = {"method": selector.name, **dataclasses.asdict(test_time or TestTimeConfig()), "stats": selector.stats}
    return out


def _check_request(splits, per_split: dict, episodes, seeds: str) -> None:
    if any(per_split.get(s, 0) < 1 for s in splits):
        raise ValueError(f"episodes must be >= 1 for every split, got {episodes}")
    for split in splits:
        check_split(split)
    if seeds not in ("eval", "validation"):
        raise ValueError(f"unknown seed set {seeds!r}; valid: eval, validation")


def _embed_instructions(cfg, tasks) -> None:
    """Embed every instruction of the tasks up front (a frozen sentence encoder): keeps it out of the latency."""
    bb = getattr(getattr(cfg, "backbone", None), "language", None)
    if bb is None or bb.encoder != "minilm" or not bb.freeze:
        return
    from rlvla.envs import split_task
    from rlvla.policies.encoders import embed_instructions

    texts = []
    for t in tasks:
        suite, name = split_task(t)
        texts += [s for pool in (suite.instructions(name).values() if suite.instructions else ()) for s in pool]
    embed_instructions(texts)


def _plan(tasks, n: int, seed_list, seed_offset: int, num_envs: int) -> tuple[list[str], dict[int, list[tuple[str, int]]]]:
    """Episode ``k`` of task ``t`` -> the ``k``-th layout seed of ``t`` (paired across splits), queued on one of the
    task's envs (one or more per task, at most ``num_envs`` in all unless there are more tasks than that)."""
    jobs = [(tasks[i % len(tasks)], i // len(tasks)) for i in range(n)]
    layout = seed_list(max(k for _, k in jobs) + 1, offset=seed_offset)
    used = [t for t in tasks if any(j[0] == t for j in jobs)]
    per_task = max(1, num_envs // len(used))
    env_tasks = [t for t in used for _ in range(per_task)]
    queues: dict[int, list[tuple[str, int]]] = {i: [] for i in range(len(env_tasks))}
    by_task: dict[str, list[int]] = {}
    for i, t in enumerate(env_tasks):
        by_task.setdefault(t, []).append(i)
    for t, k in jobs:
        envs_t = by_task[t]
        queues[envs_t[k % len(envs_t)]].append((t, layout[k]))
    return env_tasks, queues


# camera_every for a policy that reads no image: longer than any episode, so only the reset frame is rendered
NO_NEW_FRAME = 1 << 30


def reads_no_image(cfg) -> bool:
    """True for a policy whose image input is blanked (``backbone.ablate`` holds ``image``: the blind baseline):
    rendering its frames would change nothing it does and cost about half the evaluation's time."""
    return "image" in (getattr(getattr(cfg, "backbone", None), "ablate", None) or ())


class _SplitRun:
    """One split's episodes over an env pool: queued episodes start as envs free up; each decision is one batched
    selector call per lane."""

    def __init__(self, cfg, selector, split, env_tasks, queues, max_steps, video_dir, videos: int, progress: bool) -> None:
        self.cfg, self.selector, self.split, self.queues = cfg, selector, split, queues
        self.video_dir, self.videos, self.recorded = video_dir, videos, 0
        extra = dict(getattr(cfg, "env_kwargs", None) or {})
        if reads_no_image(cfg) and video_dir is None:  # its image is blanked: render the reset frame only (its shape)
            extra["camera_every"] = NO_NEW_FRAME
        self.specs = [dict(name=t, split=split, image_size=cfg.image_size, cameras=tuple(cfg.cameras), chunk=cfg.chunk,
                           max_steps=max_steps, **extra) for t in env_tasks]  # fmt: skip
        self.cur: dict[int, dict] = {}
        self.results: list[dict] = []
        self.bar = _bar(f"eval {split}", sum(len(q) for q in queues.values())) if progress else None

    def start(self, ids) -> dict:
        """Begin the next queued episode in each of ``ids`` that has one: one reset call for all (workers in
        parallel); -> their first observations."""
        jobs = {i: self.queues[i].pop(0) for i in ids if self.queues[i]}
        resets = self.pool.reset({i: seed for i, (_, seed) in jobs.items()}) if jobs else {}
        for i, (task, seed) in jobs.items():
            rec = self.video_dir is not None and self.recorded < self.videos
            self.recorded += rec
            frames = [resets[i][0]["image"]] if rec else None
            self.cur[i] = dict(task=task, seed=seed, ret=0.0, length=0, success=False, frames=frames)
            self.selector.begin(i)
        return {i: resets[i][0] for i in jobs}

    def act(self, ids, obs_list):
        t0 = time.perf_counter()
        with torch.no_grad():
            acts = self.selector.act(stack_obs(obs_list), ids, self.pool)
        self.latencies.append((time.perf_counter() - t0) * 1000)
        if self.cfg.chunk == 1:
            acts = acts[:, 0]
        return {i: acts[j] for j, i in enumerate(ids)}, None

    def record(self, ids, _payload, _acted, stepped) -> dict:
        """Book one decision's results; -> the next observations of the episodes that go on."""
        nxt = {}
        for i in ids:
            ob, r, term, trunc, info = stepped[i]
            c = self.cur[i]
            c["ret"] += float(r)
            c["length"] += int(info["substeps"])
            c["success"] = c["success"] or bool(info["success"])
            if c["frames"] is not None:
                c["frames"].append(ob["image"])
            if not (term or trunc):
                nxt[i] = ob
                continue
            if c["frames"] is not None:
                tag = "success" if c["success"] else "failure"
                _save_gif(c["frames"], Path(self.video_dir) / f"{self.split}_{c['task'].replace('/', '-')}_{c['seed']}_{tag}.gif")
            self.results.append(c)
            if self.bar is not None:
                self.bar[0].update(self.bar[1], advance=1)
        return nxt

    def run(self, pool) -> tuple[list[dict], list[float], float, int]:
        """Every queued episode on ``pool`` (holding this split's ``specs``) -> (episode results, per-decision
        latencies in ms, wall seconds, decisions)."""
        self.latencies, decisions0 = [], self.selector.stats["decisions"]
        threads = torch.get_num_threads()
        with torch_threads(1 if pool.workers else threads):
            self.pool = pool
            # a selector that drives the pool itself (tree search) gets one lane: no overlap
            lanes = Lanes(pool, len(self.specs), overlap=not self.selector.uses_pool)
            t_split = time.perf_counter()
            lanes.run(start=self.start, act=self.act, record=self.record, queued=lambda i: bool(self.queues[i]))
            wall = time.perf_counter() - t_split
        if self.bar is not None:
            self.bar[0].stop()
        return self.results, self.latencies, wall, self.selector.stats["decisions"] - decisions0


def _quantiles(lengths: list[int]) -> dict | None:
    """Median, 95th percentile and maximum of the successful episodes' lengths (env steps); None when none succeeded."""
    if not lengths:
        return None
    return {"p50": float(np.percentile(lengths, 50)), "p95": float(np.percentile(lengths, 95)), "max": int(max(lengths))}


def _summarise(results: list[dict], latencies: list[float], tasks, wall: float, decisions: int) -> dict:
    succ = sum(r["success"] for r in results)
    lo, hi = wilson_interval(succ, len(results))
    lat = np.asarray(latencies)
    per_task = {}
    for t in tasks:
        rs = [r for r in results if r["task"] == t]
        if rs:
            per_task[t] = {"success_rate": sum(r["success"] for r in rs) / len(rs), "episodes": len(rs)}
    return {
        "success_rate": succ / len(results),
        "ci95": [lo, hi],
        "episodes": len(results),
        "mean_return": float(np.mean([r["ret"] for r in results])),
        "mean_length": float(np.mean([r["length"] for r in results])),
        "success_length": _quantiles([r["length"] for r in results if r["success"]]),
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                       "mean_per_env": float(lat.sum() / max(1, decisions))},  # fmt: skip
        "env_steps_per_s": sum(r["length"] for r in results) / wall,
        "tasks": per_task,
        "per_episode": [[r["task"], r["seed"], bool(r["success"])] for r in sorted(results, key=lambda r: (r["task"], r["seed"]))],
    }
