"""Decision-level sequences of a LeRobot dataset for learned dynamics (world models).

A policy decides every ``chunk`` low-level steps, so a world model steps in decisions: sequence ``i`` starts at
frame ``t`` of an episode and holds the observations ``o_t, o_{t+K}, ..., o_{t+HK}`` (images, proprio), the
action chunks between them ``a[t + (h-1)K : t + hK]`` and, per decision, whether the task succeeded within it and
the dense progress at its end (the suite's reward / its scale, the env's ``info["progress"]``).

Batches are functions of ``(seed, step)``.
"""

from __future__ import annotations

import numpy as np
import torch

from rlvla.data.lerobot import LeRobotDataset
from rlvla.data.schema import IMAGE_PREFIX


class DecisionSequences:
    def __init__(self, dataset: LeRobotDataset, camera: str, chunk: int, horizon: int, reward_scale: float,
                 image_size: int | None = None, trainable: bool = True) -> None:  # fmt: skip
        """``trainable``: refuse held-out (evaluation-seed) datasets; scoring passes False."""
        if chunk < 1 or horizon < 1:
            raise ValueError(f"chunk and horizon must be >= 1, got {chunk}, {horizon}")
        if trainable:
            dataset.check_trainable()
        key = f"{IMAGE_PREFIX}{camera}"
        if key not in dataset.features:
            have = [k[len(IMAGE_PREFIX) :] for k in dataset.image_keys]
            raise ValueError(f"dataset {dataset.root} has no images from camera {camera!r} (it has {have})")
        shape = dataset.features[key]["shape"]
        if image_size is not None and list(shape[:2]) != [image_size, image_size]:
            raise ValueError(f"dataset {dataset.root} has {shape[0]}x{shape[1]} images; the world model expects {image_size}x{image_size}")
        self.root, self.camera, self.chunk, self.horizon = dataset.root, camera, chunk, horizon
        self.image_size = int(shape[0])
        self.env_tasks = sorted({e.get("env_task", "") for e in dataset.episodes} - {""})
        if not self.env_tasks:
            raise ValueError(f"dataset {dataset.root} records no env_task per episode; collect it with `rlvla collect`")
        cols: dict[str, list] = {k: [] for k in ("image", "proprio", "action", "progress", "success", "instruction", "episode")}
        starts = []
        offset = 0
        span = chunk * horizon
        for i in range(dataset.num_episodes):
            e = dataset.episode(i)
            n = len(e["action"])
            cols["image"].append(e[key])
            cols["proprio"].append(np.asarray(e["observation.state"], np.float32))
            cols["action"].append(np.asarray(e["action"], np.float32))
            cols["progress"].append(np.asarray(e["next.reward"], np.float32).reshape(-1) / reward_scale)
            cols["success"].append(np.asarray(e["next.success"], bool).reshape(-1))
            cols["instruction"].append(np.asarray(e["task"], dtype=object))
            cols["episode"].append(np.full(n, i))
            starts.extend(offset + t for t in range(0, n - span))  # o_{t + HK} must be a stored frame
            offset += n
        if not starts:
            raise ValueError(f"dataset {dataset.root}: no episode is longer than chunk x horizon = {span} frames")
        self.image = torch.from_numpy(np.concatenate(cols["image"]))
        self.proprio = torch.from_numpy(np.concatenate(cols["proprio"]))
        self.action = torch.from_numpy(np.concatenate(cols["action"]))
        self.progress = torch.from_numpy(np.concatenate(cols["progress"]))
        self.success = torch.from_numpy(np.concatenate(cols["success"]))
        self.instruction = np.concatenate(cols["instruction"]).tolist()
        self.episode = np.concatenate(cols["episode"])
        self.starts = np.asarray(starts, dtype=np.int64)
        for name in ("proprio", "action", "progress"):
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"dataset {dataset.root} contains NaN or inf in {name}; re-collect it")

    def __len__(self) -> int:
        return len(self.starts)

    def indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        return np.random.default_rng([seed, step, 4]).integers(0, len(self), batch_size)

    def batch(self, idx, horizon: int | None = None) -> dict:
        """Sequences ``idx``: ``image`` (B, H+1, S, S, 3) uint8, ``proprio`` (B, H+1, P), ``action`` (B, H, K, A),
        ``success`` (B, H) (within each decision), ``progress`` (B, H) (at its end), ``instruction`` (B,)."""
        h, k = horizon or self.horizon, self.chunk
        t0 = torch.from_numpy(self.starts[np.asarray(idx)])
        obs_t = t0[:, None] + k * torch.arange(h + 1)[None]  # (B, H+1)
        act_t = t0[:, None, None] + k * torch.arange(h)[None, :, None] + torch.arange(k)[None, None]  # (B, H, K)
        return {"image": self.image[obs_t], "proprio": self.proprio[obs_t], "action": self.action[act_t],
                "success": self.success[act_t].any(-1), "progress": self.progress[act_t[..., -1]],
                "instruction": [self.instruction[int(t)] for t in t0]}  # fmt: skip
