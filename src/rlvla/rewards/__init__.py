"""Rewards: pure functions (:mod:`.core`) and a registry of step rewards that offline data, offline-to-online
and collection pick by name (``algo.reward=<name>``).

A step reward maps one dataset's or rollout's per-step arrays to per-step rewards::

    @register_reward("my_reward")
    def my_reward(steps: StepArrays, scale: float) -> np.ndarray: ...

``steps`` holds ``env_reward`` (T,), ``success`` (T,) and ``episode`` (T,) (episode ids, steps of an episode
contiguous); ``scale`` is the suite's dense-reward scale. A learned reward model is one more entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from rlvla.rewards.core import chunk_rewards, decision_reward, dense, episode_returns, first_success, potential_shaping


@dataclass
class StepArrays:
    env_reward: np.ndarray
    success: np.ndarray
    episode: np.ndarray


_REWARDS: dict[str, Callable[[StepArrays, float], np.ndarray]] = {}


def register_reward(name: str):
    def deco(fn):
        if name in _REWARDS and _REWARDS[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered")
        _REWARDS[name] = fn
        return fn

    return deco


def available_rewards() -> list[str]:
    return sorted(_REWARDS)


def get_reward(name: str) -> Callable[[StepArrays, float], np.ndarray]:
    if name not in _REWARDS:
        raise ValueError(f"unknown reward {name!r}; valid: {', '.join(available_rewards())}")
    return _REWARDS[name]


def step_rewards(name: str, env_reward, success, episode, scale: float) -> np.ndarray:
    """Per-step rewards of the named reward for contiguous episodes."""
    steps = StepArrays(np.asarray(env_reward, np.float64).reshape(-1), np.asarray(success, bool).reshape(-1),
                       np.asarray(episode).reshape(-1))  # fmt: skip
    out = np.asarray(get_reward(name)(steps, scale), dtype=np.float64)
    if out.shape != steps.env_reward.shape or not np.all(np.isfinite(out)):
        raise ValueError(f"reward {name!r} returned {out.shape} values (finite: {bool(np.all(np.isfinite(out)))}) for "
                         f"{len(steps.env_reward)} steps; it must return one finite reward per step")  # fmt: skip
    return out


@register_reward("sparse")
def sparse(steps: StepArrays, scale: float) -> np.ndarray:
    """1 at the first successful step of each episode."""
    return first_success(steps.success, steps.episode)


@register_reward("dense")
def dense_reward(steps: StepArrays, scale: float) -> np.ndarray:
    """The suite's shaped reward / scale."""
    return dense(steps.env_reward, scale)


__all__ = ["StepArrays", "available_rewards", "chunk_rewards", "decision_reward", "dense", "episode_returns", "first_success",
           "get_reward", "potential_shaping", "register_reward", "step_rewards"]  # fmt: skip
