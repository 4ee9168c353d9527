"""The math of online RL as pure functions (no state, no env, no policy). Shapes are in each docstring.

Conventions: ``(T, N)`` tensors are rollouts of T decisions in N envs; ``terminated`` ends an episode for good
(success or failure: no bootstrapping), ``truncated`` cuts it by a time limit (bootstrap from the value of the
state where it was cut); ``done = terminated | truncated`` marks the episode boundary (SB3 issue #633, CleanRL
issue #198: merging the two biases returns on time-limited benchmarks such as MetaWorld and LIBERO).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) with time-limit bootstrapping.

    rewards, values, next_values, terminated, done: (T, N). ``values[t] = V(s_t)``; ``next_values[t] = V(s_{t+1})``,
    where for a step that ended the episode ``s_{t+1}`` is the *final* observation (not the reset one): it is used
    when the step was truncated and ignored when it terminated. Returns (advantages, returns), both (T, N), with
    returns = advantages + values (the value-function targets).

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}
    """
    t_len = rewards.shape[0]
    not_term = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - done.to(rewards.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(t_len)):
        last = deltas[t] + gamma * lam * not_done[t] * last
        adv[t] = last
    return adv, adv + values


def discounted_returns(rewards: torch.Tensor, done: torch.Tensor, gamma: float = 0.99) -> torch.Tensor:
    """Monte-Carlo discounted returns-to-go within each episode, no bootstrapping. rewards, done: (T, N), episodes
    contiguous along T (``done`` marks each episode's last step) -> (T, N). GAE with zero values and lambda 1."""
    zeros = torch.zeros_like(rewards)
    return gae(rewards, zeros, zeros, done, done, gamma, 1.0)[0]


def group_advantages(rewards: torch.Tensor, normalize_std: bool = True, eps: float = 1e-6, std_floor: float = 0.0) -> torch.Tensor:
    """GRPO (Shao et al. 2024): ``(r - mean_group) / (max(std_group, std_floor) + eps)``; without std
    normalisation (Dr. GRPO, Liu et al. 2025) just ``r - mean_group``. rewards: (G, n) for G groups of n rollouts
    from the same start state. The std is the unbiased one. Returns (G, n). A group whose rewards are all equal
    gets zeros. ``std_floor`` keeps a group whose scores differ only a little (dense progress among failures) from
    having its small differences blown up to unit advantages."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not normalize_std:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True).clamp(min=std_floor) + eps)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline (RLOO, Ahmadian et al. 2024): ``r_i - mean_{j != i} r_j``.

    rewards: (G, n), n >= 2 -> (G, n). Equals ``n / (n - 1) * (r_i - mean_group)``."""
    n = rewards.shape[1]
    if n < 2:
        raise ValueError(f"RLOO needs at least 2 rollouts per group, got {n}")
    total = rewards.sum(dim=1, keepdim=True)
    return rewards - (total - rewards) / (n - 1)


def reinforce_pp_advantages(returns: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): returns normalised over the whole batch, ``(R - mean) / (std + eps)``. Any shape."""
    return (returns - returns.mean()) / (returns.std() + eps)


def clipped_surrogate(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate loss (to minimise), with separate low/high clip ranges (clip-higher, DAPO: Yu et al.
    2025) and dual clipping (Ye et al. 2020) for negative advantages.

    All inputs share one shape (e.g. (B,) chunk-level or (B, K) action-level). ratio = exp(log_prob - old_log_prob);
        obj = min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
        obj = max(obj, dual_clip * A) where A < 0 (dual_clip > 1)
    Returns (-mean(obj), {"clip_fraction", "approx_kl"}), approx_kl being :func:`approx_kl`.
    """
    clip_high = clip_low if clip_high is None else clip_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    obj = torch.minimum(ratio * advantages, clipped * advantages)
    if dual_clip is not None:
        obj = torch.where(advantages < 0, torch.maximum(obj, dual_clip * advantages), obj)
    with torch.no_grad():
        clip_fraction = ((ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)).float().mean()
        kl = approx_kl(log_ratio).mean()
    return -obj.mean(), {"clip_fraction": float(clip_fraction), "approx_kl": float(kl)}


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(old || new) per sample, for samples drawn from the *old* policy (Schulman 2020; SB3's
    ``approx_kl_div``): ``(ratio - 1) - log ratio`` with ``log ratio = log new - log old``. Non-negative, unbiased
    and linear in a dropped probability (log ratio -3 scores 2.05). The mirrored form ``exp(-log ratio) - 1 +
    log ratio`` estimates KL(new || old) only for samples of the *new* policy; on old samples it explodes
    exponentially where a probability drops (16.1 at -3, 5.7e23 at -55). Any shape, elementwise."""
    return torch.expm1(log_ratio) - log_ratio


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None = 0.2) -> torch.Tensor:
    """PPO value loss ``0.5 * mean(max((v - R)^2, (v_clip - R)^2))`` with ``v_clip = old_v + clip(v - old_v, +-clip)``;
    ``clip=None``: plain ``0.5 * mean((v - R)^2)``. All inputs share one shape."""
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped.mean()
    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum(unclipped, (v_clip - returns) ** 2).mean()


def kl_k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k1 estimator of KL(pi || ref) from samples of pi: ``log pi - log ref`` (unbiased, high variance, can be < 0)."""
    return log_prob - ref_log_prob


def kl_k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || ref) from samples of pi (Schulman 2020): ``exp(d) - d - 1`` with
    ``d = log ref - log pi``; unbiased and always >= 0."""
    d = ref_log_prob - log_prob
    return torch.exp(d) - d - 1


def kl_exact(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || ref) of two categorical distributions given by logits (..., bins) -> (...)."""
    lp, lr = F.log_softmax(logits, -1), F.log_softmax(ref_logits, -1)
    return (lp.exp() * (lp - lr)).sum(-1)


def entropy_bonus(entropy: torch.Tensor, coef: float) -> torch.Tensor:
    """The loss term ``-coef * mean(entropy)`` (adding it to the loss rewards higher entropy)."""
    return -coef * entropy.mean()


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - Var(target - pred) / Var(target)`` (SB3's critic diagnostic): 1 is a perfect value function, 0 one no
    better than a constant, < 0 worse than a constant; NaN when the targets do not vary. Any matching shapes."""
    var = target.double().var(unbiased=False)
    if var <= 0:
        return float("nan")
    return float(1.0 - (target.double() - pred.double()).var(unbiased=False) / var)
