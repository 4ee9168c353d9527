"""algos/core.py: every function against closed-form cases and slow reference loops."""

from __future__ import annotations

import math

import pytest
import torch

from rlvla.algos import core


def gae_reference(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Per-env, per-step Python loop: episodes are walked backwards; a truncated end bootstraps."""
    T, N = rewards.shape
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            term, trunc = bool(terminated[t, n]), bool(truncated[t, n])
            boot = 0.0 if term else float(next_values[t, n])
            delta = float(rewards[t, n]) + gamma * boot - float(values[t, n])
            running = delta + (0.0 if (term or trunc) else gamma * lam * running)
            adv[t][n] = running
    return torch.tensor(adv, dtype=torch.float64)


def _random_rollout(T=40, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(T, N, generator=g, dtype=torch.float64)
    v = torch.randn(T, N, generator=g, dtype=torch.float64)
    nv = torch.randn(T, N, generator=g, dtype=torch.float64)
    u = torch.rand(T, N, generator=g)
    term = u < 0.07
    trunc = (u > 0.93) & ~term
    return r, v, nv, term, trunc


def test_gae_matches_reference_loop():
    r, v, nv, term, trunc = _random_rollout()
    adv, ret = core.gae(r, v, nv, term, term | trunc, gamma=0.97, lam=0.9)
    ref = gae_reference(r, v, nv, term, trunc, 0.97, 0.9)
    assert torch.allclose(adv, ref, rtol=0, atol=1e-12) and torch.allclose(ret, ref + v, rtol=0, atol=1e-12)


def test_gae_constant_value_closed_form():
    """SB3's constant-value case: reward 1 per step, V = c everywhere, episode of length T that terminates.
    With lam = 1 the return at t is the discounted sum of the remaining rewards: (1 - g^(T-t)) / (1 - g)."""
    T, g, c = 10, 0.9, 3.0
    r = torch.ones(T, 1, dtype=torch.float64)
    v = torch.full((T, 1), c, dtype=torch.float64)
    term = torch.zeros(T, 1, dtype=torch.bool)
    term[-1] = True
    _, ret = core.gae(r, v, v.clone(), term, term, gamma=g, lam=1.0)
    expected = torch.tensor([(1 - g ** (T - t)) / (1 - g) for t in range(T)], dtype=torch.float64)
    assert torch.allclose(ret[:, 0], expected, rtol=0, atol=1e-12)


def test_truncation_bootstraps_and_termination_does_not():
    g, c = 0.9, 5.0
    r = torch.zeros(1, 2, dtype=torch.float64)
    v = torch.full((1, 2), c, dtype=torch.float64)
    term = torch.tensor([[True, False]])
    trunc = torch.tensor([[False, True]])
    adv, _ = core.gae(r, v, v.clone(), term, term | trunc, gamma=g, lam=0.95)
    assert adv[0, 0].item() == pytest.approx(-c)  # terminated: no future value
    assert adv[0, 1].item() == pytest.approx(g * c - c)  # truncated: bootstrap from V(final obs)


def test_splitting_at_an_episode_boundary_changes_nothing():
    r, v, nv, term, trunc = _random_rollout(T=30, N=2, seed=1)
    term[14] = True  # an episode ends at t = 14 in every env
    done = term | trunc
    full, _ = core.gae(r, v, nv, term, done, 0.99, 0.95)
    a, _ = core.gae(r[:15], v[:15], nv[:15], term[:15], done[:15], 0.99, 0.95)
    b, _ = core.gae(r[15:], v[15:], nv[15:], term[15:], done[15:], 0.99, 0.95)
    assert torch.equal(full, torch.cat([a, b]))


def test_group_advantages_known_values():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    a = core.group_advantages(r)
    s = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    assert torch.allclose(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-6))
    assert torch.equal(a[1], torch.zeros(4))  # all-success group: no signal
    assert torch.allclose(core.group_advantages(r, normalize_std=False)[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_rloo_matches_leave_one_out_loop():
    r = torch.randn(5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = core.rloo_advantages(r)
    for gi in range(5):
        for i in range(6):
            others = torch.cat([r[gi, :i], r[gi, i + 1 :]])
            assert a[gi, i].item() == pytest.approx((r[gi, i] - others.mean()).item(), abs=1e-12)
    assert torch.allclose(a, 6 / 5 * (r - r.mean(1, keepdim=True)))
    with pytest.raises(ValueError, match="at least 2"):
        core.rloo_advantages(torch.ones(3, 1))


def test_reinforce_pp_normalises_over_the_batch():
    R = torch.tensor([0.0, 1.0, 2.0, 3.0])
    a = core.reinforce_pp_advantages(R, eps=0.0)
    assert a.mean().abs() < 1e-7 and a.std().item() == pytest.approx(1.0)


def test_surrogate_gradient_at_ratio_one_is_the_policy_gradient():
    torch.manual_seed(0)
    w = torch.randn(3, 4, requires_grad=True)
    x, acts, adv = torch.randn(16, 3), torch.randint(0, 4, (16,)), torch.randn(16)
    logp = torch.log_softmax(x @ w, -1).gather(1, acts[:, None])[:, 0]
    loss, _ = core.clipped_surrogate(logp, logp.detach(), adv, 0.2, 0.28, dual_clip=3.0)
    (g_ppo,) = torch.autograd.grad(loss, w, retain_graph=True)
    (g_pg,) = torch.autograd.grad(-(logp * adv).mean(), w)
    assert torch.allclose(g_ppo, g_pg, atol=1e-7)


def test_clip_higher_and_dual_clip_known_values():
    old = torch.zeros(4)
    ratios = torch.tensor([1.5, 1.5, 0.5, 10.0])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, info = core.clipped_surrogate(torch.log(ratios), old, adv, clip_low=0.2, clip_high=0.28)
    # A>0, r=1.5: min(1.5, 1.28) = 1.28; A<0, r=1.5: min(-1.5, -1.28) = -1.5; A>0, r=0.5: min(0.5, 0.8) = 0.5;
    # A<0, r=10: min(-10, -1.28) = -10
    assert loss.item() == pytest.approx(-(1.28 - 1.5 + 0.5 - 10.0) / 4)
    assert info["clip_fraction"] == 1.0
    loss_dc, _ = core.clipped_surrogate(torch.log(ratios), old, adv, 0.2, 0.28, dual_clip=3.0)
    assert loss_dc.item() == pytest.approx(-(1.28 - 1.5 + 0.5 - 3.0) / 4)  # -10 is lifted to 3 * A = -3
    with pytest.raises(ValueError, match="dual_clip"):
        core.clipped_surrogate(old, old, adv, dual_clip=0.5)


def test_clipped_value_loss_known_values():
    v, old, R = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    # v=2 moved 2 from old=0: clipped to 0.2 -> (0.2 - 1)^2 = 0.64 vs (2 - 1)^2 = 1 -> 1; v=0: 1 vs 1 -> 1
    assert core.clipped_value_loss(v, old, R, clip=0.2).item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)
    v2 = torch.tensor([1.5, 0.0])
    # v=1.5: unclipped 0.25, clipped (0.2 - 1)^2 = 0.64 -> max 0.64
    assert core.clipped_value_loss(v2, old, R, clip=0.2).item() == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert core.clipped_value_loss(v2, old, R, clip=None).item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)


def test_kl_estimators_are_unbiased_and_k3_nonnegative():
    p = torch.distributions.Normal(0.0, 1.0)
    q = torch.distributions.Normal(0.5, 1.2)
    torch.manual_seed(0)
    x = p.sample(torch.Size([400_000]))
    lp, lq = p.log_prob(x), q.log_prob(x)
    true = torch.distributions.kl_divergence(p, q).item()
    assert core.kl_k1(lp, lq).mean().item() == pytest.approx(true, abs=0.01)
    k3 = core.kl_k3(lp, lq)
    assert (k3 >= 0).all() and k3.mean().item() == pytest.approx(true, abs=0.01)
    assert core.kl_k3(lp, lp).abs().max().item() == 0.0


def test_entropy_bonus_sign():
    assert core.entropy_bonus(torch.tensor([1.0, 3.0]), 0.1).item() == pytest.approx(-0.2)


def test_approx_kl_from_old_samples_matches_the_analytic_kl():
    """Samples of the old policy N(0, 1); the new policy N(0.3, 0.8). The estimate in the PPO loop must match
    KL(old || new) within 2% at 1e5 samples (the mirrored form overshoots it by a wide margin)."""
    old = torch.distributions.Normal(0.0, 1.0)
    new = torch.distributions.Normal(0.3, 0.8)
    torch.manual_seed(0)
    x = old.sample(torch.Size([100_000])).double()
    log_ratio = new.log_prob(x) - old.log_prob(x)
    true = torch.distributions.kl_divergence(old, new).item()
    est = core.approx_kl(log_ratio).mean().item()
    assert est == pytest.approx(true, rel=0.02)
    _, info = core.clipped_surrogate(new.log_prob(x), old.log_prob(x), torch.ones_like(x))
    assert info["approx_kl"] == pytest.approx(true, rel=0.02)
    # a dropped probability costs linearly, not exponentially: log ratio -3 -> e^-3 - 1 + 3
    assert core.approx_kl(torch.tensor(-3.0)).item() == pytest.approx(math.exp(-3) + 2, abs=1e-6)
    assert (core.approx_kl(torch.linspace(-20, 5, 101)) >= 0).all()


def test_explained_variance_known_values():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert core.explained_variance(y, y) == pytest.approx(1.0)
    assert core.explained_variance(torch.full_like(y, 2.5), y) == pytest.approx(0.0)
    assert core.explained_variance(y + 1.0, y) == pytest.approx(1.0)  # a constant offset explains all variance
    assert core.explained_variance(-y, y) == pytest.approx(1 - 4.0)  # var(y + y) / var(y) = 4
    assert math.isnan(core.explained_variance(y, torch.ones(4)))
