"""Autoregressive action tokens (RT-2 / OpenVLA style).

Each action dimension is discretised into ``bins`` bins (uniform over [-1, 1], or edges at the training data's
quantiles). The chunk's ``K * A`` tokens are generated one at a time, step-major (k0a0, k0a1, ..., k1a0, ...),
by a small causal transformer conditioned on the backbone readout. Log-probs are token-level, under the
temperature-scaled distribution that sampling uses, so re-scoring a sample reproduces its log-prob.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlvla.policies.heads.base import ActionHead, StandardizedLinear, masked_mean, per_sample_sum
from rlvla.policies.transformer import Transformer

BIN_MODES = ("uniform", "quantile")


@dataclass
class Config:
    name: str = "token"
    bins: int = 256
    """Bins per action dimension."""
    edges: str = "uniform"
    """``uniform`` over [-1, 1], or ``quantile``: edges at the training actions' quantiles (set by ``fit``)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are those of the tempered distribution."""
    kernel: float = 0.0
    """Local exploration (online RL): > 0 samples each token around the greedy decode instead of autoregressively.
    The greedy tokens g are decoded first; token i is then drawn from its tempered distribution given the greedy
    prefix g_<i, times a Gaussian of this std (action units) around g_i. A sample is the greedy action plus local
    noise: no far, near-tied bin (a bimodal gripper or z token) and no cascade where one changed token re-routes
    every later one. g is stored with the sample (``extras["center"]``) and re-scoring conditions on it, so the
    log-prob is exact and one teacher-forced pass. 0: off (plain autoregressive sampling). Greedy decoding is
    unchanged."""
    dim: int = 128
    layers: int = 2
    heads: int = 4
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.edges not in BIN_MODES:
            raise ValueError(f"unknown token edges {self.edges!r}; valid: {', '.join(BIN_MODES)}")
        if self.bins < 2 or self.temperature <= 0 or self.kernel < 0 or self.heads < 1 or self.dim < 1 or self.dim % self.heads:
            raise ValueError(f"token head needs bins >= 2, temperature > 0, kernel >= 0, dim divisible by heads (got {self})")


class Head(ActionHead):
    def __init__(self, cfg: Config, cond_dim: int, chunk: int, action_dim: int) -> None:
        super().__init__(cfg, cond_dim, chunk, action_dim)
        self.length = chunk * action_dim
        d = cfg.dim
        self.cond = StandardizedLinear(cond_dim, d)
        self.tok_emb = nn.Embedding(cfg.bins, d)
        self.pos = nn.Parameter(torch.randn(1, self.length, d) * 0.02)
        self.decoder = Transformer(d, cfg.heads, cfg.layers, 2 * d)
        self.logits = nn.Linear(d, cfg.bins)
        edges = torch.linspace(-1.0, 1.0, cfg.bins + 1).repeat(action_dim, 1)
        self.register_buffer("edges", edges)  # (A, bins + 1), saved with the weights

    def condition_layer(self) -> nn.Module:
        return self.cond

    # ------------------------------------------------------------------ discretisation
    def fit(self, actions: torch.Tensor) -> None:
        if self.cfg.edges != "quantile":
            return
        a = actions.reshape(-1, self.action_dim).clamp(-1, 1).double()
        q = torch.quantile(a.T, torch.linspace(0, 1, self.cfg.bins + 1, dtype=torch.float64), dim=1).T  # (A, bins+1)
        q[:, 0], q[:, -1] = -1.0, 1.0
        # Saturated actions (many exactly +-1) give repeated quantiles: enforce a minimum bin width and rescale.
        min_w = 1e-3
        widths = (q[:, 1:] - q[:, :-1]).clamp_min(min_w)
        widths = widths / widths.sum(1, keepdim=True) * 2.0
        edges = torch.cat([torch.full((self.action_dim, 1), -1.0, dtype=torch.float64), -1.0 + widths.cumsum(1)], 1)
        edges[:, -1] = 1.0
        self.edges.copy_(edges.float())

    @property
    def centers(self) -> torch.Tensor:
        return 0.5 * (self.edges[:, 1:] + self.edges[:, :-1])  # (A, bins)

    def discretise(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, K, A) in [-1, 1] -> token ids (B, K, A)."""
        b = actions.shape[0]
        vals = actions.clamp(-1, 1).reshape(-1, self.action_dim).T.contiguous()  # (A, B*K)
        ids = torch.searchsorted(self.edges[:, 1:-1].contiguous(), vals, right=True)  # (A, B*K) in [0, bins-1]
        return ids.T.reshape(b, self.chunk, self.action_dim)

    def undiscretise(self, tokens: torch.Tensor) -> torch.Tensor:
        """token ids (B, K, A) -> bin centres (B, K, A)."""
        c = self.centers  # (A, bins)
        dims = torch.arange(self.action_dim, device=tokens.device).expand_as(tokens)
        return c[dims, tokens]

    # ------------------------------------------------------------------ model
    def _logits(self, z: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Logits for positions 0..n-1, (B, n, bins), given the n-1 tokens ``prev`` (B, n-1) before them.

        Position i reads the embedding of token i-1 (position 0 reads nothing), its position and the condition.
        """
        b = z.shape[0]
        n = prev.shape[1] + 1
        start = torch.zeros(b, 1, self.cfg.dim, device=z.device)
        x = torch.cat([start, self.tok_emb(prev)], 1) + self.pos[:, :n] + self.cond(z)[:, None]
        return self.logits(self.decoder(x, causal=True)) / self.cfg.temperature

    def _full_logits(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(tokens.shape[0], self.length)
        return self._logits(z, flat[:, :-1])  # (B, L, bins)

    def _kernel_bias(self, center: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """log of the exploration kernel: -(c_b - c_center)^2 / (2 kernel^2) per bin b, (..., bins); ``center`` are
        bin ids, ``positions`` the flat token positions (their action dimension picks the bin centres)."""
        c = self.centers[positions % self.action_dim]  # (..., bins)
        mid = c.gather(-1, center[..., None])
        return -((c - mid) ** 2) / (2 * self.cfg.kernel**2)

    def _local_logits(self, z: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Logits of the local sampling distribution, (B, L, bins): each token given the greedy prefix ``center``
        (B, L), tempered, plus the kernel around the greedy token."""
        logits = self._logits(z, center[:, :-1])
        return logits + self._kernel_bias(center, torch.arange(self.length, device=z.device).expand_as(center))

    def _scored_logits(self, z: torch.Tensor, tokens: torch.Tensor, extras: dict) -> torch.Tensor:
        """The logits of the distribution ``tokens`` were sampled from: local when the sample carries its greedy
        decode (``center``), else autoregressive given its own prefix."""
        if self._is_local(extras):
            return self._local_logits(z, extras["center"].reshape(tokens.shape[0], self.length))
        return self._full_logits(z, tokens)

    def _is_local(self, extras: dict) -> bool:
        """The sample was drawn around its greedy decode (local exploration), which it carries as ``center``."""
        return self.cfg.kernel > 0 and "center" in extras

    def sample(self, z: torch.Tensor, deterministic: bool = False, with_log_prob: bool = True):
        """Decode the K*A tokens one at a time with a key/value cache; the log-prob is then re-scored in one
        teacher-forced pass, so that sampling and ``log_prob`` return the same numbers."""
        b = z.shape[0]
        caches: list[dict] = [{} for _ in self.decoder.blocks]
        cond = self.cond(z)[:, None]
        x = torch.zeros(b, 1, self.cfg.dim, device=z.device) + self.pos[:, :1] + cond
        toks = []
        local = self.cfg.kernel > 0 and not deterministic
        for i in range(self.length):
            logits = self.logits(self.decoder(x, causal=True, caches=caches))[:, -1] / self.cfg.temperature
            nxt = logits.argmax(-1) if deterministic or local else torch.multinomial(F.softmax(logits, -1), 1)[:, 0]
            toks.append(nxt)
            if i + 1 < self.length:
                x = self.tok_emb(nxt)[:, None] + self.pos[:, i + 1 : i + 2] + cond
        tokens = torch.stack(toks, 1)
        extras = {}
        if local:  # the greedy decode is the centre; every token is drawn around it given the greedy prefix
            probs = F.softmax(self._local_logits(z, tokens), -1)
            extras["center"] = tokens.reshape(b, self.chunk, self.action_dim)
            tokens = torch.multinomial(probs.reshape(-1, self.cfg.bins), 1).reshape(b, self.length)
        tokens = tokens.reshape(b, self.chunk, self.action_dim)
        extras["tokens"] = tokens
        return self.undiscretise(tokens), self.log_prob(z, None, extras) if with_log_prob else None, extras

    def dist_logits(self, z: torch.Tensor, extras: dict) -> torch.Tensor:
        """Untempered logits over all bins at every position, given the prefix the sample was decoded from (the
        greedy decode ``center`` in local exploration, else the sample's own tokens): the whole distribution, not
        only the bins a sample's kernel reaches, so a KL on it also holds the far bins the greedy decode could jump
        to."""
        tokens = self._require(extras, "tokens")
        prefix = extras["center"] if self._is_local(extras) else tokens
        return self._full_logits(z, prefix.reshape(tokens.shape[0], self.length)) * self.cfg.temperature

    def log_prob(self, z: torch.Tensor, actions: torch.Tensor, extras: dict) -> torch.Tensor:
        tokens = extras["tokens"] if "tokens" in extras else self.discretise(actions)
        logp_all = F.log_softmax(self._scored_logits(z, tokens, extras), -1)
        lp = logp_all.gather(-1, tokens.reshape(tokens.shape[0], self.length, 1))[..., 0]
        return lp.reshape(tokens.shape)

    def entropy(self, z: torch.Tensor, extras: dict) -> torch.Tensor:
        tokens = self._require(extras, "tokens")
        logp_all = F.log_softmax(self._scored_logits(z, tokens, extras), -1)
        return -(logp_all.exp() * logp_all).sum(-1).reshape(tokens.shape)

    def _ce(self, z: torch.Tensor, actions: torch.Tensor, smoothing: float):
        tokens = self.discretise(actions)
        logits = self._full_logits(z, tokens) * self.cfg.temperature  # train the untempered distribution
        ce = F.cross_entropy(
            logits.reshape(-1, self.cfg.bins), tokens.reshape(-1), reduction="none", label_smoothing=smoothing
        ).reshape(tokens.shape)
        return ce, logits, tokens

    def bc_elements(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self._ce(z, actions, self.cfg.label_smoothing)[0]

    def bc_loss(self, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None, weights=None):
        ce, logits, tokens = self._ce(z, actions, self.cfg.label_smoothing)
        loss = masked_mean(ce, mask, weights)
        with torch.no_grad():
            acc = masked_mean((logits.argmax(-1).reshape(tokens.shape) == tokens).float(), mask)
        return loss, {"token_accuracy": float(acc)}

    def likelihood(self, z: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return -per_sample_sum(self._ce(z, actions, 0.0)[0], mask)  # exact token log-likelihood (no label smoothing)
