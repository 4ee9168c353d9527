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


def test_a_new_env_suite_is_one_record_and_trains(tmp_path):
    """A toy suite registered in one call (``tests/toy_suite.py``): its tasks resolve as 'toy/<task>', make_env
    builds them, and online RL (through the collector) and evaluation (in a spawned env worker) run on them."""
    from test_online import _mw_policy

    from toy_suite import SignEnv

    from rlvla.collectors import evaluate
    from rlvla.configs import compose
    from rlvla.envs import make_env, resolve_tasks
    from rlvla.policies import VLAPolicy
    from rlvla.runners.train import train

    assert resolve_tasks("toy/all") == ("toy/sign",) and isinstance(make_env("toy/sign", seed=0), SignEnv)
    policy = _mw_policy()
    policy.cfg.tasks, policy.cfg.image_size, policy.cfg.chunk = ["toy/sign"], 16, 2
    policy = VLAPolicy(policy.cfg)
    init = policy.save_pretrained(tmp_path / "init")
    cfg = compose(["algo=grpo", f"init={init}", f"run_dir={tmp_path / 'rl'}", "algo.iterations=3", "algo.workers=0", "algo.group_size=4",
                   "algo.groups_per_task=2", "algo.envs_per_task=4", "algo.max_steps=2", "algo.dynamic_sampling=false", "algo.lr=1e-3"])  # fmt: skip
    summary = train(cfg, progress=False)
    assert summary["status"] == "done" and summary["tasks"] == ["toy/sign"] and summary["env_steps"] > 0
    # one env worker process: it imports the suite's module before making the env (Suite.module)
    res = evaluate(VLAPolicy.from_pretrained(summary["policy"]), ["toy/sign"], ["id"], episodes=8, workers=1)
    episodes = res["splits"]["id"]["per_episode"]
    assert [t for t, _, _ in episodes] == ["toy/sign"] * 8 and all(s >= 1_000_000 for _, s, _ in episodes)  # evaluation seeds


def test_a_new_offline_method_is_one_module_and_trains(tmp_path):
    """A toy offline method (behaviour cloning of successful episodes only) registered in one call, then trained by
    `rlvla train`; it has only its own keys."""
    from test_offline import GAUSS, TINY, _write

    from rlvla.algos.offline import CONFIGS, register_offline
    from rlvla.algos.offline.base import OfflineConfig, value_target
    from rlvla.configs import compose
    from rlvla.runners.train import train

    @dataclass
    class Config(OfflineConfig):
        name: str = "toy_filtered_bc"
        min_return: float = 0.5
        """Imitate only frames of episodes whose return reaches this."""

    def loss(algo, batch, step):
        keep = (batch["mc_return"] >= algo.cfg.min_return).float()
        bc, m = algo.policy.bc_loss(batch, weights=keep / keep.mean().clamp_min(1e-6))
        return bc, {**m, "kept": float(keep.mean())}

    register_offline(types.SimpleNamespace(Config=Config, loss=loss, configure=lambda pcfg, cfg: value_target(pcfg, "mc")))
    assert CONFIGS["toy_filtered_bc"] is Config
    data = _write(tmp_path / "data", episodes=8)
    cfg = compose([*TINY, *GAUSS, "algo=toy_filtered_bc", "algo.min_return=0.1", f"data.path={data}",
                   f"run_dir={tmp_path / 'run'}", "train.steps=3"])  # fmt: skip
    summary = train(cfg, progress=False)
    assert summary["status"] == "done" and summary["algo"] == "toy_filtered_bc" and summary["step"] == 3
    from rlvla.runners.runlog import read_metrics

    kept = [r["kept"] for r in read_metrics(tmp_path / "run")]
    assert kept and all(0.0 < k < 1.0 for k in kept)  # the data mixes successes and failures: some frames filtered
