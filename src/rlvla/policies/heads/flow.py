"""Flow-matching action head (pi0 style) with the two RL log-prob formulations of piRL (Chen et al. 2025,
arXiv 2510.25889).

Convention (openpi): ``x_t = t * noise + (1 - t) * action``; the network predicts the velocity
``u = noise - action``; sampling integrates from t = 1 (noise) to t = 0 (action) in ``steps`` Euler steps of
size ``dt = 1 / steps``. Deterministic sampling is this ODE.

For RL every denoising step becomes a Gaussian step ``x_{t-dt} ~ N(mean, std^2)`` and an action's log-prob is the
sum of the step log-densities along its chain:

* ``sde`` (Flow-SDE): the ODE is turned into the SDE with the same marginals (as in Flow-GRPO, Liu et al. 2025).
  With the marginal score ``grad log p_t(x) = -(x + (1 - t) v) / t`` of this path,
  ``mean = x - dt * [v + sigma_t^2 / (2 t) * (x + (1 - t) v)]``, ``std = sigma_t * sqrt(dt)``,
  ``sigma_t = noise_level * sqrt(t / (1 - t))``; t = 1 is replaced by 1 - dt in sigma_t (it diverges there).
* ``noise`` (Flow-Noise): ``mean = x - dt * v`` (the ODE step) and a learned noise network gives
  ``std in [noise_min, noise_max]`` per step and dimension; it is trained by RL only (BC leaves it untouched)
  and can be dropped at deployment (deterministic sampling ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvla.policies.heads.base import STOCHASTIC_MODES, ChainHead, DenoiserMLP

LOGPROB_MODES = ("sde", "noise")


@dataclass
class Config:
    name: str = "flow"
    steps: int = 10
    """Euler denoising steps at sampling time."""
    logprob: str = "sde"
    """``sde`` (Flow-SDE) or ``noise`` (Flow-Noise, learned step noise)."""
    noise_level: float = 0.5
    """Flow-SDE: a in sigma_t = a * sqrt(t / (1 - t))."""
    noise_min: float = 0.08
    noise_max: float = 0.16
    """Flow-Noise: bounds of the learned per-step std."""
    hidden: int = 256
    layers: int = 2
    time_beta: bool = True
    """Training times t = 0.001 + 0.999 * Beta(1.5, 1), skewed toward noise (t = 1) as in pi0, else uniform."""
    stochastic: str = "all"
    """Which denoising steps sample when the head explores: ``all`` (log-prob summed over the chain), ``one``
    (one step drawn per decision, the rest ODE: piRL's default) or ``output`` (the ODE's action plus Gaussian noise
    of std ``output_std``, exact likelihood given the starting noise); see
    :class:`~rlvla.policies.heads.base.ChainHead`."""
    output_std: float = 0.1
    """``output`` mode: the exploration std around the ODE's action (action units)."""

    def __post_init__(self) -> None:
        if self.stochastic not in STOCHASTIC_MODES:
            raise ValueError(f"unknown flow stochastic mode {self.stochastic!r}; valid: {', '.join(STOCHASTIC_MODES)}")
        if self.logprob not in LOGPROB_MODES:
            raise ValueError(f"unknown flow logprob {self.logprob!r}; valid: {', '.join(LOGPROB_MODES)}")
        if self.steps < 1 or self.noise_level <= 0 or not 0 < self.noise_min < self.noise_max or self.output_std <= 0:
            raise ValueError(f"flow head needs steps >= 1, noise_level > 0, 0 < noise_min < noise_max (got {self})")


def flow_sde_step_moments(x, v, t, dt: float, noise_level: float):
    """Gaussian of one Flow-SDE step from time t to t - dt. ``t``: broadcastable to x, in (0, 1].

    Returns (mean, std); see the module docstring for the formula.
    """
    t_sigma = t.clamp(max=1 - dt) if dt < 1 else t.clamp(max=0.5)
    sigma = noise_level * torch.sqrt(t_sigma / (1 - t_sigma))
    mean = x - dt * (v + sigma**2 / (2 * t) * (x + (1 - t) * v))
    return mean, (sigma * dt**0.5).expand_as(mean)


class Head(ChainHead):
    def __init__(self, cfg: Config, cond_dim: int, chunk: int, action_dim: int) -> None:
        super().__init__(cfg, cond_dim, chunk, action_dim)
        n = chunk * action_dim
        self.net = DenoiserMLP(n, cond_dim, cfg.hidden, cfg.layers)
        self.noise_net = DenoiserMLP(n, cond_dim, cfg.hidden // 2, 1) if cfg.logprob == "noise" else None
        ts = torch.linspace(1.0, 0.0, cfg.steps + 1)
        self.register_buffer("times", ts, persistent=False)
        self.dt = 1.0 / cfg.steps

    def _velocity(self, x, t, z):
        return self.net(x, t, z).reshape(x.shape)

    def _step_moments(self, x, i, z, v=None):
        """Step Gaussian for states x (N, K, A) at step indices i (N,) (``v``: the velocity there, if known)."""
        t = self.times[i]
        v = self._velocity(x, t, z) if v is None else v
        tb = t.view(-1, 1, 1)
        if self.cfg.logprob == "sde":
            return flow_sde_step_moments(x, v, tb, self.dt, self.cfg.noise_level)
        mean = x - self.dt * v
        raw = self.noise_net(x, t, z).reshape(x.shape)
        std = self.cfg.noise_min + (self.cfg.noise_max - self.cfg.noise_min) * torch.sigmoid(raw)
        return mean, std

    def sample(self, z: torch.Tensor, deterministic: bool = False, with_log_prob: bool = True, guide=None, x0=None,
               carry: dict | None = None):
        """``guide = (z_uncond, w)``: classifier-free guidance for conditioned policies (deployment only), the
        velocity ``v_uncond + w * (v_cond - v_uncond)``; w = 1 is the plain conditional policy. ``x0``: the
        starting noise (B, K, A) (default: drawn)."""
        if self.cfg.stochastic == "output" and not deterministic and guide is None:
            return self._output_sample(z, x0, with_log_prob, carry)
        if carry is not None:
            raise ValueError("correlated exploration (algo.explore_correlation) needs explore_steps=output")
        b = z.shape[0]
        x = torch.randn(b, self.chunk, self.action_dim, device=z.device) if x0 is None else x0
        picks = None if deterministic else self._pick_steps(b, z.device)
        chain = [x]
        zc = self.net.condition(z)  # computed once per decision
        zu = self.net.condition(guide[0]) if guide is not None else None
        tcs = self.net.time_condition(self.times[:-1])  # (S, H)
        for i in range(self.cfg.steps):
            v = self.net.step(x, zc, tcs[i]).reshape(x.shape)
            if zu is not None:
                vu = self.net.step(x, zu, tcs[i]).reshape(x.shape)
                v = vu + guide[1] * (v - vu)
            if deterministic:
                x = x - self.dt * v  # the ODE
            else:
                mean, std = self._step_moments(x, torch.full((b,), i, device=z.device), z, v=v)
                x = self._mix(x - self.dt * v, mean + std * torch.randn_like(mean), i, picks)
            chain.append(x)
        extras = {"chain": torch.stack(chain, 1)}
        if picks is not None:
            extras["sde_step"] = picks
        return x.clamp(-1, 1), self.log_prob(z, None, extras) if with_log_prob else None, extras

    def _deterministic_path(self, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        zc = self.net.condition(z)
        tcs = self.net.time_condition(self.times[:-1])
        for i in range(self.cfg.steps):
            x = x - self.dt * self.net.step(x, zc, tcs[i]).reshape(x.shape)
        return x

    def bc_elements(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b = actions.shape[0]
        if self.cfg.time_beta:  # pi0 / openpi: emphasise noisy times (t near 1 is noise here)
            t = torch.distributions.Beta(1.5, 1.0).sample((b,)).to(z.device) * 0.999 + 0.001
        else:
            t = torch.rand(b, device=z.device) * 0.999 + 0.001
        noise = torch.randn_like(actions)
        tb = t.view(-1, 1, 1)
        x_t = tb * noise + (1 - tb) * actions
        return (self._velocity(x_t, t, z) - (noise - actions)) ** 2
