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

from rlvla.envs import resolve_tasks
from rlvla.envs.pool import EnvPool, stack_obs
from rlvla.envs.splits import EVAL_ONLY_SPLITS, check_split, eval_seeds, validation_seeds
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
    if any(per_split.get(s, 0) < 1 for s in splits):
        raise ValueError(f"episodes must be >= 1 for every split, got {episodes}")
    for split in splits:
        check_split(split)
    if seeds not in ("eval", "validation"):
        raise ValueError(f"unknown seed set {seeds!r}; valid: eval, validation")
    if seeds == "validation" and any(s in EVAL_ONLY_SPLITS for s in splits):
        raise ValueError("validation seeds are for the id split only (out-of-distribution splits use evaluation seeds)")
    seed_list = eval_seeds if seeds == "eval" else validation_seeds
    cfg = policy.cfg
    policy.eval()
    bb = getattr(getattr(cfg, "backbone", None), "language", None)
    if bb is not None and bb.encoder == "minilm" and bb.freeze:  # embed every instruction up front: keeps it out of the latency
        from rlvla.envs.instructions import INSTRUCTIONS
        from rlvla.policies.encoders import embed_instructions

        embed_instructions([s for t in tasks for pool in INSTRUCTIONS[t].values() for s in pool])
    out = {"splits": {}}
    for si, split in enumerate(splits):
        # the sampling noise of diffusion/flow heads (even deterministic ones start from noise): reproducible per split
        torch.manual_seed(seed_offset * 1000 + si)
        episodes_here = per_split[split]
        jobs = [(tasks[i % len(tasks)], i // len(tasks)) for i in range(episodes_here)]
        n_per_task = max(k for _, k in jobs) + 1
        layout = seed_list(n_per_task, offset=seed_offset)
        # envs: one or more per task, at most num_envs in all unless there are more tasks than that
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
        specs = [
            dict(name=t, split=split, image_size=cfg.image_size, cameras=tuple(cfg.cameras), chunk=cfg.chunk, max_steps=max_steps,
                 **(getattr(cfg, "env_kwargs", None) or {}))
            for t in env_tasks
        ]
        active = [i for i in queues if queues[i]]
        results, latencies = [], []
        decisions0 = selector.stats["decisions"]
        recorded = 0
        threads = torch.get_num_threads()
        bar = _bar(f"eval {split}", episodes_here) if progress else None
        with EnvPool(specs, workers=workers) as pool, torch_threads(1 if pool.workers else threads):
            cur: dict[int, dict] = {}

            def start(ids) -> dict:
                """Begin the next queued episode in each of ``ids``: one reset call for all (workers in parallel)."""
                nonlocal recorded
                jobs = {i: queues[i].pop(0) for i in ids}
                resets = pool.reset({i: seed for i, (_, seed) in jobs.items()}) if jobs else {}
                for i, (task, seed) in jobs.items():
                    rec = video_dir is not None and recorded < videos
                    recorded += rec
                    frames = [resets[i][0]["image"]] if rec else None
                    cur[i] = dict(task=task, seed=seed, ret=0.0, length=0, success=False, frames=frames)
                    selector.begin(i)
                return {i: resets[i][0] for i in jobs}

            def consume(ids, stepped) -> dict:
                """Record one decision's results; -> the next observations of the envs still running (finished envs
                with queued episodes start their next one)."""
                nxt, restart = {}, []
                for i in ids:
                    ob, r, term, trunc, info = stepped[i]
                    c = cur[i]
                    c["ret"] += float(r)
                    c["length"] += int(info["substeps"])
                    c["success"] = c["success"] or bool(info["success"])
                    if c["frames"] is not None:
                        c["frames"].append(ob["image"])
                    if term or trunc:
                        if c["frames"] is not None:
                            tag = "success" if c["success"] else "failure"
                            _save_gif(c["frames"], Path(video_dir) / f"{split}_{c['task']}_{c['seed']}_{tag}.gif")
                        results.append(c)
                        if bar is not None:
                            bar[0].update(bar[1], advance=1)
                        if queues[i]:
                            restart.append(i)
                    else:
                        nxt[i] = ob
                return {**nxt, **start(restart)}

            # Lanes, as in RL rollouts: the envs of one worker each; while one worker steps its lane, the next lane's
            # actions are computed (one lane in-process, or when the selector drives the pool itself).
            owner = getattr(pool, "owner", None)
            overlap = owner is not None and pool.workers >= 2 and not selector.uses_pool
            lanes = [[i for i in range(len(specs)) if owner[i] == w] for w in range(pool.workers)] if overlap else [list(range(len(specs)))]
            obs = start(active)
            pending: dict[int, tuple] = {}
            t_split = time.perf_counter()
            while obs or pending:
                for li, lane in enumerate(lanes):
                    if li in pending:
                        done_ids, token = pending.pop(li)
                        obs.update(consume(done_ids, pool.step_wait(token)))
                    ids = sorted(i for i in lane if i in obs)
                    if not ids:
                        continue
                    batch = stack_obs([obs.pop(i) for i in ids])
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        acts = selector.act(batch, ids, pool)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if cfg.chunk == 1:
                        acts = acts[:, 0]
                    pending[li] = (ids, pool.step_async({i: acts[j] for j, i in enumerate(ids)}))
            wall = time.perf_counter() - t_split
        if bar is not None:
            bar[0].stop()
        succ = sum(r["success"] for r in results)
        lo, hi = wilson_interval(succ, len(results))
        lat = np.asarray(latencies)
        per_task_res = {}
        for t in tasks:
            rs = [r for r in results if r["task"] == t]
            if rs:
                per_task_res[t] = {"success_rate": sum(r["success"] for r in rs) / len(rs), "episodes": len(rs)}
        steps = sum(r["length"] for r in results)
        out["splits"][split] = {
            "success_rate": succ / len(results),
            "ci95": [lo, hi],
            "episodes": len(results),
            "mean_return": float(np.mean([r["ret"] for r in results])),
            "mean_length": float(np.mean([r["length"] for r in results])),
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                           "mean_per_env": float(lat.sum() / max(1, selector.stats["decisions"] - decisions0))},
            "env_steps_per_s": steps / wall,
            "tasks": per_task_res,
            "per_episode": [[r["task"], r["seed"], bool(r["success"])] for r in sorted(results, key=lambda r: (r["task"], r["seed"]))],
        }
        if progress:
            s = out["splits"][split]
            print(f"{split:13s} success {s['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] over {len(results)} episodes "
                  f"(latency p50 {s['latency_ms']['p50']:.1f} ms, {s['env_steps_per_s']:.0f} env steps/s)", flush=True)  # fmt: skip
    out["seeds"] = seeds
    out["deterministic"] = deterministic
    out["test_time"] = {"method": selector.name, **dataclasses.asdict(test_time or TestTimeConfig()), "stats": selector.stats}
    return out
