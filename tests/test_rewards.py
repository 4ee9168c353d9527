"""The rewards package: known answers for each pure function, the registry, and a reward added in one place.

The last test is the extension point as a newcomer meets it: a new step reward is one registered function, and
``rlvla train algo=<offline method> algo.reward=<its name>`` trains on it.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlvla.rewards import (
    available_rewards, chunk_rewards, decision_reward, dense, episode_returns, first_success, potential_shaping,
    register_reward, step_rewards,
)  # fmt: skip


def test_first_success_marks_one_step_per_successful_episode():
    success = np.array([0, 1, 1, 0, 0, 0, 1, 1], bool)
    episode = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert first_success(success, episode).tolist() == [0, 1, 0, 0, 0, 0, 1, 0]
    assert first_success(np.array([0, 0, 1, 1], bool)).tolist() == [0, 0, 1, 0]


def test_dense_is_the_suite_reward_over_its_scale():
    assert dense(np.array([0.0, 5.0, 10.0]), 10.0).tolist() == [0.0, 0.5, 1.0]
    assert dense(2.5, 10.0) == 0.25


def test_chunk_aggregation_discounted_within_the_chunk_or_summed():
    r = np.array([1.0, 0.0, 2.0, 4.0])
    assert chunk_rewards(r, 2, 0.5).tolist() == [1.0, 1.0, 4.0, 4.0]  # SMDP: r_i + 0.5 r_{i+1}
    assert chunk_rewards(r, 2, 1.0).tolist() == [1.0, 2.0, 6.0, 4.0]  # within=1: a plain sum (what the env returns online)
    assert episode_returns(r, 0.5).tolist() == [2.0, 2.0, 4.0, 4.0]  # G_t = r_t + 0.5 G_{t+1}


def test_potential_shaping_telescopes_over_an_episode():
    """sum_t gamma^t (gamma phi_{t+1} - phi_t) = gamma^T phi_T - phi_0, whatever the potentials in between."""
    rng = np.random.default_rng(0)
    phi, gamma = rng.random(11), 0.97
    total = sum(gamma**t * potential_shaping(phi[t + 1], phi[t], gamma) for t in range(10))
    assert total == pytest.approx(gamma**10 * phi[10] - phi[0], abs=1e-12)


def test_decision_reward_combines_its_terms():
    r = decision_reward(first_success=True, phi=0.5, phi_prev=0.2, env_reward=3.0, success_bonus=1.0, shaping=2.0,
                        env_weight=0.1, gamma=0.9)  # fmt: skip
    assert r == pytest.approx(1.0 + 2.0 * (0.9 * 0.5 - 0.2) + 0.3)


def test_the_registry_names_the_valid_rewards_and_checks_what_a_reward_returns():
    assert {"sparse", "dense"} <= set(available_rewards())
    with pytest.raises(ValueError, match="unknown reward 'spares'; valid: .*dense.*sparse"):
        step_rewards("spares", [0.0], [False], [0], 10.0)

    @register_reward("test_too_short")
    def too_short(steps, scale):
        return steps.env_reward[:-1]

    with pytest.raises(ValueError, match="must return one finite reward per step"):
        step_rewards("test_too_short", [1.0, 2.0], [False, True], [0, 0], 10.0)


def test_a_new_reward_is_one_registered_function_and_trains(tmp_path):
    """A toy reward (a step cost plus the sparse outcome) registered here, then used by `rlvla train`."""
    from test_offline import GAUSS, TINY, _write

    from rlvla.configs import compose
    from rlvla.runners.train import train

    @register_reward("toy_step_cost")
    def toy_step_cost(steps, scale):
        return first_success(steps.success, steps.episode) - 0.01

    data = _write(tmp_path / "data", episodes=8)
    cfg = compose([*TINY, *GAUSS, "algo=iql", "algo.reward=toy_step_cost", f"data.path={data}", f"run_dir={tmp_path / 'run'}",
                   "train.steps=3"])  # fmt: skip
    summary = train(cfg, progress=False)
    assert summary["status"] == "done" and np.isfinite(summary["final_loss"])
    from rlvla.data.lerobot import LeRobotDataset
    from rlvla.data.offline import OfflineChunks

    chunks = OfflineChunks(LeRobotDataset(data), 2, ("corner",), reward="toy_step_cost", image_size=16)
    assert chunks.reward.min() == pytest.approx(-0.01) and chunks.reward.max() == pytest.approx(0.99)
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        train(compose([*TINY, *GAUSS, "algo=iql", "algo.reward=nope", f"data.path={data}", f"run_dir={tmp_path / 'x'}"]), progress=False)


def test_first_success_matches_the_per_episode_definition_on_random_episodes():
    """The linear-time version against the obvious loop (the first successful step of each contiguous episode)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        episode = np.sort(rng.integers(0, 6, n))
        success = rng.random(n) < 0.3
        expected = np.zeros(n)
        for e in np.unique(episode):
            hit = np.flatnonzero((episode == e) & success)
            if len(hit):
                expected[hit[0]] = 1.0
        assert first_success(success, episode).tolist() == expected.tolist()
