"""AWR (Peng et al. 2019): A = G_mc - V(s), V regressed on Monte-Carlo returns; weights min(exp(A / beta), max_weight)."""

from __future__ import annotations

from dataclasses import dataclass

from rlvla.algos.offline.base import OfflineConfig, OnlineFields, WeightFields, mc_advantage, value_target, weighted_bc


@dataclass
class Config(OnlineFields, WeightFields, OfflineConfig):
    name: str = "awr"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_weights()
        self.check_online()


def configure(pcfg, cfg):
    return value_target(pcfg, "mc")


def loss(algo, batch, step):
    m: dict = {}
    z, zv = algo.policy.encode(batch)
    adv, vloss = mc_advantage(algo, batch, zv, m)
    return weighted_bc(algo, batch, z, adv, vloss, m)
