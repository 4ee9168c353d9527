"""Chunk transitions for offline RL, streamed from a LeRobot dataset in bounded memory.

What a sample is (frame ``i`` of an episode whose last frame is ``L``, chunk length ``K``, discount ``gamma``)::

    observation   images + state at i               action        a[i : i+K] (past L: repeat + action_is_pad)
    chunk_reward  sum_{j<K, i+j<=L} gamma^j r[i+j]   next obs      images + state at i+K (when i+K <= L)
    chunk_done    i+K > L (the episode ended inside the chunk: nothing to bootstrap)
    discount      gamma^K                           mc_return     sum_{j>=i} gamma^(j-i) r[j] (observed, no bootstrap)
    episode_success, cond_return (return-to-go with ``cond_gamma``, for return-conditioned policies)

Rewards: any registered step reward (:mod:`rlvla.rewards`): ``sparse`` is 1 at the first successful step (the
task's outcome), ``dense`` is the suite's shaped reward divided by its scale (``reward_scale``; MetaWorld's 10), so
in [0, 1] per step. Inside a chunk the rewards are discounted per step (an SMDP step; the next decision is
discounted by ``gamma^K``).

Memory: every non-image column of every frame is held in memory (a few dozen bytes per frame); images are read a
group of ``files_in_memory`` data files at a time (LeRobot rolls data files at a fixed size, and episodes never
straddle files). Batch ``step`` draws from group ``step // steps_per_group`` of an epoch-wise permutation of the
files, at positions from a permutation seeded by ``(seed, group)``: batches are a pure function of
``(seed, step)``, so a resumed run sees the batches an uninterrupted one would, and each frame of a group is seen
about once per visit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rlvla.data.lerobot import LeRobotDataset
from rlvla.data.schema import IMAGE_PREFIX, Batch
from rlvla.rewards import chunk_rewards, episode_returns, get_reward, step_rewards

SCALARS = ["observation.state", "action", "next.reward", "next.success", "episode_index", "frame_index", "task_index", "index"]


class OfflineChunks:
    def __init__(self, dataset: LeRobotDataset, chunk: int, cameras, gamma: float = 0.99, reward: str = "sparse",
                 cond_gamma: float = 1.0, files_in_memory: int = 2, image_size: int | None = None,
                 reward_scale: float = 10.0) -> None:  # fmt: skip
        get_reward(reward)  # an unknown name fails here, naming the registered ones
        dataset.check_trainable()
        if not 0 < gamma <= 1 or not 0 < cond_gamma <= 1:
            raise ValueError(f"gamma and cond_gamma must be in (0, 1], got {gamma}, {cond_gamma}")
        if files_in_memory < 1 or chunk < 1:
            raise ValueError(f"files_in_memory and chunk must be >= 1, got {files_in_memory}, {chunk}")
        self.ds, self.chunk, self.gamma = dataset, chunk, gamma
        self.cameras = list(cameras)
        self._check_dataset(dataset, image_size)
        c = self._read_columns(dataset)
        self.state = torch.from_numpy(c["observation.state"].astype(np.float32))
        self.action = torch.from_numpy(c["action"].astype(np.float32))
        self.episode = c["episode_index"].astype(np.int64)
        self.task_index = c["task_index"].astype(np.int64)
        self.tasks = list(dataset.tasks)
        succ = c["next.success"].astype(bool).reshape(-1)
        n = len(self.episode)
        ends = np.flatnonzero(np.r_[self.episode[1:] != self.episode[:-1], True])
        starts = np.r_[0, ends[:-1] + 1]
        self.last = np.zeros(n, dtype=np.int64)
        self.ep_success = np.zeros(n, dtype=bool)
        for s, e in zip(starts, ends):
            self.last[s : e + 1] = e
            self.ep_success[s : e + 1] = succ[s : e + 1].any()
        self._returns(step_rewards(reward, c["next.reward"], succ, self.episode, reward_scale), starts, ends, cond_gamma)
        raw = np.arange(n)[:, None] + np.arange(chunk)[None]
        self.chunk_index = torch.from_numpy(np.minimum(raw, self.last[:, None]))
        self.is_pad = torch.from_numpy(raw > self.last[:, None])
        self.next_index = np.minimum(np.arange(n) + chunk, self.last)
        self.chunk_done = np.arange(n) + chunk > self.last
        self.episode_starts, self.episode_ends = starts, ends
        self.episodes_total = len(starts)
        # which file each frame lives in
        self.file_of = np.zeros(n, dtype=np.int64)
        for fi, (lo, hi) in enumerate(self.file_rows):
            self.file_of[lo:hi] = fi
        self.files_in_memory = min(files_in_memory, len(self.files))
        self._group_key = None
        self._images: dict[str, torch.Tensor] = {}
        self._rows = np.zeros(0, dtype=np.int64)

    def _check_dataset(self, dataset: LeRobotDataset, image_size) -> None:
        for c in self.cameras:
            key = f"{IMAGE_PREFIX}{c}"
            if key not in dataset.features:
                have = [k[len(IMAGE_PREFIX):] for k in dataset.image_keys]
                raise ValueError(f"dataset {dataset.root} has no images for camera {c!r} (it has {have})")
            shape = dataset.features[key]["shape"]
            if image_size is not None and list(shape[:2]) != [image_size, image_size]:
                raise ValueError(f"dataset {dataset.root} has {shape[0]}x{shape[1]} images; the policy expects {image_size}x{image_size}")
        missing = [k for k in ("next.reward", "next.success") if k not in dataset.features]
        if missing:
            raise ValueError(f"dataset {dataset.root} lacks {missing}; offline RL needs rewards and success per step (re-collect with `rlvla collect`)")
        self.files = dataset.data_files()
        if not self.files:
            raise ValueError(f"dataset {dataset.root} has no episodes to train on")

    def _read_columns(self, dataset: LeRobotDataset) -> dict[str, np.ndarray]:
        """Every non-image column of every file, concatenated; NaN/inf is an error naming the column."""
        cols: dict[str, list] = {}
        self.file_rows: list[tuple[int, int]] = []  # [start, end) rows of each file in the in-memory columns
        n = 0
        for f in self.files:
            d = dataset.read_rows(f, SCALARS)
            self.file_rows.append((n, n + len(d["index"])))
            n += len(d["index"])
            for k, v in d.items():
                cols.setdefault(k, []).append(v)
        c = {k: np.concatenate(v) for k, v in cols.items()}
        for k in ("observation.state", "action", "next.reward"):
            if not np.isfinite(c[k]).all():
                bad = int((~np.isfinite(c[k])).any(axis=tuple(range(1, c[k].ndim))).sum())
                raise ValueError(f"dataset {dataset.root}: {k} has {bad} frame(s) with NaN or inf; re-collect those episodes")
        return c

    def _returns(self, r: np.ndarray, starts, ends, cond_gamma: float) -> None:
        """Per-step rewards -> Monte-Carlo returns, conditioning returns and chunk rewards, episode by episode."""
        n = len(r)
        self.reward = r
        self.mc_return, self.cond_return, self.chunk_reward = np.zeros(n), np.zeros(n), np.zeros(n)
        for s, e in zip(starts, ends):
            self.mc_return[s : e + 1] = episode_returns(r[s : e + 1], self.gamma)
            self.cond_return[s : e + 1] = episode_returns(r[s : e + 1], cond_gamma)
            self.chunk_reward[s : e + 1] = chunk_rewards(r[s : e + 1], self.chunk, self.gamma)

    # ------------------------------------------------------------------ facts
    def __len__(self) -> int:
        return len(self.episode)

    @property
    def env_tasks(self) -> list[str]:
        return sorted({e.get("env_task", "") for e in self.ds.episodes} - {""})

    def stats(self) -> dict:
        s = self.state.double()
        return {"observation.state": {"mean": s.mean(0).float().numpy(), "std": s.std(0).float().numpy()}}

    def summary(self) -> dict:
        return {"frames": len(self), "episodes": int(self.episodes_total), "files": len(self.files),
                "success_rate": float(self.ep_success[self.episode_starts].mean()),
                "mean_return": float(self.mc_return[self.episode_starts].mean())}  # fmt: skip

    def steps_per_group(self, batch_size: int) -> int:
        return max(1, math.ceil(len(self) * self.files_in_memory / len(self.files) / batch_size))

    # ------------------------------------------------------------------ streaming
    def _group_files(self, group: int) -> tuple[int, ...]:
        per_epoch = math.ceil(len(self.files) / self.files_in_memory)
        epoch, pos = divmod(group, per_epoch)
        perm = np.random.default_rng([self._seed, epoch]).permutation(len(self.files))
        return tuple(sorted(perm[pos * self.files_in_memory : (pos + 1) * self.files_in_memory].tolist()))

    def _load(self, files: tuple[int, ...]) -> None:
        if files == self._group_key:
            return
        self._images = {}
        rows, imgs = [], {c: [] for c in self.cameras}
        keys = [f"{IMAGE_PREFIX}{c}" for c in self.cameras]
        for fi in files:
            d = self.ds.read_rows(self.files[fi], keys)
            lo, hi = self.file_rows[fi]
            rows.append(np.arange(lo, hi))
            for c in self.cameras:
                imgs[c].append(d[f"{IMAGE_PREFIX}{c}"])
        self._rows = np.concatenate(rows)
        self._pos = np.full(len(self), -1, dtype=np.int64)
        self._pos[self._rows] = np.arange(len(self._rows))
        self._images = {c: torch.from_numpy(np.concatenate(v)) for c, v in imgs.items()}
        self._group_key = files

    def indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Frame indices of batch ``step`` (loads the group's images when it changes)."""
        self._seed = seed
        spg = self.steps_per_group(batch_size)
        group, k = divmod(step, spg)
        self._load(self._group_files(group))
        m = len(self._rows)
        perm = np.random.default_rng([seed, group, 7]).permutation(m)
        pos = (k * batch_size + np.arange(batch_size)) % m
        return self._rows[perm[pos]]

    def batch(self, idx: np.ndarray) -> Batch:
        """Samples at frame indices ``idx`` (all in the loaded group)."""
        idx = np.asarray(idx, dtype=np.int64)
        pos, npos = self._pos[idx], self._pos[self.next_index[idx]]
        if (pos < 0).any() or (npos < 0).any():
            raise RuntimeError("frames outside the loaded group were requested; call indices() first")
        t = torch.from_numpy
        b = Batch()
        for c in self.cameras:
            b[f"{IMAGE_PREFIX}{c}"] = self._images[c][t(pos)]
            b[f"next.{IMAGE_PREFIX}{c}"] = self._images[c][t(npos)]
        ti = t(idx)
        b["observation.state"] = self.state[ti]
        b["next.observation.state"] = self.state[t(self.next_index[idx])]
        b["action"] = self.action[self.chunk_index[ti]]
        b["action_is_pad"] = self.is_pad[ti]
        b["episode_index"] = t(self.episode[idx])
        b["chunk_reward"] = t(self.chunk_reward[idx]).float()
        b["chunk_done"] = t(self.chunk_done[idx])
        b["discount"] = torch.full((len(idx),), self.gamma**self.chunk)
        b["mc_return"] = t(self.mc_return[idx]).float()
        b["cond_return"] = t(self.cond_return[idx]).float()
        b["episode_success"] = t(self.ep_success[idx])
        b["task"] = [self.tasks[i] for i in self.task_index[idx]]
        return b.validate(["observation.state", "action"])

    def pairs(self, step: int, n_pairs: int, frames: int, seed: int) -> tuple[Batch, Batch, int] | None:
        """Preference pairs for DPO from the loaded group: for ``n_pairs`` tasks with both outcomes, ``frames``
        frames of one successful episode (chosen) and of one failed episode (rejected) of that task. Returns
        (chosen, rejected, frames) with samples ordered pair by pair, or None when no task has both outcomes."""
        rng = np.random.default_rng([seed, step, 11])
        rows = self._rows
        starts = rows[self.episode_starts_mask(rows)]
        by_task: dict[int, tuple[list[int], list[int]]] = {}
        for s in starts:
            ok, bad = by_task.setdefault(int(self.task_index[s]), ([], []))
            (ok if self.ep_success[s] else bad).append(int(s))
        usable = [k for k, (ok, bad) in by_task.items() if ok and bad]
        if not usable:
            return None
        chosen, rejected = [], []
        for task in rng.choice(usable, size=n_pairs, replace=True):
            ok, bad = by_task[int(task)]
            for group, out in ((ok, chosen), (bad, rejected)):
                s = int(rng.choice(group))
                out.extend(rng.integers(s, self.last[s] + 1, size=frames).tolist())
        return self.batch(np.asarray(chosen)), self.batch(np.asarray(rejected)), frames

    def episode_starts_mask(self, rows: np.ndarray) -> np.ndarray:
        return np.r_[True, self.episode[rows[1:]] != self.episode[rows[:-1]]]
