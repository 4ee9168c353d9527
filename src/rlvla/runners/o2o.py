"""Offline-to-online: continue an offline-trained policy and critic online with mixed batches (RLPD style).

``rlvla train algo=iql init=<offline run> data.path=<its dataset> algo.online_iterations=N ...``

Each iteration rolls out ``online_episodes_per_task`` episodes per task with the current (stochastic) policy on
training seeds, appends their chunk transitions to a replay buffer, and takes ``online_updates`` steps of the same
offline algorithm on batches drawn half from the offline dataset and half from the buffer (``online_ratio``;
Ball et al. 2023's symmetric sampling), so the offline data keeps anchoring the critic and the policy while online
experience corrects them. Online rewards follow ``algo.reward``: sparse (1 on the decision that first succeeds)
or dense (the chunk's MetaWorld reward / 10). Checkpoints hold the buffer, so an interrupted run resumes where it
stopped.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rlvla.data.offline import episode_returns
from rlvla.data.schema import IMAGE_PREFIX, Batch


class ReplayBuffer:
    """Chunk transitions from online episodes, in the offline batch layout (:mod:`rlvla.data.offline`)."""

    def __init__(self, capacity: int, cameras) -> None:
        self.capacity, self.cameras = capacity, list(cameras)
        self.data: dict[str, torch.Tensor] = {}
        self.tasks: list[str] = []
        self.episodes = 0

    def __len__(self) -> int:
        return 0 if not self.data else int(self.data["chunk_reward"].shape[0])

    def add_rollout(self, batch: Batch, gamma: float, chunk: int, reward: str) -> None:
        """Append a rollout's decisions (episodes contiguous) as chunk transitions."""
        n = int(batch["next.reward"].shape[0])
        if n == 0:
            return
        ep = batch["episode_index"].numpy()
        succ = batch["next.success"].numpy().astype(bool)
        done = batch["next.done"].numpy().astype(bool)
        if reward == "sparse":
            r = np.zeros(n)
            for e in np.unique(ep):
                hit = np.flatnonzero((ep == e) & succ)
                if len(hit):
                    r[hit[0]] = 1.0
        else:
            r = batch["next.reward"].numpy().astype(np.float64) / 10.0
        disc = gamma**chunk
        mc, cond = np.zeros(n), np.zeros(n)
        ep_succ = np.zeros(n, bool)
        nxt = np.arange(n)
        for e in np.unique(ep):
            idx = np.flatnonzero(ep == e)
            mc[idx], cond[idx] = episode_returns(r[idx], disc), episode_returns(r[idx], 1.0)
            ep_succ[idx] = r[idx].sum() > 0 if reward == "sparse" else succ[idx].any()
            nxt[idx[:-1]] = idx[1:]
        new = {
            "observation.state": batch["observation.state"], "next.observation.state": batch["observation.state"][nxt],
            "action": batch["action"], "action_is_pad": torch.zeros(batch["action"].shape[:2], dtype=torch.bool),
            "chunk_reward": torch.from_numpy(r).float(), "chunk_done": torch.from_numpy(done | (nxt == np.arange(n))),
            "discount": torch.full((n,), disc), "mc_return": torch.from_numpy(mc).float(),
            "cond_return": torch.from_numpy(cond).float(), "episode_success": torch.from_numpy(ep_succ),
            "episode_index": torch.from_numpy(ep + self.episodes),
            "task_id": torch.tensor([self._task_id(t) for t in batch["task"]], dtype=torch.int64),
        }  # fmt: skip
        for c in self.cameras:
            img = batch[IMAGE_PREFIX + c]
            new[IMAGE_PREFIX + c] = img
            new[f"next.{IMAGE_PREFIX}{c}"] = img[nxt]
        self.episodes += int(len(np.unique(ep)))
        for k, v in new.items():
            self.data[k] = v if k not in self.data else torch.cat([self.data[k], v])[-self.capacity :]

    def _task_id(self, t: str) -> int:
        if t not in self.tasks:
            self.tasks.append(t)
        return self.tasks.index(t)

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        idx = torch.from_numpy(rng.integers(0, len(self), size=n))
        b = Batch({k: v[idx] for k, v in self.data.items() if k != "task_id"})
        b["task"] = [self.tasks[i] for i in self.data["task_id"][idx].tolist()]
        return b

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return ({f"buffer.{k}": v.contiguous() for k, v in self.data.items()},
                {"buffer_tasks": self.tasks, "buffer_episodes": self.episodes})  # fmt: skip

    def load(self, tensors: dict, meta: dict) -> None:
        self.data = {k[len("buffer."):]: v for k, v in tensors.items() if k.startswith("buffer.")}
        self.tasks, self.episodes = list(meta.get("buffer_tasks", [])), int(meta.get("buffer_episodes", 0))


def concat(a: Batch, b: Batch) -> Batch:
    missing = sorted(set(a) ^ set(b))
    if missing:
        raise ValueError(f"offline and online batches differ in keys {missing}")
    return Batch({k: (list(a[k]) + list(b[k]) if k == "task" else torch.cat([a[k], b[k]])) for k in a})


def train_o2o(cfg, policy, algo, data, ckpts, run_dir: Path, fingerprint: dict, progress: bool = True) -> dict:
    """The online phase (called by ``rlvla train`` when ``algo.online_iterations > 0``)."""
    from rlvla.algos.offline.sft import NonFiniteLossError
    from rlvla.algos.online.pg import OnlineConfig
    from rlvla.algos.online.rollout import RolloutEngine
    from rlvla.runners.memory import TreePeak
    from rlvla.runners.runlog import RunLogger
    from rlvla.runners.signals import StopOnSignal
    from rlvla.runners.train import TrainingError, step_seed

    a, loop = algo.cfg, algo.loop
    ocfg = OnlineConfig(name="ppo", group_size=1, groups_per_task=a.online_episodes_per_task,
                        envs_per_task=max(1, min(a.online_episodes_per_task, 2)), max_steps=a.online_max_steps,
                        dynamic_sampling=False, shaping=0.0, gamma=a.gamma,
                        success_bonus=1.0 if a.reward == "sparse" else 0.0,
                        env_reward=0.0 if a.reward == "sparse" else 1.0)  # dense: the chunk's MetaWorld reward  # fmt: skip
    buf = ReplayBuffer(a.online_buffer, policy.cfg.cameras)
    start_it = 0
    latest = ckpts.latest()
    if latest is not None:
        _, tensors, meta = ckpts.load(latest)
        if meta.get("phase") != "online":
            raise ValueError(f"{run_dir} holds an offline run's checkpoints; give the online phase its own run_dir "
                             f"(init={run_dir} run_dir=<new>)")  # fmt: skip
        if meta.get("data", fingerprint) != fingerprint:
            raise ValueError(f"cannot resume {run_dir}: its offline dataset changed ({meta['data']} vs {fingerprint}); use a new run_dir")
        policy.load_weights(latest / "policy")
        algo.load_state(tensors, meta)
        buf.load(tensors, meta)
        start_it = int(meta["iteration"])
        print(f"resuming {run_dir} online from iteration {start_it} ({latest.name})", file=sys.stderr)
    n_on = int(round(loop.batch_size * a.online_ratio))
    n_off = loop.batch_size - n_on
    logger = RunLogger(run_dir, start_it)
    peak = TreePeak().__enter__()
    stop = StopOnSignal().__enter__()
    status, it, metrics = "done", start_it, {}
    t0 = time.perf_counter()
    last_saved = latest

    def save(iteration: int) -> Path:
        tensors, meta = algo.state()
        bt, bm = buf.state()
        return ckpts.save(iteration, policy, {**tensors, **bt},
                          {**meta, **bm, "data": fingerprint, "phase": "online", "iteration": iteration})  # fmt: skip

    try:
        with RolloutEngine(policy, policy.cfg.tasks, ocfg, seed=loop.seed + 1) as engine:
            for it in range(start_it, a.online_iterations):
                if stop.requested:
                    raise KeyboardInterrupt
                torch.manual_seed(step_seed(loop.seed, 1_000_000 + it))  # rollout sampling: a function of (seed, it)
                ro = engine.collect(it, should_stop=lambda: stop.requested)
                buf.add_rollout(ro.batch, a.gamma, policy.cfg.chunk, a.reward)
                for u in range(a.online_updates):
                    step = it * a.online_updates + u
                    torch.manual_seed(step_seed(loop.seed, step))
                    off = data.batch(data.indices(step, n_off, loop.seed))
                    on = buf.sample(n_on, np.random.default_rng([loop.seed, step]))
                    try:
                        metrics = algo.update(concat(off, on), step, lr=a.online_lr)
                    except NonFiniteLossError as e:
                        kept = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
                        raise TrainingError(f"online training stopped: {e}; {kept}") from None
                succ = float(np.mean([e["success"] for e in ro.episodes])) if ro.episodes else math.nan
                logger.log(it + 1, {**{f"train/{k}": v for k, v in metrics.items()}, "rollout/success": succ,
                                    "buffer/transitions": len(buf), "buffer/episodes": buf.episodes,
                                    "time_s": time.perf_counter() - t0})  # fmt: skip
                if progress:
                    print(f"online {it + 1}/{a.online_iterations}: rollout success {succ:.2f}, buffer {len(buf)}", file=sys.stderr)
                last_saved = save(it + 1)
                if loop.time_limit_s and time.perf_counter() - t0 >= loop.time_limit_s and it + 1 < a.online_iterations:
                    status = "time_limit"
                    it += 1
                    break
            else:
                it = a.online_iterations
    except KeyboardInterrupt:
        if stop.force:
            raise
        status = "interrupted"
    finally:
        logger.close()
        stop.__exit__()
        peak.__exit__()
    if status == "done":
        policy.save_pretrained(run_dir / "policy")
    wall = time.perf_counter() - t0
    final = run_dir / "policy" if status == "done" else (last_saved / "policy" if last_saved else None)
    return {"status": status, "step": it, "steps": a.online_iterations, "wall_s": wall, "peak_rss_mb": peak.peak_mb,
            "samples_per_s": it * a.online_updates * loop.batch_size / max(wall, 1e-9), "buffer": len(buf),
            "policy": str(final), "tasks": list(policy.cfg.tasks), "algo": f"{a.name}+online"}  # fmt: skip
