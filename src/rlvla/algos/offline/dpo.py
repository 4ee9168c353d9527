"""DPO (Rafailov et al. 2023) on (successful, failed) trajectory pairs of one task against the frozen initial policy.
Trajectory log-likelihoods are sums over sampled frames (exact for token/Gaussian heads, the denoising-error
surrogate of Diffusion-DPO for flow/diffusion heads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvla.algos.offline import core as off
from rlvla.algos.offline.base import OfflineConfig, _f

NEEDS_REFERENCE = True


@dataclass
class Config(OfflineConfig):
    name: str = "dpo"
    dpo_beta: float = 0.1
    dpo_pairs: int = 4
    dpo_frames: int = 8
    """Trajectory pairs per step and frames scored per trajectory."""
    dpo_bc_coef: float = 0.0
    """Behaviour cloning on the chosen frames added to the DPO loss (0: pure DPO)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dpo_beta <= 0 or self.dpo_pairs < 1 or self.dpo_frames < 1:
            raise ValueError("algo.dpo_beta must be > 0, algo.dpo_pairs and algo.dpo_frames >= 1")


def configure(pcfg, cfg):
    return pcfg


def loss(algo, batch, step):
    c, p = algo.cfg, algo.policy
    got = algo.data.pairs(step, c.dpo_pairs, c.dpo_frames, algo.loop.seed)
    if got is None:
        raise ValueError("dpo found no task with both successful and failed episodes in the loaded data files; "
                         "collect mixed-quality data (rlvla collect --failure-prob 0.3 ...) or raise "
                         "algo.files_in_memory so that both outcomes are in memory together")  # fmt: skip
    chosen, rejected, frames = got
    chosen, rejected = chosen.to(p.device), rejected.to(p.device)
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())

    def traj_ll(model, b):
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # the same (time, noise) draws for the policy and its reference
            ll = model.likelihood(b)
        return ll.reshape(-1, frames).sum(1)

    lc, lr = traj_ll(p, chosen), traj_ll(p, rejected)
    with torch.no_grad():
        rc, rr = traj_ll(algo.reference, chosen), traj_ll(algo.reference, rejected)
    loss_, info = off.dpo_loss(lc, lr, rc, rr, c.dpo_beta)
    m = {"dpo_loss": _f(loss_), **info, "logp_chosen": _f(lc.mean()), "logp_rejected": _f(lr.mean())}
    if c.dpo_bc_coef > 0:
        bc, _ = p.bc_loss(chosen)
        loss_ = loss_ + c.dpo_bc_coef * bc
        m["bc_loss"] = _f(bc)
    return loss_, m
