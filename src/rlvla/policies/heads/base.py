"""What every action head provides, and the small pieces heads share.

Heads work on normalised actions in [-1, 1] with shape ``(B, K, A)`` (K = chunk length, A = action dims) and a
conditioning vector ``z`` of shape ``(B, D)`` from the backbone. Log-probabilities and entropies are returned
per element, ``(B, K, A)``: summing over A gives action-level and over K and A chunk-level quantities (for the
token head these elements are the token-level log-probs; for the diffusion and flow heads each element sums
the per-step Gaussian log-densities of the denoising chain, which factorise over dimensions).

The loop a head serves (online RL)::

    actions, logp, extras = head.sample(z)           # rollout, no grad
    ...
    new_logp = head.log_prob(z, actions, extras)      # update, with grad; equals logp at the same weights
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std^2). Equals ``torch.distributions.Normal(mean, std).log_prob(x)``."""
    return -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * LOG_2PI


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * LOG_2PI + torch.log(std)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (B,) times in [0, 1] (scaled by 1000, as in DDPM) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class StandardizedLinear(nn.Linear):
    """``nn.Linear`` on a standardised input: ``W P (x - in_mean) + b``, with ``in_mean`` (D,) and ``in_proj``
    (D, D) buffers saved with the weights (identity, mean 0 and ``P = I``, until :meth:`standardize_` sets them).

    Why (measured on the quickstart's frozen trunk, BENCHMARKS.md): the readout ``z`` that every head reads
    varies over the layouts of a task by ~2% of its mean and by 4-11% of its spread along episodes, so an Adam step
    on ``W`` (every entry moves by about ``lr``) changes the action in ways that do not depend on the layout far
    faster than it teaches the action to follow the layout. :meth:`standardize_` reparametrises the layer on
    measured statistics without changing its function, so that a step moves every input direction alike:
    ``mode="std"`` divides each input by its std (SB3's ``VecNormalize``), ``mode="whiten"`` by the inverse square
    root of the covariance (the input side of K-FAC's natural-gradient preconditioner), which also lifts
    directions that vary only with the layout (where an object is) to the scale of the rest."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("in_mean", torch.zeros(in_features))
        self.register_buffer("in_proj", torch.eye(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_standardized():
            return F.linear(x, self.weight, self.bias)
        return F.linear(x - self.in_mean, self.weight @ self.in_proj, self.bias)

    def is_standardized(self) -> bool:
        return bool(getattr(self, "_standardized", False))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        eye = torch.eye(self.in_features, dtype=self.in_proj.dtype, device=self.in_proj.device)
        self._standardized = bool(self.in_mean.any() or not torch.equal(self.in_proj, eye))

    @torch.no_grad()
    def standardize_(self, x: torch.Tensor, mode: str = "std", floor: float | None = None) -> None:
        """Set the statistics from inputs ``x`` (N, in_features) and fold them into the weights so the layer
        computes the same function: ``W' = W P^-1``, ``b' = b + W mean``. ``floor``: ``std`` floors each std at
        ``floor`` (default 0.1) times their median, ``whiten`` the std along each eigendirection of the covariance
        at ``floor`` (default 0.01) times the largest (nearly constant inputs are not blown up). The layer must not
        be standardised already."""
        if self.is_standardized():
            raise ValueError("this layer is already standardised; its statistics are part of the checkpoint")
        if x.ndim != 2 or x.shape[1] != self.in_features or x.shape[0] < 2 or not torch.isfinite(x).all():
            raise ValueError(f"standardize_ needs >= 2 finite inputs of shape (N, {self.in_features}), got {tuple(x.shape)}")
        x = x.to(torch.float64)
        mean = x.mean(0)
        if mode == "std":
            floor = 0.1 if floor is None else floor
            std = x.std(0)
            std = std.clamp_min(floor * std.median().clamp_min(1e-8))
            proj, inv = torch.diag(1 / std), torch.diag(std)
        elif mode == "whiten":
            floor = 0.01 if floor is None else floor
            evals, evecs = torch.linalg.eigh(torch.cov(x.T))
            evals = evals.clamp_min(floor**2 * evals.max().clamp_min(1e-16))
            proj, inv = evecs @ torch.diag(evals**-0.5) @ evecs.T, evecs @ torch.diag(evals**0.5) @ evecs.T
        else:
            raise ValueError(f"standardize_ mode must be 'std' or 'whiten', got {mode!r}")
        w = self.weight.to(torch.float64)
        if self.bias is not None:
            self.bias.add_((w @ mean).to(self.bias.dtype))
        self.weight.copy_((w @ inv).to(self.weight.dtype))
        self.in_mean.copy_(mean.to(self.in_mean.dtype))
        self.in_proj.copy_(proj.to(self.in_proj.dtype))
        self._standardized = True


class DenoiserMLP(nn.Module):
    """f(x_t, t, z) -> (B, K*A): the noise / velocity network of the diffusion and flow heads.

    Residual MLP blocks on ``x_t`` with a conditioning vector ``c = silu(W_z z + W_t emb(t))`` added to the input
    (DPPO's MLP denoiser and pi0's action expert at toy scale). ``condition(z)`` and ``time_condition(t)`` can be
    computed once per sample and reused across denoising steps (``step``): on CPU each op's overhead dominates.
    """

    def __init__(self, in_dim: int, cond_dim: int, hidden: int, layers: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.time_dim = 64
        self.inp = nn.Linear(in_dim, hidden)
        self.z_proj = StandardizedLinear(cond_dim, hidden)
        self.t_proj = nn.Linear(self.time_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(layers)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_dim or in_dim))

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        return self.z_proj(z)

    def time_condition(self, t: torch.Tensor) -> torch.Tensor:
        return self.t_proj(timestep_embedding(t, self.time_dim))

    def step(self, x: torch.Tensor, zc: torch.Tensor, tc: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1)) + F.silu(zc + tc)
        for blk in self.blocks:
            h = h + blk(h)
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.step(x, self.condition(z), self.time_condition(t))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` (B, K, ...) over entries where ``mask`` (B, K) is True (padding past an episode's end).

    ``weights`` (B,) scale each sample's terms (advantage-weighted regression): the result is
    ``sum(w * x * m) / sum(m)``, so all-ones weights give the plain masked mean."""
    m = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    m = m.reshape(*m.shape, *([1] * (x.ndim - m.ndim))).expand_as(x)
    num = x * m
    if weights is not None:
        num = num * weights.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return num.sum() / m.sum().clamp_min(1.0)


def per_sample_sum(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Sum of ``x`` (B, K, ...) over each sample's unpadded entries -> (B,)."""
    if mask is None:
        return x.flatten(1).sum(1)
    m = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.ndim - mask.ndim)))
    return (x * m).flatten(1).sum(1)


class ActionHead(nn.Module):
    """Base class: subclasses implement the five methods below."""

    def __init__(self, cfg, cond_dim: int, chunk: int, action_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk = chunk
        self.action_dim = action_dim

    def sample(self, z: torch.Tensor, deterministic: bool = False, with_log_prob: bool = True):
        """-> actions (B, K, A) in [-1, 1], log_prob (B, K, A) (None without ``with_log_prob``: evaluation
        skips the scoring pass), extras (dict of tensors with leading B)."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor, actions: torch.Tensor, extras: dict) -> torch.Tensor:
        """Re-score a sample: (B, K, A). Equals ``sample``'s log_prob at the same weights."""
        raise NotImplementedError

    def entropy(self, z: torch.Tensor, extras: dict) -> torch.Tensor | None:
        """(B, K, A) entropy of the sampling distribution where defined, else None."""
        return None

    def condition_layer(self) -> nn.Module:
        """The linear layer through which the head's action network reads the trunk's readout ``z`` (RL can give
        it its own learning rate, ``algo.cond_lr_scale``, and standardise its input, ``algo.cond_standardize``): a
        :class:`StandardizedLinear`."""
        raise NotImplementedError(f"{type(self).__name__} does not name its conditioning layer")

    def dist_logits(self, z: torch.Tensor, extras: dict) -> torch.Tensor | None:
        """Discrete heads: the untempered logits (B, L, bins) of every token position of a sample (at the prefix its
        decoder conditioned on), so an exact KL over all bins can be taken; None for continuous heads."""
        return None

    def bc_elements(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The behaviour-cloning loss per element (B, K, A) (cross-entropy per token; denoising error per
        dimension for diffusion/flow, at a random time and noise drawn from torch's RNG; negative log-likelihood
        or squared error for the Gaussian head)."""
        raise NotImplementedError

    def bc_metrics(self, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None) -> dict:
        return {}

    def bc_loss(self, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None,
                weights: torch.Tensor | None = None):  # fmt: skip
        """Behaviour-cloning loss on expert actions (B, K, A); ``mask`` (B, K) marks real (not padded) steps;
        ``weights`` (B,) weight each sample (AWR / IQL extraction, advantage-weighted flow matching).

        -> (scalar loss, dict of float metrics).
        """
        loss = masked_mean(self.bc_elements(z, actions), mask, weights)
        return loss, self.bc_metrics(z, actions, mask)

    def likelihood(self, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """A per-sample log-likelihood (B,) of ``actions``, or its surrogate, for preference losses (DPO):
        minus the summed BC loss (exact for the token and Gaussian heads; for diffusion/flow the negative
        denoising error at one random (time, noise), the ELBO surrogate of Diffusion-DPO: seed torch's RNG alike
        before scoring the policy and its reference so both see the same draw)."""
        return -per_sample_sum(self.bc_elements(z, actions), mask)

    def deterministic_like(self, z: torch.Tensor, actions: torch.Tensor, extras: dict) -> torch.Tensor:
        """The action the deterministic sampler (evaluation) gives for the same input and, for chain heads, the same
        starting noise as the stochastic sample ``actions`` / ``extras``: (B, K, A). The spread of samples around
        it is the head's exploration in action units (``rollout/explore_std`` in online RL)."""
        return self.sample(z, deterministic=True, with_log_prob=False)[0]

    def fit(self, actions: torch.Tensor) -> None:
        """Adapt data-dependent parts (e.g. bin edges) to training actions (N, A). Default: nothing."""

    def _require(self, extras: dict, key: str) -> torch.Tensor:
        if key not in extras:
            raise KeyError(
                f"the {self.cfg.name} head needs extras[{key!r}] to score actions; pass the extras returned by sample()"
            )
        return extras[key]


STOCHASTIC_MODES = ("all", "one", "output")


class ChainHead(ActionHead):
    """A head whose sample is a chain of Gaussian steps from noise ``x_0`` to the action ``x_S`` (diffusion, flow).

    Subclasses give ``_step_moments(x, i, z)``: the Gaussian (mean, std) of the next state for chain states ``x``
    (N, K, A) at step indices ``i`` (N,), and ``_ode_step`` for their deterministic sampler. The chain travels in
    ``extras["chain"]`` (B, S+1, K, A).

    Which steps are stochastic when the head explores (``cfg.stochastic``):

    * ``all``: every step samples; the log-prob sums the step log-densities (each step is one Gaussian policy
      step of the denoising MDP: DPPO, Flow-GRPO).
    * ``one``: one step per decision, drawn uniformly, samples; the others follow the deterministic sampler, and
      the log-prob is that one step's density given the stored chain state before it (piRL's default, Chen et al.
      2025). The drawn index travels in ``extras["sde_step"]`` (B,). Where the noise enters then varies from
      decision to decision, and the gradient is not spread over steps that hardly move the action. The steps
      after the drawn one follow the *current* network, so the ratio does not see every change of the policy: an
      approximation (measured to drift over long runs, BENCHMARKS.md).
    * ``output``: the deterministic sampler runs from the starting noise ``x_0`` and the action is drawn around its
      result with std ``cfg.output_std``: a Gaussian policy whose input includes ``x_0`` (stored in
      ``extras["x0"]``, the pre-clamp draw in ``extras["sample"]``). Its log-prob recomputes the whole
      deterministic chain with the current weights, so the likelihood ratio is exact for every change of the
      network and is conditioned like a Gaussian head's (the exploration std is ``output_std`` in action units).
    """

    def condition_layer(self) -> nn.Module:
        return self.net.z_proj

    def _deterministic_path(self, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The deterministic sampler's final state (unclamped) from starting noise ``x0`` (B, K, A), differentiable."""
        raise NotImplementedError

    def _output_sample(self, z: torch.Tensor, x0: torch.Tensor | None, with_log_prob: bool, carry: dict | None = None):
        """``carry`` (temporally correlated exploration, given by the rollout engine): ``drift`` (B, K, A), the part
        of the exploration noise carried over from the previous decision, and ``scale`` (B,), the std of the fresh
        part in units of ``output_std``. Both travel in the extras: they are inputs of the policy, like ``x0``."""
        x0 = torch.randn(z.shape[0], self.chunk, self.action_dim, device=z.device) if x0 is None else x0
        det = self._deterministic_path(z, x0)
        mean, std = self._output_moments(det, {} if carry is None else carry)
        a = mean + std * torch.randn_like(mean)
        extras = {"x0": x0, "sample": a}
        if carry is not None:
            extras.update(drift=carry["drift"], scale=carry["scale"], noise=a - det)
        lp = gaussian_log_prob(a, mean, std) if with_log_prob else None
        return a.clamp(-1, 1), lp, extras

    def _output_moments(self, det: torch.Tensor, extras: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the output-mode Gaussian around the deterministic action ``det``."""
        std = torch.full_like(det, self.cfg.output_std)
        if "drift" not in extras:
            return det, std
        return det + extras["drift"], std * extras["scale"].view(-1, 1, 1)

    def _step_moments(self, x: torch.Tensor, i: torch.Tensor, z: torch.Tensor):
        raise NotImplementedError

    def _pick_steps(self, b: int, device) -> torch.Tensor | None:
        """The stochastic step of each of ``b`` samples (``one`` mode), else None (every step)."""
        if getattr(self.cfg, "stochastic", "all") != "one":
            return None
        return torch.randint(0, self.cfg.steps, (b,), device=device)

    @staticmethod
    def _mix(x_det: torch.Tensor, x_sto: torch.Tensor, i: int, picks: torch.Tensor | None) -> torch.Tensor:
        """Next chain state: the stochastic draw where step ``i`` is a sample's stochastic step (all, without picks)."""
        if picks is None:
            return x_sto
        return torch.where((picks == i).view(-1, 1, 1), x_sto, x_det)

    def _chain_moments(self, z: torch.Tensor, chain: torch.Tensor):
        b, s1 = chain.shape[:2]
        s = s1 - 1
        x = chain[:, :-1].reshape(b * s, self.chunk, self.action_dim)
        i = torch.arange(s, device=z.device).repeat(b)
        mean, std = self._step_moments(x, i, z.repeat_interleave(s, 0))
        shape = (b, s, self.chunk, self.action_dim)
        return mean.reshape(shape), std.expand_as(mean).reshape(shape)

    def _picked_moments(self, z: torch.Tensor, chain: torch.Tensor, picks: torch.Tensor):
        """(x_next, mean, std) of each sample's stochastic step, each (B, K, A)."""
        ar = torch.arange(chain.shape[0], device=chain.device)
        mean, std = self._step_moments(chain[ar, picks], picks, z)
        return chain[ar, picks + 1], mean, std.expand_as(mean)

    def log_prob(self, z: torch.Tensor, actions, extras: dict) -> torch.Tensor:
        if "x0" in extras:  # output mode
            mean, std = self._output_moments(self._deterministic_path(z, extras["x0"]), extras)
            return gaussian_log_prob(self._require(extras, "sample"), mean, std)
        chain = self._require(extras, "chain")
        if "sde_step" in extras:
            x_next, mean, std = self._picked_moments(z, chain, extras["sde_step"])
            return gaussian_log_prob(x_next, mean, std)
        mean, std = self._chain_moments(z, chain)
        return gaussian_log_prob(chain[:, 1:], mean, std).sum(1)

    def entropy(self, z: torch.Tensor, extras: dict) -> torch.Tensor:
        """Entropy of the chain's stochastic step kernels given its states (constant for fixed step noise)."""
        if "x0" in extras:
            return gaussian_entropy(self._output_moments(torch.zeros_like(extras["x0"]), extras)[1])
        chain = self._require(extras, "chain")
        if "sde_step" in extras:
            return gaussian_entropy(self._picked_moments(z, chain, extras["sde_step"])[2])
        _, std = self._chain_moments(z, chain)
        return gaussian_entropy(std).sum(1)

    def deterministic_like(self, z: torch.Tensor, actions: torch.Tensor, extras: dict) -> torch.Tensor:
        """The deterministic sampler's action from the same starting noise as a stochastic sample."""
        x0 = extras["x0"] if "x0" in extras else self._require(extras, "chain")[:, 0]
        return self.sample(z, deterministic=True, with_log_prob=False, x0=x0)[0]
