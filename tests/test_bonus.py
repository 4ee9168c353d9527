"""Shaping, exploration bonuses and learned rewards in online RL: known answers (a tabular MDP solved with and
without shaping, SimHash counts, annealing), RND's defining behaviour (novel features pay more), and the
relabeller on real rollouts of the toy environment (next observations, a success model paying once, the
false-success rate, the bonus's share, the NaN stop, state round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvla.rewards.bonus import RND, SimHashCount, annealed, shaped_rewards

pytestmark = pytest.mark.usefixtures("one_thread")


def _q_iteration(P, R, gamma, iters=3000):
    """Q* of a finite MDP: ``P`` (S, A, S) transition probabilities, ``R`` (S, A) expected rewards."""
    q = np.zeros(R.shape)
    for _ in range(iters):
        q = R + gamma * P @ q.max(1)
    return q


def test_potential_shaping_leaves_the_optimal_policy_of_a_tabular_mdp_unchanged():
    rng = np.random.default_rng(0)
    S, A, gamma = 7, 3, 0.9
    P = rng.random((S, A, S)) ** 4
    P /= P.sum(-1, keepdims=True)
    r = rng.normal(size=(S, A, S))  # reward of each transition
    phi = rng.normal(scale=5, size=S)  # any potential, large enough to matter
    shaped = shaped_rewards(r, phi[:, None, None], phi[None, None, :], gamma, np.zeros((S, A, S)))
    q, qs = _q_iteration(P, (P * r).sum(-1), gamma), _q_iteration(P, (P * shaped).sum(-1), gamma)
    assert np.array_equal(q.argmax(1), qs.argmax(1))
    assert np.allclose(qs, q - phi[:, None], atol=1e-8)  # Ng et al.: Q' = Q - phi
    # a non-potential bonus of the same size does change it (the test can fail)
    bogus = r + rng.normal(scale=5, size=S)[None, None, :]
    assert not np.array_equal(q.argmax(1), _q_iteration(P, (P * bogus).sum(-1), gamma).argmax(1))
    # at a terminal transition the next potential counts as 0
    assert shaped_rewards([1.0], [2.0], [3.0], 0.5, [True]).tolist() == [-1.0]


def test_simhash_counts_and_annealing_known_answers():
    c = SimHashCount(dim=4, bits=8, seed=0)
    c.feat.update(torch.randn(1000, 4))  # standardisation fixed by plenty of data
    a = torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    assert c.bonus(a).item() == pytest.approx(1.0)
    assert c.bonus(a.repeat(3, 1)).tolist() == pytest.approx([0.5] * 3)  # 4 visits
    assert c.bonus(-a).item() == pytest.approx(1.0)  # the opposite sign pattern: another bucket
    t, _ = c.state()
    d = SimHashCount(dim=4, bits=8, seed=0)
    d.load_state(t)
    assert d.counts == c.counts and torch.equal(d.feat.mean, c.feat.mean)
    assert [annealed(0.1, i, 10) for i in (0, 5, 10, 20)] == pytest.approx([0.1, 0.05, 0.0, 0.0])
    assert annealed(0.1, 99, 0) == 0.1


def test_rnd_pays_more_for_novel_features_and_resumes():
    torch.manual_seed(0)
    rnd = RND(dim=8, seed=0)
    familiar = torch.randn(512, 8) * 0.3 + 2.0
    novel = torch.randn(64, 8) * 0.3 - 2.0
    rnd.bonus(torch.cat([familiar, novel]))  # running statistics see both regions
    before = rnd.error(familiar).mean().item()
    for _ in range(30):
        rnd.update(familiar)
    assert rnd.error(familiar).mean().item() < 0.3 * before  # the predictor learned the familiar region
    assert rnd.bonus(novel).mean() > 3 * rnd.bonus(familiar).mean()
    t, meta = rnd.state()
    other = RND(dim=8, seed=1)
    other.load_state(t, meta)
    assert torch.allclose(other.error(novel), rnd.error(novel))


# ---------------------------------------------------------------------------------------------- on rollouts
def _rollout(steps: int = 3, n_groups: int = 6, **kw):
    from test_online import ToyPool, algo_cfg, toy_policy

    from rlvla.collectors import RolloutEngine

    policy = toy_policy("gaussian")
    cfg = algo_cfg("ppo", groups_per_task=n_groups, envs_per_task=n_groups, **kw)

    class Pool(ToyPool):
        def __init__(self, specs, workers=None):
            super().__init__(specs, workers, steps=steps)

    with RolloutEngine(policy, ["toy"], cfg, make_pool=Pool) as eng:
        ro = eng.collect(0, need_values=True)
    return policy, cfg, ro


def test_next_observations_are_the_following_decision_or_the_final_one():
    _, _, ro = _rollout()
    nxt = ro.next_observations()
    b, ep = ro.batch, ro.batch["episode_index"]
    img = "observation.images.corner"
    multi = 0
    for i in range(len(ro)):
        if i + 1 < len(ro) and ep[i + 1] == ep[i]:
            assert torch.equal(nxt[img][i], b[img][i + 1])
            multi += 1
        else:
            assert torch.equal(nxt[img][i], ro.final[img][int(ep[i])])
    assert multi > 0 and len(ro.final["task"]) == len(ro.episodes)


class _StubModel:
    """Scores an observation by its proprio's first coordinate (the toy's goal sign): deterministic, known."""

    def __init__(self, kind: str, value=None) -> None:
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(kind=kind, cameras=["corner"])
        self.value = value

    def score(self, images, instructions):
        n = len(instructions)
        return torch.full((n,), self.value) if self.value is not None else torch.linspace(0, 1, n)


def test_success_model_pays_once_per_episode_and_false_successes_are_counted(capsys):
    from rlvla.collectors.relabel import RewardRelabeller

    policy, cfg, ro = _rollout(success_bonus=0.0)
    rl = RewardRelabeller(policy, ["toy"], cfg)
    rl.model = _StubModel("success", 0.9)  # says success after every decision
    before = ro.batch["next.reward"].clone()
    m = rl(ro, 0)
    ep = ro.batch["episode_index"]
    paid = ro.batch["next.reward"] - before
    firsts = torch.ones(len(ro), dtype=torch.bool)
    firsts[1:] = ep[1:] != ep[:-1]
    assert torch.equal(paid, firsts.float() * cfg.reward_weight)  # once, at each episode's first decision
    fails = [not e["success"] for e in ro.episodes]
    assert 0 < sum(fails) < len(fails)  # every failed episode was called a success: the false-success rate is 1
    assert m["reward/model_success"] == 1.0 and m["reward/false_success"] == 1.0
    _, _, ro2 = _rollout(success_bonus=0.0)
    rl.model = _StubModel("success", 0.1)  # never says success: pays nothing, no false successes
    before = ro2.batch["next.reward"].clone()
    m = rl(ro2, 1)
    assert torch.equal(ro2.batch["next.reward"], before) and m["reward/false_success"] == 0.0
    # the rate rising by more than 0.1 warns once
    rl.first_false = 0.0
    rl._watch(0.5, 7)
    assert "false-success rate rose from 0.00 to 0.50 at iteration 7" in capsys.readouterr().err


def test_progress_model_is_a_potential_and_nan_stops_naming_the_iteration():
    from rlvla.collectors.relabel import RewardRelabeller
    from rlvla.errors import NonFiniteLossError

    policy, cfg, ro = _rollout(success_bonus=0.0, gamma=0.9)
    rl = RewardRelabeller(policy, ["toy"], cfg)
    rl.model = _StubModel("progress", 0.5)
    before = ro.batch["next.reward"].clone()
    rl(ro, 0)
    term = ro.batch["next.terminated"].float()
    expect = 0.9 * 0.5 * (1 - term) - 0.5
    assert torch.allclose(ro.batch["next.reward"] - before, expect, atol=1e-6)
    rl.model = _StubModel("success", float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite reward at iteration 4"):
        rl(ro, 4)


@pytest.mark.parametrize("kind", ["count", "rnd"])
def test_bonus_is_added_logged_as_a_share_and_resumes(kind):
    from rlvla.algos.online import PolicyGradient
    from rlvla.collectors.relabel import RewardRelabeller

    policy, cfg, ro = _rollout(bonus=kind, bonus_coef=0.1, bonus_anneal=4)
    rl = RewardRelabeller(policy, ["toy"], cfg)
    before = ro.batch["next.reward"].clone()
    m = rl(ro, 1)
    added = ro.batch["next.reward"] - before
    assert (added > 0).all() and m["reward/bonus_coef"] == pytest.approx(0.075)
    share = added.abs().sum() / (before.abs().sum() + added.abs().sum())
    assert m["reward/bonus_share"] == pytest.approx(float(share), rel=1e-5)
    PolicyGradient(policy, cfg).update(ro, 1)  # the update takes the relabelled rewards
    t, meta = rl.state()
    again = RewardRelabeller(policy, ["toy"], cfg)
    again.load_state(t, meta)
    feats = torch.randn(5, policy.backbone.dim)
    if kind == "count":
        assert again.bonus.counts == rl.bonus.counts
    else:
        assert torch.allclose(again.bonus.error(feats), rl.bonus.error(feats))


def test_reward_and_bonus_settings_are_checked():
    from rlvla.algos.online import CONFIGS

    with pytest.raises(ValueError, match="unknown exploration bonus 'rdn'"):
        CONFIGS["ppo"](bonus="rdn")
    with pytest.raises(ValueError, match="reward_threshold in \\(0, 1\\)"):
        CONFIGS["reinforce_pp"](reward_threshold=1.5)


def test_group_methods_score_episodes_by_the_learned_reward():
    from test_online import ToyPool, algo_cfg, toy_policy

    from rlvla.algos.online import CONFIGS
    from rlvla.collectors import RolloutEngine
    from rlvla.collectors.relabel import RewardRelabeller

    policy = toy_policy("gaussian")
    cfg = algo_cfg("grpo", dynamic_sampling=False, groups_per_task=4, envs_per_task=8)
    with RolloutEngine(policy, ["toy"], cfg, make_pool=ToyPool) as eng:
        ro = eng.collect(0)
    sim = ro.batch["score"].clone()
    rl = RewardRelabeller(policy, ["toy"], cfg)
    rl.model = _StubModel("success", 0.9)
    rewards = ro.batch["next.reward"].clone()
    m = rl(ro, 0)
    assert (sim < 1).any() and torch.equal(ro.batch["score"], torch.ones(len(ro)))  # every episode called a success
    assert torch.equal(ro.batch["next.reward"], rewards) and m["reward/false_success"] == 1.0
    rl.model = _StubModel("progress", 0.3)
    rl(ro, 1)
    assert torch.allclose(ro.batch["score"], torch.full((len(ro),), 0.3))
    with pytest.raises(ValueError, match="needs algo.dynamic_sampling=false, algo.progress_score=0, algo.speed_score=0 and algo.replay=0"):
        CONFIGS["grpo"](reward="some/model")
