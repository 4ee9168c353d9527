"""Reward arithmetic as pure functions: one definition, one scale, used by collection, offline data,
offline-to-online and online rollouts alike.

Conventions (a suite declares its dense reward's ``scale``; MetaWorld's lies in [0, 10], so ``scale=10``):

- **sparse**: 1 at the first successful step of an episode, 0 elsewhere (the task's outcome, once).
- **dense**: the suite's per-step reward divided by ``scale``, so in [0, 1] per step.
- **potential-based shaping** (Ng et al. 1999): ``F = gamma * phi(s') - phi(s)`` added to any reward leaves the
  optimal policy unchanged; over an episode it telescopes to ``gamma^T phi(s_T) - phi(s_0)`` (discounted).
- **chunk aggregation**: a decision executes ``K`` low-level steps. Offline data treats the decision as an
  SMDP step whose next decision is discounted by ``gamma^K``, so the rewards inside the chunk are discounted per
  step (:func:`chunk_rewards` with ``within=gamma``); online RL discounts per decision (``gamma`` between
  decisions), so a decision's env reward is the chunk's rewards summed, as the env returns it (``within=1``).
"""

from __future__ import annotations

import numpy as np


def episode_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns-to-go of one episode's rewards (T,) -> (T,)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out


def chunk_rewards(rewards: np.ndarray, chunk: int, within: float) -> np.ndarray:
    """``sum_{j<K, i+j<T} within^j r[i+j]`` for each step i of one episode (T,) -> (T,)."""
    t = len(rewards)
    out = np.zeros(t, dtype=np.float64)
    for j in range(chunk):
        out[: max(t - j, 0)] += within**j * rewards[j:]
    return out


def first_success(success: np.ndarray, episode: np.ndarray | None = None) -> np.ndarray:
    """Sparse reward: 1.0 at the first step of each episode where ``success`` holds (steps of one episode are
    contiguous; ``episode`` gives each step's episode id, None = one episode). Linear in the number of steps."""
    success = np.asarray(success, dtype=bool).reshape(-1)
    ep = np.zeros(len(success), dtype=np.int64) if episode is None else np.asarray(episode).reshape(-1)
    if len(success) == 0:
        return np.zeros(0, dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(ep[1:] != ep[:-1]) + 1]
    count = np.cumsum(success)  # successes so far, then made relative to each episode's start
    before = np.repeat(count[starts] - success[starts], np.diff(np.r_[starts, len(success)]))
    return (success & (count - before == 1)).astype(np.float64)


def dense(env_reward, scale: float):
    """The suite's reward on the common scale (per step in [0, 1] for a reward in [0, scale])."""
    return np.asarray(env_reward, dtype=np.float64) / scale if isinstance(env_reward, np.ndarray) else float(env_reward) / scale


def potential_shaping(phi: float, phi_prev: float, gamma: float) -> float:
    """``gamma * phi(s') - phi(s)``: the shaping term of one transition."""
    return gamma * phi - phi_prev


def decision_reward(*, first_success: bool, phi: float, phi_prev: float, env_reward: float, success_bonus: float,
                    shaping: float, env_weight: float, gamma: float) -> float:  # fmt: skip
    """An online decision's reward: a success bonus once, potential-based shaping on the dense progress ``phi``
    (the env's ``info["progress"]`` = dense reward / the suite's scale), and the env reward of the chunk (summed
    over its steps: online RL discounts per decision) weighted by ``env_weight``."""
    return success_bonus * float(first_success) + shaping * potential_shaping(phi, phi_prev, gamma) + env_weight * env_reward
