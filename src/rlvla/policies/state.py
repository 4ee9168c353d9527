"""A state-observation actor-critic (MLP Gaussian policy + MLP value), the classic RL baseline network.

It serves the RL interface of :class:`~rlvla.policies.policy.VLAPolicy` (``act``, ``evaluate``, ``log_prob``,
``value``) so the same rollout engine and PPO run on it; benchmarks use it to compare rlvla's PPO with
stable-baselines3's on the same network (separate ``hidden`` MLPs for policy and value, tanh, a state-independent
log-std; actions are clipped to [-1, 1] and the log-prob is that of the unclipped sample, as in SB3).
Observations: env dicts whose ``proprio`` is the full state (``make_env(..., cameras=(), full_state=True)``) or
batches with ``observation.state``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rlvla.policies.policy import Act, reduce_level


@dataclass
class StatePolicyConfig:
    state_dim: int = 39
    action_dim: int = 4
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    log_std_init: float = 0.0
    chunk: int = 1
    cameras: list[str] = field(default_factory=list)
    image_size: int = 0
    tasks: list[str] = field(default_factory=list)
    env_kwargs: dict = field(default_factory=lambda: {"full_state": True})
    """What the rollout engine passes to ``make_env`` beside the policy's cameras."""


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, gain=1.0 if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class StatePolicy(nn.Module):
    def __init__(self, cfg: StatePolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pi = _mlp([cfg.state_dim, *cfg.hidden, cfg.action_dim])
        nn.init.orthogonal_(self.pi[-1].weight, gain=0.01)
        self.vf = _mlp([cfg.state_dim, *cfg.hidden, 1])
        self.log_std = nn.Parameter(torch.full((cfg.action_dim,), float(cfg.log_std_init)))

    def _state(self, obs) -> torch.Tensor:
        if "observation.state" in obs:
            return torch.as_tensor(obs["observation.state"]).float()
        s = torch.as_tensor(np.asarray(obs["proprio"], dtype=np.float32))
        return s[None] if s.ndim == 1 else s

    def _gauss(self, s: torch.Tensor):
        """-> (mean, log_std, std) of the action Gaussian (plain tensor math: torch.distributions' argument
        checks cost more than these two small MLPs)."""
        mu = self.pi(s)
        log_std = self.log_std.expand_as(mu)
        return mu, log_std, log_std.exp()

    @staticmethod
    def _log_prob(u, mu, log_std, std) -> torch.Tensor:
        return -0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False, level: str = "chunk", with_log_prob: bool = True) -> Act:
        s = self._state(obs)
        mu, log_std, std = self._gauss(s)
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        lp = reduce_level(self._log_prob(u, mu, log_std, std)[:, None], level) if with_log_prob else None
        return Act(u.clamp(-1, 1)[:, None], lp, self.vf(s)[:, 0], {"pre_squash": u[:, None]})

    def log_prob(self, obs, actions, extras: dict, level: str = "chunk") -> torch.Tensor:
        return self.evaluate(obs, actions, extras, level)[0]

    def evaluate(self, obs, actions, extras: dict, level: str = "chunk"):
        s = self._state(obs)
        mu, log_std, std = self._gauss(s)
        u = (extras["pre_squash"] if "pre_squash" in extras else actions)[:, 0]
        lp = reduce_level(self._log_prob(u, mu, log_std, std)[:, None], level)
        ent = reduce_level((0.5 + 0.5 * math.log(2 * math.pi) + log_std)[:, None], level)
        return lp, ent, self.vf(s)[:, 0]

    def value(self, obs) -> torch.Tensor:
        return self.vf(self._state(obs))[:, 0]

    def critic_parameters(self, frozen_trunk: bool = False) -> list[nn.Parameter]:
        return list(self.vf.parameters())

    @torch.no_grad()
    def deterministic_like(self, obs, actions, extras: dict, z=None) -> torch.Tensor:
        """The mean action (the deterministic policy) for observations ``obs``: (B, 1, A)."""
        return self.pi(self._state(obs)).clamp(-1, 1)[:, None]
