"""The math of offline RL as pure functions (no state, no dataset, no policy). Shapes are in each docstring.

Groundwork for the offline algorithms (IQL/AWR, CQL/Cal-QL, advantage-conditioned policies, DPO); the losses
are the papers' own formulas, each with a known-answer test in ``tests/test_offline_core.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlvla.algos import core


def mc_returns(rewards: torch.Tensor, done: torch.Tensor, gamma: float = 0.99) -> torch.Tensor:
    """Monte-Carlo returns-to-go (T, N) -> (T, N): what was observed, no bootstrapping (Cal-QL's reference
    values); see :func:`rlvla.algos.core.discounted_returns`."""
    return core.discounted_returns(rewards, done, gamma)


def expectile_loss(diff: torch.Tensor, tau: float = 0.7) -> torch.Tensor:
    """IQL's value loss (Kostrikov et al. 2022): ``mean(|tau - 1[diff < 0]| * diff^2)`` with ``diff = Q - V``.
    tau = 0.5 is half the mean squared error; tau -> 1 approaches the maximum of Q over the data's actions."""
    if not 0 < tau < 1:
        raise ValueError(f"expectile tau must be in (0, 1), got {tau}")
    weight = torch.where(diff < 0, 1 - tau, tau)
    return (weight * diff**2).mean()


def awr_weights(advantages: torch.Tensor, beta: float = 1.0, max_weight: float = 100.0) -> torch.Tensor:
    """Advantage-weighted regression / IQL policy extraction weights ``min(exp(A / beta), max_weight)``
    (Peng et al. 2019; Kostrikov et al. 2022). Any shape; no gradient flows through them."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return torch.exp(advantages.detach() / beta).clamp(max=max_weight)


def cql_penalty(q_data: torch.Tensor, q_sampled: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """CQL(H)'s conservative term (Kumar et al. 2020): ``mean(T * logsumexp(Q(s, a') / T over a') - Q(s, a_data))``.

    q_data: (B,) Q of the dataset's action; q_sampled: (B, N) Q of N other actions (policy samples, uniform
    actions; include the data action or not, as the caller's estimator needs). Minimising it pushes Q down on
    actions outside the data and up on the data's."""
    lse = temperature * torch.logsumexp(q_sampled / temperature, dim=1)
    return (lse - q_data).mean()


def calql_lower_bound(q_sampled: torch.Tensor, mc_return: torch.Tensor) -> torch.Tensor:
    """Cal-QL (Nakamoto et al. 2023): Q values of sampled actions used in the CQL push-down term are clipped from
    below by the Monte-Carlo return of the data policy, ``max(Q(s, a'), V_mc(s))``, so the learned Q is never
    pushed below a reference value (calibration). q_sampled: (B, N); mc_return: (B,) -> (B, N)."""
    return torch.maximum(q_sampled, mc_return[:, None])


def advantage_indicator(advantages: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """RECAP-style binarised advantage (pi*0.6): True where the action beat the value estimate by more than
    ``threshold``. Any shape -> bool, same shape."""
    return advantages > threshold


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_logp_chosen: torch.Tensor,
    ref_logp_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict]:
    """DPO (Rafailov et al. 2023) on preference pairs: ``-mean(log sigmoid(beta * (dc - dr)))`` with
    ``dc = logp_chosen - ref_logp_chosen`` and ``dr`` likewise. All (B,) (trajectory or chunk log-probs; a
    likelihood surrogate for flow heads). Returns (loss, {"reward_margin", "accuracy"})."""
    margin = beta * ((logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected))
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        info = {"reward_margin": float(margin.mean()), "accuracy": float((margin > 0).float().mean())}
    return loss, info
