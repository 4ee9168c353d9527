"""An in-memory view of a LeRobot dataset for supervised training on action chunks.

For frame ``i`` the target is the chunk ``action[i : i + K]`` of the same episode; steps past the episode's end
repeat its last action and are flagged in ``action_is_pad`` (B, K) so losses can ignore them (as ACT and
LeRobot do). Batches are a pure function of ``(seed, step)``: a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch

from rlvla.data.lerobot import LeRobotDataset
from rlvla.data.schema import IMAGE_PREFIX, Batch


class ChunkDataset:
    def __init__(self, dataset: LeRobotDataset, chunk: int, cameras, episodes_per_task: int = 0, image_size: int | None = None) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self.cameras = list(cameras)
        missing = [c for c in self.cameras if f"{IMAGE_PREFIX}{c}" not in dataset.features]
        if missing:
            have = [k[len(IMAGE_PREFIX):] for k in dataset.image_keys]
            raise ValueError(f"dataset {dataset.root} has no images for cameras {missing} (it has {have})")
        for c in self.cameras:
            shape = dataset.features[f"{IMAGE_PREFIX}{c}"]["shape"]
            if image_size is not None and list(shape[:2]) != [image_size, image_size]:
                raise ValueError(
                    f"dataset {dataset.root} has {shape[0]}x{shape[1]} images from {c!r}; the policy expects "
                    f"{image_size}x{image_size} (set policy.image_size={shape[0]} or re-collect with --image-size {image_size})"
                )
        dataset.check_trainable()
        eps = self._select(dataset, episodes_per_task)
        cols: dict[str, list[np.ndarray]] = {}
        for i in eps:
            e = dataset.episode(i)
            for k in ["observation.state", "action", "episode_index", "frame_index", "task_index"] + [
                f"{IMAGE_PREFIX}{c}" for c in self.cameras
            ]:
                cols.setdefault(k, []).append(e[k])
        if not cols:
            raise ValueError(f"dataset {dataset.root} has no episodes to train on")
        self.data = {k: torch.from_numpy(np.concatenate(v)) for k, v in cols.items()}
        goals = [dataset.episodes[i].get("goal_pos") for i in eps]
        if all(g is not None and len(g) == 3 and np.all(np.isfinite(g)) for g in goals):
            # the simulator's goal of each frame's episode (training-only auxiliary target; never a policy input)
            per_frame = np.concatenate([np.tile(np.asarray(g, np.float32), (len(e), 1)) for g, e in zip(goals, cols["action"])])
            self.data["aux.goal"] = torch.from_numpy(per_frame)
        self.tasks = list(dataset.tasks)
        self._pools: dict[str, list[str]] = {}  # instruction augmentation (set_paraphrases)
        self._pool_prob, self._pool_seed = 0.0, 0
        self.episodes = eps
        self.env_tasks = sorted({dataset.episodes[i].get("env_task", "") for i in eps} - {""})
        n = len(self)
        # chunk indices: (N, K), clipped at the episode's last frame
        ep = self.data["episode_index"].numpy()
        last = np.zeros(n, dtype=np.int64)
        ends = np.flatnonzero(np.r_[ep[1:] != ep[:-1], True])
        starts = np.r_[0, ends[:-1] + 1]
        for s, e in zip(starts, ends):
            last[s : e + 1] = e
        raw = np.arange(n)[:, None] + np.arange(chunk)[None]
        self.chunk_index = torch.from_numpy(np.minimum(raw, last[:, None]))
        self.is_pad = torch.from_numpy(raw > last[:, None])
        act = self.data["action"]
        if not torch.isfinite(act).all() or not torch.isfinite(self.data["observation.state"]).all():
            raise ValueError(f"dataset {dataset.root} contains NaN or inf actions/states; re-collect it")

    @staticmethod
    def _select(dataset: LeRobotDataset, per_task: int) -> list[int]:
        """The first ``per_task`` episodes of each task (all when 0), in dataset order."""
        if per_task <= 0:
            return list(range(dataset.num_episodes))
        seen: dict[str, int] = {}
        out = []
        for i, e in enumerate(dataset.episodes):
            key = e.get("env_task") or str(e.get("tasks"))
            if seen.get(key, 0) < per_task:
                seen[key] = seen.get(key, 0) + 1
                out.append(i)
        return out

    def set_paraphrases(self, pools: dict[str, list[str]], prob: float, seed: int) -> None:
        """Instruction augmentation: each sample's instruction is replaced, with probability ``prob``, by one of
        ``pools[instruction]`` (phrasings that mean the same), drawn from a generator seeded by the batch's frames
        (so batches stay a pure function of (seed, step))."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"data.paraphrase must be in [0, 1], got {prob}")
        self._pools, self._pool_prob, self._pool_seed = pools, prob, seed

    def __len__(self) -> int:
        return int(self.data["action"].shape[0])

    def stats(self) -> dict:
        """Mean/std of the frames actually used (LeRobot stats layout), for normalisation."""
        s = self.data["observation.state"].double()
        return {"observation.state": {"mean": s.mean(0).float().numpy(), "std": s.std(0).float().numpy()}}

    def indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Frame indices of batch ``step``: epoch-wise permutations seeded by (seed, epoch)."""
        n = len(self)
        start = step * batch_size
        out = []
        while len(out) < batch_size:
            epoch, pos = divmod(start + len(out), n)
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            out.extend(perm[pos : pos + batch_size - len(out)].tolist())
        return np.asarray(out)

    def batch(self, idx) -> Batch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        b = Batch()
        for k, v in self.data.items():
            if k != "action":
                b[k] = v[idx]
        b["action"] = self.data["action"][self.chunk_index[idx]]  # (B, K, A)
        b["action_is_pad"] = self.is_pad[idx]
        b["task"] = [self.tasks[t] for t in self.data["task_index"][idx].tolist()]
        pools = self._pools
        if pools and self._pool_prob > 0:
            rng = np.random.default_rng([self._pool_seed, *idx[:8].tolist()])
            swap = rng.random(len(b["task"])) < self._pool_prob
            pick = rng.random(len(b["task"]))
            b["task"] = [pools[t][int(u * len(pools[t]))] if s and t in pools else t for t, s, u in zip(b["task"], swap, pick)]
        return b.validate(["observation.state", "action"])
