"""Exploration bonuses and shaping over feature vectors (the policy's readouts of an observation).

- :func:`shaped_rewards`: potential-based shaping ``r + gamma * phi(s') - phi(s)`` (Ng et al. 1999) for whole
  arrays of transitions with any potential (the env's dense progress, a learned value or progress model); at a
  terminal transition ``phi(s') = 0``, so every policy's return changes by the same ``-phi(s_0)`` and the optimal
  policy is unchanged (the test solves a small MDP both ways).
- :class:`RND`: random network distillation (Burda et al. 2019). A frozen random MLP is the target; a trained MLP
  predicts it; the bonus is the prediction error, divided by a running std of the bonus so its scale is stable
  while the predictor learns. Novel features are predicted badly, so they pay.
- :class:`SimHashCount`: counts in hashed feature space (Tang et al. 2017): ``sign(A f)`` with a fixed Gaussian
  ``A`` (k bits), bonus ``1 / sqrt(n(hash))`` after counting the batch's own visits.
- :func:`annealed`: the bonus weight's schedule (linear to 0 over ``anneal`` iterations; 0 keeps it constant).

Both bonuses keep their state as tensors (``state()`` / ``load_state()``), so a resumed run continues them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def shaped_rewards(rewards, phi, phi_next, gamma: float, terminal) -> np.ndarray:
    """``r + gamma * phi(s') * (1 - terminal) - phi(s)`` per transition (arrays of one shape)."""
    r, p, pn = (np.asarray(x, np.float64) for x in (rewards, phi, phi_next))
    return r + gamma * pn * (1.0 - np.asarray(terminal, np.float64)) - p


def annealed(coef: float, iteration: int, anneal: int) -> float:
    """``coef`` decayed linearly to 0 at iteration ``anneal`` (0: constant)."""
    if anneal <= 0:
        return float(coef)
    return float(coef) * max(0.0, 1.0 - iteration / anneal)


class RunningStd:
    """Running mean/variance (parallel Welford) of scalars."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0.0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().reshape(-1)
        if x.numel() == 0:
            return
        n, m = float(x.numel()), float(x.mean())
        m2 = float(((x - m) ** 2).sum())
        tot = self.n + n
        delta = m - self.mean
        self.mean += delta * n / tot
        self.m2 += m2 + delta**2 * self.n * n / tot
        self.n = tot

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n > 1 else 1.0

    def state(self) -> torch.Tensor:
        return torch.tensor([self.n, self.mean, self.m2], dtype=torch.float64)

    def load(self, t: torch.Tensor) -> None:
        self.n, self.mean, self.m2 = (float(v) for v in t.tolist())


class RunningMoments:
    """Running mean and variance of feature vectors ``(B, D)`` (parallel Welford, per dimension)."""

    def __init__(self, dim: int) -> None:
        self.n = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dtype=torch.float64)

    def update(self, f: torch.Tensor) -> None:
        x = f.detach().double()
        n = float(len(x))
        if n == 0:
            return
        m = x.mean(0)
        tot = self.n + n
        delta = m - self.mean
        self.mean = self.mean + delta * n / tot
        self.m2 = self.m2 + ((x - m) ** 2).sum(0) + delta**2 * self.n * n / tot
        self.n = tot

    def normalise(self, f: torch.Tensor) -> torch.Tensor:
        std = (self.m2 / self.n.clamp_min(1)).sqrt().clamp_min(1e-6) if self.n > 1 else torch.ones_like(self.mean)
        return ((f.double() - self.mean) / std).clamp(-5, 5).float()

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.n": self.n.clone(), f"{prefix}.mean": self.mean.clone(), f"{prefix}.m2": self.m2.clone()}

    def load(self, t: dict, prefix: str) -> None:
        if f"{prefix}.n" in t:
            self.n, self.mean, self.m2 = (t[f"{prefix}.{k}"].double().clone() for k in ("n", "mean", "m2"))


def _mlp(dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


class RND(nn.Module):
    def __init__(self, dim: int, hidden: int = 128, out: int = 64, lr: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.target, self.predictor = _mlp(dim, hidden, out), _mlp(dim, hidden, out)
        with torch.no_grad():
            for p in list(self.target.parameters()) + list(self.predictor.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p.shape[-1]) ** 0.5))
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.feat = RunningMoments(dim)  # features standardised by running statistics (not the batch's own)
        self.scale = RunningStd()
        self.opt = torch.optim.Adam(self.predictor.parameters(), lr=lr)

    def error(self, f: torch.Tensor) -> torch.Tensor:
        x = self.feat.normalise(f)
        return ((self.predictor(x) - self.target(x)) ** 2).mean(-1)

    @torch.no_grad()
    def bonus(self, f: torch.Tensor) -> torch.Tensor:
        """Prediction error / its running std ``(B,)`` (the statistics include this batch)."""
        self.feat.update(f)
        e = self.error(f)
        self.scale.update(e)
        return e / max(self.scale.std, 1e-8)

    def update(self, f: torch.Tensor, epochs: int = 1, minibatch: int = 256) -> float:
        """Train the predictor on these features; -> its mean loss."""
        losses = []
        for _ in range(epochs):
            for k in range(0, len(f), minibatch):
                loss = self.error(f[k : k + minibatch]).mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else 0.0

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        from rlvla.algos.optim import optimizer_tensors

        out = {f"rnd.{k}": v.detach().clone() for k, v in self.state_dict().items()}
        opt, meta = optimizer_tensors(self.opt)
        out.update({f"rnd_opt.{k}": v for k, v in opt.items()})
        out["rnd_scale"] = self.scale.state()
        out.update(self.feat.state("rnd_feat"))
        return out, {"rnd_param_groups": meta["param_groups"]}

    def load_state(self, t: dict[str, torch.Tensor], meta: dict | None = None) -> None:
        from rlvla.algos.optim import load_optimizer_tensors

        self.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("rnd.")})
        opt = {k[8:]: v for k, v in t.items() if k.startswith("rnd_opt.")}
        if opt and meta is not None and "rnd_param_groups" in meta:
            load_optimizer_tensors(self.opt, opt, {"param_groups": meta["rnd_param_groups"]})
        if "rnd_scale" in t:
            self.scale.load(t["rnd_scale"])
        self.feat.load(t, "rnd_feat")


class SimHashCount:
    def __init__(self, dim: int, bits: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(dim, bits, generator=g)
        self.weights = 2 ** torch.arange(bits, dtype=torch.int64)
        self.counts: dict[int, int] = {}
        self.feat = RunningMoments(dim)

    def hashes(self, f: torch.Tensor) -> list[int]:
        """Bucket of each feature vector: the sign pattern of its random projection (features standardised by
        running statistics, so a state's bucket does not depend on its batch-mates)."""
        return ((self.feat.normalise(f) @ self.proj) > 0).long().mul(self.weights).sum(-1).tolist()

    def bonus(self, f: torch.Tensor) -> torch.Tensor:
        """Count this batch's visits, then ``1 / sqrt(n)`` per row ``(B,)``."""
        self.feat.update(f)
        h = self.hashes(f)
        for k in h:
            self.counts[k] = self.counts.get(k, 0) + 1
        return torch.tensor([1.0 / np.sqrt(self.counts[k]) for k in h], dtype=torch.float32)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        keys = sorted(self.counts)
        out = {"count.keys": torch.tensor(keys, dtype=torch.int64),
               "count.values": torch.tensor([self.counts[k] for k in keys], dtype=torch.int64)}  # fmt: skip
        return {**out, **self.feat.state("count_feat")}, {}

    def load_state(self, t: dict[str, torch.Tensor], meta: dict | None = None) -> None:
        if "count.keys" in t:
            self.counts = dict(zip(t["count.keys"].tolist(), t["count.values"].tolist()))
        self.feat.load(t, "count_feat")
