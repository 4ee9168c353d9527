"""Gaussian action head over the whole chunk: the simple continuous baseline.

``u ~ N(mu(z), sigma^2)`` per element with a state-independent learned log-std, then ``a = tanh(u)`` (``squash``,
log-prob with the change-of-variables term) or ``a = clip(u, -1, 1)`` (``clip``: the log-prob is that of the
unclipped u, as in most PPO implementations). The pre-squash sample travels in ``extras["pre_squash"]`` so
re-scoring is exact. Entropy is that of u (for tanh, the entropy before squashing, as in SAC's target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlvla.policies.heads.base import ActionHead, StandardizedLinear, gaussian_entropy, gaussian_log_prob, per_sample_sum

SQUASH_MODES = ("tanh", "clip")
BC_LOSSES = ("mse", "nll")


@dataclass
class Config:
    name: str = "gaussian"
    squash: str = "tanh"
    init_std: float = 0.3
    min_std: float = 1e-3
    hidden: int = 256
    bc: str = "mse"
    """``mse`` on the mean action, or ``nll`` (also fits the std)."""

    def __post_init__(self) -> None:
        if self.squash not in SQUASH_MODES:
            raise ValueError(f"unknown squash {self.squash!r}; valid: {', '.join(SQUASH_MODES)}")
        if self.bc not in BC_LOSSES:
            raise ValueError(f"unknown bc loss {self.bc!r}; valid: {', '.join(BC_LOSSES)}")
        if self.init_std <= self.min_std or self.min_std <= 0:
            raise ValueError(f"gaussian head needs init_std > min_std > 0 (got {self})")


class Head(ActionHead):
    def __init__(self, cfg: Config, cond_dim: int, chunk: int, action_dim: int) -> None:
        super().__init__(cfg, cond_dim, chunk, action_dim)
        n = chunk * action_dim
        self.mean = nn.Sequential(StandardizedLinear(cond_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, n))
        self.log_std = nn.Parameter(torch.full((chunk, action_dim), math.log(cfg.init_std)))

    def condition_layer(self) -> nn.Module:
        return self.mean[0]

    def _dist(self, z):
        mu = self.mean(z).reshape(-1, self.chunk, self.action_dim)
        std = self.log_std.exp().clamp_min(self.cfg.min_std).expand_as(mu)
        return mu, std

    def _squash(self, u):
        return torch.tanh(u) if self.cfg.squash == "tanh" else u.clamp(-1, 1)

    def _logp(self, u, mu, std):
        lp = gaussian_log_prob(u, mu, std)
        if self.cfg.squash == "tanh":  # log |d tanh(u) / du| = log(1 - tanh(u)^2), in a stable form
            lp = lp - 2 * (math.log(2) - u - F.softplus(-2 * u))
        return lp

    def sample(self, z: torch.Tensor, deterministic: bool = False, with_log_prob: bool = True):
        mu, std = self._dist(z)
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        return self._squash(u), self._logp(u, mu, std), {"pre_squash": u}

    def log_prob(self, z: torch.Tensor, actions: torch.Tensor, extras: dict) -> torch.Tensor:
        mu, std = self._dist(z)
        if "pre_squash" in extras:
            u = extras["pre_squash"]
        elif self.cfg.squash == "tanh":
            u = torch.atanh(actions.clamp(-1 + 1e-6, 1 - 1e-6))
        else:
            u = actions
        return self._logp(u, mu, std)

    def entropy(self, z: torch.Tensor, extras: dict) -> torch.Tensor:
        _, std = self._dist(z)
        return gaussian_entropy(std)

    def deterministic_like(self, z: torch.Tensor, actions: torch.Tensor, extras: dict) -> torch.Tensor:
        return self._squash(self._dist(z)[0])

    def bc_elements(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.cfg.bc == "mse":
            mu, _ = self._dist(z)
            return (self._squash(mu) - actions) ** 2
        return -self.log_prob(z, actions, {})

    def bc_metrics(self, z: torch.Tensor, actions: torch.Tensor, mask) -> dict:
        return {} if self.cfg.bc == "mse" else {"std": float(self._dist(z)[1].mean())}

    def likelihood(self, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return per_sample_sum(self.log_prob(z, actions, {}), mask)  # exact, whatever the BC loss
