"""Diffusion action head: DDPM training, DDIM/DDPM sampling, and the denoising chain as a Gaussian-step MDP.

Training predicts the noise (Ho et al. 2020), or the velocity ``v`` (Salimans & Ho 2022), under a cosine schedule
(Nichol & Dhariwal 2021). Sampling runs
``steps`` DDIM steps (Song et al. 2021) with stochasticity ``eta`` (1 = DDPM-like posterior variance). For RL,
every denoising step is a Gaussian policy step ``x_{i+1} ~ N(mean_i(x_i), std_i^2)`` and the log-prob of an action
is the sum of these step log-densities along the sampled chain (DPPO: Ren et al. 2024, arXiv 2409.00588). As
in DPPO, the predicted clean action is clipped to [-1, 1] and every step's std is at least ``min_std`` so that
each step explores and its log-density stays finite (a deviation from plain DDIM, which can be deterministic).

Why ``v``: the cosine schedule's first sampling timestep has alpha_bar ~ 2e-7, where the noise prediction's
estimate of the clean action, ``(x_t - sqrt(1 - ab) eps) / sqrt(ab)``, multiplies the prediction's error by ~2000:
it is clipped to +-1 for every element, so the first step's action is a sign of ``x_t - eps``. The deterministic
chain is then a discontinuous function of the weights and a small RL update makes a few samples' actions jump
(measured in BENCHMARKS.md, "The diffusion head's first step"). With ``v`` the clean-action estimate is
``sqrt(ab) x_t - sqrt(1 - ab) v``, well conditioned at every timestep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlvla.policies.heads.base import STOCHASTIC_MODES, ChainHead, DenoiserMLP


PREDICTIONS = ("epsilon", "v")


@dataclass
class Config:
    name: str = "diffusion"
    train_steps: int = 100
    """Diffusion timesteps T used in training."""
    steps: int = 10
    """Denoising steps at sampling time (DDIM sub-sequence of the T timesteps)."""
    eta: float = 1.0
    """DDIM stochasticity (0: deterministic DDIM, 1: DDPM posterior variance)."""
    min_std: float = 0.1
    """Lower bound on every denoising step's std when sampling for RL and scoring (DPPO's exploration noise)."""
    hidden: int = 256
    layers: int = 2
    clip_denoised: bool = True
    stochastic: str = "all"
    """Which denoising steps sample when the head explores: ``all`` (DPPO), ``one`` (one step drawn per decision,
    the rest deterministic DDIM) or ``output`` (the DDIM action plus Gaussian noise of std ``output_std``, exact
    likelihood given the starting noise); see :class:`~rlvla.policies.heads.base.ChainHead`."""
    output_std: float = 0.1
    """``output`` mode: the exploration std around the DDIM action (action units)."""
    prediction: str = "v"
    """What the denoiser predicts: ``v`` (``sqrt(ab) eps - sqrt(1 - ab) x0``; Salimans & Ho 2022), smooth in the
    weights at the first sampling step, or ``epsilon`` (the noise; DDPM, Diffusion Policy, DPPO). Measured on the
    quickstart's demos (BENCHMARKS.md, "The diffusion head's first step"): SFT 0.40 -> 0.69 on validation seeds, and
    RL then gains +16 on evaluation seeds where the noise-predicting head gained +3. Checkpoints saved before the
    option existed predict the noise and load as ``epsilon``."""

    def __post_init__(self) -> None:
        if self.stochastic not in STOCHASTIC_MODES:
            raise ValueError(f"unknown diffusion stochastic mode {self.stochastic!r}; valid: {', '.join(STOCHASTIC_MODES)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown diffusion prediction {self.prediction!r}; valid: {', '.join(PREDICTIONS)}")
        if not 1 <= self.steps <= self.train_steps or self.min_std <= 0 or self.eta < 0 or self.output_std <= 0:
            raise ValueError(f"diffusion head needs 1 <= steps <= train_steps, min_std > 0, eta >= 0 (got {self})")


def cosine_alpha_bar(T: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative signal level alpha_bar_t for t = 0..T-1 (t = 0 least noisy), betas capped at 0.999."""
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0).float()


def clean_estimate(x_t, out, ab_t, prediction: str = "epsilon"):
    """The denoiser's estimate of the clean action from its output ``out`` (the noise, or ``v``) at ``x_t``."""
    if prediction == "v":
        return torch.sqrt(ab_t) * x_t - torch.sqrt(1 - ab_t) * out
    return (x_t - torch.sqrt(1 - ab_t) * out) / torch.sqrt(ab_t)


def ddim_step_moments(x_t, eps, ab_t, ab_prev, eta: float, clip: bool = True, prediction: str = "epsilon"):
    """One DDIM step's Gaussian: ``x_prev ~ N(mean, sigma^2)`` given the denoiser's output ``eps`` at ``x_t`` (the
    noise, or ``v`` with ``prediction="v"``).

    ``ab_t``, ``ab_prev``: alpha_bar at the current and next (less noisy) timestep, broadcastable to x_t.
    Returns (mean, sigma) with sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).
    """
    x0 = clean_estimate(x_t, eps, ab_t, prediction)
    if prediction == "v":
        eps = torch.sqrt(1 - ab_t) * x_t + torch.sqrt(ab_t) * eps
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x_t - torch.sqrt(ab_t) * x0) / torch.sqrt(1 - ab_t)
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    mean = torch.sqrt(ab_prev) * x0 + torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0)) * eps
    return mean, sigma


class Head(ChainHead):
    def __init__(self, cfg: Config, cond_dim: int, chunk: int, action_dim: int) -> None:
        super().__init__(cfg, cond_dim, chunk, action_dim)
        self.net = DenoiserMLP(chunk * action_dim, cond_dim, cfg.hidden, cfg.layers)
        ab = cosine_alpha_bar(cfg.train_steps)
        self.register_buffer("alpha_bar", ab, persistent=False)
        ts = torch.linspace(cfg.train_steps - 1, 0, cfg.steps).round().long()
        ab_t = ab[ts]
        ab_prev = torch.cat([ab[ts[1:]], torch.ones(1)])
        self.register_buffer("timesteps", ts, persistent=False)
        self.register_buffer("ab_t", ab_t, persistent=False)
        self.register_buffer("ab_prev", ab_prev, persistent=False)

    def _eps(self, x, t_index, z):
        shape = x.shape
        t = (t_index.float() + 1) / self.cfg.train_steps
        return self.net(x, t, z).reshape(shape)

    def _step_moments(self, x, i: torch.Tensor, z, eps=None, eta: float | None = None):
        """Step moments for chain states ``x`` (N, K, A) at step indices ``i`` (N,) (``eps``: prediction, if known)."""
        bshape = (-1, 1, 1)
        eps = self._eps(x, self.timesteps[i], z) if eps is None else eps
        eta = self.cfg.eta if eta is None else eta
        mean, sigma = ddim_step_moments(
            x, eps, self.ab_t[i].view(bshape), self.ab_prev[i].view(bshape), eta, self.cfg.clip_denoised, self.cfg.prediction
        )
        return mean, sigma.clamp_min(self.cfg.min_std).expand_as(mean)

    def sample(self, z: torch.Tensor, deterministic: bool = False, with_log_prob: bool = True, x0=None,
               carry: dict | None = None):
        if self.cfg.stochastic == "output" and not deterministic:
            return self._output_sample(z, x0, with_log_prob, carry)
        if carry is not None:
            raise ValueError("correlated exploration (algo.explore_correlation) needs explore_steps=output")
        b = z.shape[0]
        x = torch.randn(b, self.chunk, self.action_dim, device=z.device) if x0 is None else x0
        picks = None if deterministic else self._pick_steps(b, z.device)
        chain = [x]
        zc = self.net.condition(z)  # computed once per decision
        tcs = self.net.time_condition((self.timesteps.float() + 1) / self.cfg.train_steps)  # (S, H)
        for i in range(self.cfg.steps):
            idx = torch.full((b,), i, device=z.device, dtype=torch.long)
            eps = self.net.step(x, zc, tcs[i]).reshape(x.shape)
            ddim = self._step_moments(x, idx, z, eps=eps, eta=0.0)[0] if deterministic or picks is not None else None
            if deterministic:  # the DDIM ODE (eta = 0); the eta > 0 mean alone would collapse to E[a | obs]
                x = ddim
            else:
                mean, std = self._step_moments(x, idx, z, eps=eps)
                x = self._mix(ddim, mean + std * torch.randn_like(mean), i, picks)
            chain.append(x)
        chain_t = torch.stack(chain, 1)  # (B, S+1, K, A)
        extras = {"chain": chain_t}
        if picks is not None:
            extras["sde_step"] = picks
        return x.clamp(-1, 1), self.log_prob(z, None, extras) if with_log_prob else None, extras

    def _deterministic_path(self, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x, b = x0, x0.shape[0]
        zc = self.net.condition(z)
        tcs = self.net.time_condition((self.timesteps.float() + 1) / self.cfg.train_steps)
        for i in range(self.cfg.steps):
            idx = torch.full((b,), i, device=z.device, dtype=torch.long)
            x = self._step_moments(x, idx, z, eps=self.net.step(x, zc, tcs[i]).reshape(x.shape), eta=0.0)[0]
        return x

    def bc_elements(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b = actions.shape[0]
        t = torch.randint(0, self.cfg.train_steps, (b,), device=z.device)
        ab = self.alpha_bar[t].view(-1, 1, 1)
        noise = torch.randn_like(actions)
        x_t = torch.sqrt(ab) * actions + torch.sqrt(1 - ab) * noise
        target = noise if self.cfg.prediction == "epsilon" else torch.sqrt(ab) * noise - torch.sqrt(1 - ab) * actions
        return (self._eps(x_t, t, z) - target) ** 2
