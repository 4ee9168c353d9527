"""A toy env suite in the suite contract (rlvla.envs.suites), registered on import as ``toy``.

It lives in a module of its own so that env worker processes can import it too (``Suite.module``): the suite's
tasks then run in spawned workers exactly as MetaWorld's do.
"""

from __future__ import annotations

import numpy as np

from rlvla.envs import Suite, register_suite


class SignEnv:
    """A one-decision toy task in the suite contract: the goal's sign is in the proprio vector; the chunk succeeds
    when its mean first action coordinate points the same way."""

    def __init__(self, task, split="id", seed=None, image_size=16, cameras=("corner",), chunk=2, max_steps=2, **kw):
        from rlvla.envs.splits import check_split

        check_split(split)
        self.split, self.size, self.chunk, self.next_seed = split, image_size, chunk, seed

    def reset(self, seed=None, options=None):
        from rlvla.envs.splits import check_split_seed

        seed = self.next_seed if seed is None else seed
        check_split_seed(self.split, seed)
        self.next_seed = seed + 1
        self.goal = 1.0 if np.random.default_rng(seed).random() < 0.5 else -1.0
        return self._obs(), {"success": False}

    def _obs(self):
        return {"image": np.zeros((self.size, self.size, 3), np.uint8), "proprio": np.array([self.goal, 0, 0, 0], np.float32),
                "instruction": "point the way"}  # fmt: skip

    def step(self, action):
        success = bool(np.asarray(action)[:, 0].mean() * self.goal > 0.25)
        return self._obs(), float(success), success, not success, {"success": success, "substeps": self.chunk,
                                                                   "progress": float(success)}  # fmt: skip

    def close(self):
        pass


SUITE = register_suite(Suite(name="toy", tasks=("sign",), make=SignEnv, task_sets={"all": ("sign",)},
                             instructions=lambda t: {"train": ["point the way"], "heldout": ["show the way"]},
                             module=__name__))  # fmt: skip
