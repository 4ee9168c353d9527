"""ARFM-style advantage-weighted flow matching: batch-normalised weights exp(alpha * A_hat), alpha set per batch so
the effective sample size stays at ``ess`` of the batch (flow and diffusion heads)."""

from __future__ import annotations

from dataclasses import dataclass

from rlvla.algos.offline.base import OfflineConfig, OnlineFields, _f, arfm_weights, mc_advantage, value_target


@dataclass
class Config(OnlineFields, OfflineConfig):
    name: str = "arfm"
    ess: float = 0.5
    """Target effective sample size of the weights, as a fraction of the batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_online()
        if not 0 < self.ess <= 1:
            raise ValueError("algo.ess must be in (0, 1]")


def configure(pcfg, cfg):
    if pcfg.head.name not in ("flow", "diffusion"):
        raise ValueError(f"arfm (advantage-weighted flow matching) needs a flow or diffusion head, not {pcfg.head.name!r}; "
                         "use awr for other heads")  # fmt: skip
    return value_target(pcfg, "mc")


def loss(algo, batch, step):
    m: dict = {}
    z, zv = algo.policy.encode(batch)
    adv, vloss = mc_advantage(algo, batch, zv, m)
    w, alpha = arfm_weights(adv, algo.cfg.ess)
    m.update(alpha=alpha, weight_max=_f(w.max()))
    bc, bm = algo.policy.bc_loss(batch, weights=w, z=z)
    return bc + algo.cfg.value_coef * vloss, {**m, **bm}
