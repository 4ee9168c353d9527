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
import time

import numpy as np
import torch

from rlvla.data.schema import IMAGE_PREFIX, Batch
from rlvla.envs import reward_scale
from rlvla.rewards import episode_returns, step_rewards
from rlvla.runners.loop import Loop, LoopSettings, Recipe, step_seed


class ReplayBuffer:
    """Chunk transitions from online episodes, in the offline batch layout (:mod:`rlvla.data.offline`)."""

    def __init__(self, capacity: int, cameras) -> None:
        self.capacity, self.cameras = capacity, list(cameras)
        self.data: dict[str, torch.Tensor] = {}
        self.tasks: list[str] = []
        self.episodes = 0

    def __len__(self) -> int:
        return 0 if not self.data else int(self.data["chunk_reward"].shape[0])

    def add_rollout(self, batch: Batch, gamma: float, chunk: int, reward: str, scale: float) -> None:
        """Append a rollout's decisions (episodes contiguous) as chunk transitions."""
        n = int(batch["next.reward"].shape[0])
        if n == 0:
            return
        ep = batch["episode_index"].numpy()
        succ = batch["next.success"].numpy().astype(bool)
        done = batch["next.done"].numpy().astype(bool)
        r = step_rewards(reward, batch["next.reward"].numpy(), succ, ep, scale)  # dense: the chunk's env reward
        disc = gamma**chunk
        mc, cond = np.zeros(n), np.zeros(n)
        ep_succ = np.zeros(n, bool)
        nxt = np.arange(n)
        for e in np.unique(ep):
            idx = np.flatnonzero(ep == e)
            mc[idx], cond[idx] = episode_returns(r[idx], disc), episode_returns(r[idx], 1.0)
            ep_succ[idx] = succ[idx].any()
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


class MixedRecipe(Recipe):
    """Iteration ``i``: roll out the current policy, add the episodes to the buffer, then ``online_updates`` updates
    of the offline algorithm on batches mixed from the dataset and the buffer."""

    def __init__(self, policy, algo, data, run_dir) -> None:
        self.policy, self.algo, self.data, self.run_dir = policy, algo, data, run_dir
        self.a, self.loop = algo.cfg, algo.loop
        self.scale = reward_scale(policy.cfg.tasks)  # the dense-reward scale of the policy's suite
        self.buf = ReplayBuffer(self.a.online_buffer, policy.cfg.cameras)
        self.n_on = int(round(self.loop.batch_size * self.a.online_ratio))
        self.engine, self.t0 = None, time.perf_counter()

    def begin(self, start: int, logger) -> None:
        from rlvla.collectors import RolloutEngine, RolloutSettings

        a = self.a
        ocfg = RolloutSettings(group_size=1, groups_per_task=a.online_episodes_per_task,
                               envs_per_task=max(1, min(a.online_episodes_per_task, 2)), max_steps=a.online_max_steps,
                               gamma=a.gamma, success_bonus=1.0 if a.reward == "sparse" else 0.0,
                               env_reward=0.0 if a.reward == "sparse" else 1.0)  # dense: the chunk's env reward  # fmt: skip
        self.engine = RolloutEngine(self.policy, self.policy.cfg.tasks, ocfg, seed=self.loop.seed + 1)
        self.t0 = time.perf_counter()

    def step(self, it: int, stop) -> dict:
        a, seed = self.a, self.loop.seed
        torch.manual_seed(step_seed(seed, 1_000_000 + it))  # rollout sampling: a function of (seed, it)
        ro = self.engine.collect(it, should_stop=lambda: stop.requested)
        self.buf.add_rollout(ro.batch, a.gamma, self.policy.cfg.chunk, a.reward, self.scale)
        metrics = {}
        for u in range(a.online_updates):
            step = it * a.online_updates + u
            torch.manual_seed(step_seed(seed, step))
            off = self.data.batch(self.data.indices(step, self.loop.batch_size - self.n_on, seed))
            on = self.buf.sample(self.n_on, np.random.default_rng([seed, step]))
            metrics = self.algo.update(concat(off, on), step, lr=a.online_lr)
        succ = float(np.mean([e["success"] for e in ro.episodes])) if ro.episodes else math.nan
        return {**{f"train/{k}": v for k, v in metrics.items()}, "rollout/success": succ, "buffer/transitions": len(self.buf),
                "buffer/episodes": self.buf.episodes, "time_s": time.perf_counter() - self.t0}  # fmt: skip

    def state(self) -> tuple[dict, dict]:
        tensors, meta = self.algo.state()
        bt, bm = self.buf.state()
        return {**tensors, **bt}, {**meta, **bm, "phase": "online"}

    def load_state(self, tensors: dict, meta: dict) -> None:
        if meta.get("phase") != "online":
            raise ValueError(f"{self.run_dir} holds an offline run's checkpoints; give the online phase its own run_dir "
                             f"(init={self.run_dir} run_dir=<new>)")  # fmt: skip
        self.algo.load_state(tensors, meta)
        self.buf.load(tensors, meta)

    def describe(self, m: dict) -> str:
        return f"rollout success {m['rollout/success']:.2f}  buffer {m['buffer/transitions']}"

    def summary(self, steps: int, wall_s: float) -> dict:
        return {"samples_per_s": steps * self.a.online_updates * self.loop.batch_size / max(wall_s, 1e-9),
                "buffer": len(self.buf), "tasks": list(self.policy.cfg.tasks), "algo": f"{self.a.name}+online"}  # fmt: skip

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def train_o2o(cfg, policy, algo, data, fingerprint: dict, progress: bool = True, on_step=None) -> dict:
    """The online phase (called by ``rlvla train`` when ``algo.online_iterations > 0``)."""
    recipe = MixedRecipe(policy, algo, data, cfg.run_dir)
    settings = LoopSettings(total=algo.cfg.online_iterations, ckpt_every=1, time_limit_s=algo.loop.time_limit_s,
                            label=f"{algo.cfg.name}+online", unit="iteration",
                            nan_hint="Start a new run_dir with a lower algo.online_lr")  # fmt: skip
    return Loop(cfg, recipe, policy, settings, fingerprint=fingerprint, progress=progress, on_step=on_step).run()
