"""The extension points as a newcomer meets them: a new online algorithm and a new env suite are each one small
module-like object registered in one call, then trained through ``rlvla train`` (the reward extension point is
in ``test_rewards.py``). Nothing else in the code base changes."""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch


def test_a_new_online_algorithm_is_one_module_and_trains(tmp_path):
    """A toy critic-free algorithm: each decision's advantage is its episode's success minus one half."""
    from test_online import _mw_policy

    from rlvla.algos.online import CONFIGS, OnlineConfig, register_online
    from rlvla.configs import compose
    from rlvla.runners.train import train

    @dataclass
    class Config(OnlineConfig):
        name: str = "toy_half"
        baseline: float = 0.5
        """What a decision's success is compared with."""

    def advantages(batch, cfg):
        return batch["score"].float() - cfg.baseline, None

    register_online(types.SimpleNamespace(Config=Config, advantages=advantages, USES_VALUE=False))
    assert CONFIGS["toy_half"] is Config
    init = _mw_policy().save_pretrained(tmp_path / "init")
    cfg = compose(["algo=toy_half", "algo.baseline=0.25", f"init={init}", f"run_dir={tmp_path / 'rl'}", "algo.iterations=2",
                   "algo.workers=0", "algo.group_size=2", "algo.groups_per_task=1", "algo.envs_per_task=2", "algo.max_steps=12"])  # fmt: skip
    summary = train(cfg, progress=False)
    assert summary["status"] == "done" and summary["step"] == 2 and summary["algo"] == "toy_half"
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    try:
        compose(["algo=toy_half", "algo.basline=1"])
    except ValueError as e:
        assert "did you mean algo.baseline" in str(e)
    else:
        raise AssertionError("a misspelt key of the new algorithm must be an error")


class _SignEnv:
    """A one-decision toy task in the suite contract: the goal's sign is in the proprio vector; the chunk succeeds
    when its mean first action coordinate points the same way."""

    def __init__(self, task, split="id", seed=None, image_size=16, cameras=("corner",), chunk=2, max_steps=2, **kw):
        from rlvla.envs.splits import check_split

        check_split(split)
        self.split, self.size, self.chunk, self.next_seed = split, image_size, chunk, seed

    def reset(self, seed=None, options=None):
        import numpy as np

        from rlvla.envs.splits import check_split_seed

        seed = self.next_seed if seed is None else seed
        check_split_seed(self.split, seed)
        self.next_seed = seed + 1
        self.goal = 1.0 if np.random.default_rng(seed).random() < 0.5 else -1.0
        return self._obs(), {"success": False}

    def _obs(self):
        import numpy as np

        return {"image": np.zeros((self.size, self.size, 3), np.uint8), "proprio": np.array([self.goal, 0, 0, 0], np.float32),
                "instruction": "point the way"}  # fmt: skip

    def step(self, action):
        import numpy as np

        success = bool(np.asarray(action)[:, 0].mean() * self.goal > 0.25)
        return self._obs(), float(success), success, not success, {"success": success, "substeps": self.chunk,
                                                                   "progress": float(success)}  # fmt: skip

    def close(self):
        pass


def test_a_new_env_suite_is_one_record_and_trains(tmp_path):
    """A toy suite registered in one call: its tasks resolve as 'toy/<task>', make_env builds them, and online RL
    (through the collector) and evaluation run on them."""
    from test_online import _mw_policy

    from rlvla.collectors import evaluate
    from rlvla.configs import compose
    from rlvla.envs import Suite, make_env, register_suite, resolve_tasks
    from rlvla.policies import VLAPolicy
    from rlvla.runners.train import train

    register_suite(Suite(name="toy", tasks=("sign",), make=_SignEnv, task_sets={"all": ("sign",)},
                         instructions=lambda t: {"train": ["point the way"], "heldout": ["show the way"]}))  # fmt: skip
    assert resolve_tasks("toy/all") == ("toy/sign",) and isinstance(make_env("toy/sign", seed=0), _SignEnv)
    policy = _mw_policy()
    policy.cfg.tasks, policy.cfg.image_size, policy.cfg.chunk = ["toy/sign"], 16, 2
    policy = VLAPolicy(policy.cfg)
    init = policy.save_pretrained(tmp_path / "init")
    cfg = compose(["algo=grpo", f"init={init}", f"run_dir={tmp_path / 'rl'}", "algo.iterations=3", "algo.workers=0", "algo.group_size=4",
                   "algo.groups_per_task=2", "algo.envs_per_task=4", "algo.max_steps=2", "algo.dynamic_sampling=false", "algo.lr=1e-3"])  # fmt: skip
    summary = train(cfg, progress=False)
    assert summary["status"] == "done" and summary["tasks"] == ["toy/sign"] and summary["env_steps"] > 0
    res = evaluate(VLAPolicy.from_pretrained(summary["policy"]), ["toy/sign"], ["id"], episodes=8, workers=0)
    episodes = res["splits"]["id"]["per_episode"]
    assert [t for t, _, _ in episodes] == ["toy/sign"] * 8 and all(s >= 1_000_000 for _, s, _ in episodes)  # evaluation seeds
