"""Labelled frames of a LeRobot dataset for reward models: what each image shows, as far as the data can tell.

Labels of frame ``t`` of an episode (frame ``t`` holds the observation *before* action ``t``; ``next.success[t]``
is the state after it):

- ``success[t]``: the observed state is a success, i.e. ``next.success[t - 1]`` (False at ``t = 0``). Episodes
  collected with ``rlvla collect --run-to-limit`` go on after a success, so they hold many success frames; an
  episode that ended at its first success holds none (its success state is never observed).
- ``progress[t]``: for an episode that succeeded, ``min(1, t / t_s)`` with ``t_s`` the frame where the success is
  first observed (or the episode's length when it never is): the VLAC / GVL time-index label. NaN for a failed
  episode: its time index says nothing of progress; a reward model learns from it only that it is not done.
- ``episode_success`` and ``episode_return`` (for preference pairs), ``episode`` (a dense episode id),
  ``task_id`` (the episode's env task).

Batches are functions of ``(seed, step)`` so resumed training is exact.
"""

from __future__ import annotations

import numpy as np
import torch

from rlvla.data.lerobot import LeRobotDataset
from rlvla.data.schema import IMAGE_PREFIX


class LabelledFrames:
    def __init__(self, dataset: LeRobotDataset, cameras, image_size: int | None = None, trainable: bool = True) -> None:
        """``trainable``: refuse held-out (evaluation-seed) datasets; scoring passes False."""
        if trainable:
            dataset.check_trainable()
        self.root = dataset.root
        self.cameras = list(cameras) or [k[len(IMAGE_PREFIX) :] for k in dataset.image_keys][:1]
        for c in self.cameras:
            feat = dataset.features.get(f"{IMAGE_PREFIX}{c}")
            if feat is None:
                have = [k[len(IMAGE_PREFIX) :] for k in dataset.image_keys]
                raise ValueError(f"dataset {dataset.root} has no images from camera {c!r} (it has {have})")
            if image_size is not None and list(feat["shape"][:2]) != [image_size, image_size]:
                raise ValueError(f"dataset {dataset.root} has {feat['shape'][0]}x{feat['shape'][1]} images from {c!r}; the "
                                 f"model expects {image_size}x{image_size}")  # fmt: skip
        self.image_size = int(dataset.features[f"{IMAGE_PREFIX}{self.cameras[0]}"]["shape"][0])
        if dataset.num_episodes == 0:
            raise ValueError(f"dataset {dataset.root} has no episodes")
        self.env_tasks = sorted({e.get("env_task", "") for e in dataset.episodes} - {""})
        if not self.env_tasks:
            raise ValueError(f"dataset {dataset.root} records no env_task per episode; collect it with `rlvla collect`")
        images = {c: [] for c in self.cameras}
        cols = {k: [] for k in ("success", "progress", "episode", "frame", "task_id", "instruction", "episode_success",
                                "episode_return")}  # fmt: skip
        for i in range(dataset.num_episodes):
            e = dataset.episode(i)
            n = len(e["action"])
            nxt = np.asarray(e["next.success"], bool).reshape(-1)
            state = np.r_[False, nxt[:-1]]
            won = bool(nxt.any())
            seen = np.flatnonzero(state)
            t_s = int(seen[0]) if len(seen) else n
            prog = np.minimum(1.0, np.arange(n) / max(t_s, 1)) if won else np.full(n, np.nan)
            for c in self.cameras:
                images[c].append(e[f"{IMAGE_PREFIX}{c}"])
            cols["success"].append(state)
            cols["progress"].append(prog)
            cols["episode"].append(np.full(n, i))
            cols["frame"].append(np.arange(n))
            cols["task_id"].append(np.full(n, self.env_tasks.index(dataset.episodes[i]["env_task"])))
            cols["instruction"].append(np.asarray(e["task"], dtype=object))
            cols["episode_success"].append(np.full(n, won))
            cols["episode_return"].append(np.full(n, float(np.sum(e["next.reward"]))))
        self.images = {c: torch.from_numpy(np.concatenate(v)) for c, v in images.items()}
        for k, v in cols.items():
            setattr(self, k, np.concatenate(v))
        self.instruction = self.instruction.tolist()
        for c, im in self.images.items():
            if im.dtype != torch.uint8:
                raise ValueError(f"dataset {dataset.root}: camera {c!r} images are {im.dtype}, expected uint8")
        self.starts = np.r_[0, np.flatnonzero(np.diff(self.episode)) + 1]
        self.ends = np.r_[self.starts[1:], len(self.episode)]

    def __len__(self) -> int:
        return len(self.episode)

    @property
    def num_episodes(self) -> int:
        return len(self.starts)

    def frames(self, idx) -> dict:
        """Images (uint8 ``(B, H, W, 3)`` per camera) and instructions of frames ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return {"images": {c: im[torch.from_numpy(idx)] for c, im in self.images.items()},
                "instruction": [self.instruction[i] for i in idx]}  # fmt: skip

    def balanced_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Half success frames, half others (uniform within each), for a success classifier."""
        rng = np.random.default_rng([seed, step, 1])
        pos, neg = np.flatnonzero(self.success), np.flatnonzero(~self.success)
        if len(pos) == 0 or len(neg) == 0:
            raise ValueError(f"dataset {self.root} has {len(pos)} success frames and {len(neg)} others; a success classifier "
                             "needs both (collect successes with --run-to-limit and failures with --failure-prob)")  # fmt: skip
        k = batch_size // 2
        return np.r_[rng.choice(pos, k), rng.choice(neg, batch_size - k)]

    def uniform_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        return np.random.default_rng([seed, step, 2]).integers(0, len(self), batch_size)

    def preference_pairs(self, step: int, pairs: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``pairs`` episode pairs of the same task where the first is preferred (a success over a failure; between
        equal outcomes, the higher return), each as ``frames`` frame indices -> (winners, losers) ``(pairs, frames)``."""
        rng = np.random.default_rng([seed, step, 3])
        ep_task = self.task_id[self.starts]
        key = np.stack([self.episode_success[self.starts].astype(float), self.episode_return[self.starts]], 1)
        win, lose = [], []
        tries = 0
        while len(win) < pairs:
            tries += 1
            if tries > 100 * pairs:
                raise ValueError(f"dataset {self.root} has no pair of episodes of one task with different outcomes or returns; "
                                 "a preference model needs them (mix expert and failing episodes)")  # fmt: skip
            a, b = rng.integers(0, self.num_episodes, 2)
            if ep_task[a] != ep_task[b] or tuple(key[a]) == tuple(key[b]):
                continue
            if tuple(key[b]) > tuple(key[a]):
                a, b = b, a
            win.append(self._sample_frames(rng, a, frames))
            lose.append(self._sample_frames(rng, b, frames))
        return np.stack(win), np.stack(lose)

    def _sample_frames(self, rng, ep: int, k: int) -> np.ndarray:
        s, e = self.starts[ep], self.ends[ep]
        return np.sort(rng.integers(s, e, k))
