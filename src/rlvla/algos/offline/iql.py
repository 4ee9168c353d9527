"""IQL (Kostrikov et al. 2022): V by expectile regression on min_i Q_target(s, a); Q by TD to r + gamma^K V(s');
A = Q - V, extracted by advantage-weighted behaviour cloning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rlvla.algos.offline import core as off
from rlvla.algos.offline.base import OfflineConfig, OnlineFields, QFields, WeightFields, _f, q_td, value_target, weighted_bc

Q = True


@dataclass
class Config(OnlineFields, QFields, WeightFields, OfflineConfig):
    name: str = "iql"
    expectile: float = 0.7
    """IQL's tau."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_weights()
        self.check_q()
        self.check_online()
        if not 0 < self.expectile < 1:
            raise ValueError(f"algo.expectile must be in (0, 1), got {self.expectile}")


def configure(pcfg, cfg):
    return value_target(dataclasses.replace(pcfg, critic=cfg.critic), "expectile")


def loss(algo, batch, step):
    p, m = algo.policy, {}
    z, zv = p.encode(batch)
    q, td = q_td(algo, batch, zv, lambda zn, zvn: p.value_head(zvn)[:, 0], m)
    with torch.no_grad():
        q_t = algo.target(zv.detach(), batch["action"].flatten(1)).min(0).values
    v = p.value_head(zv)[:, 0]
    vloss = off.expectile_loss(q_t - v, algo.cfg.expectile)
    adv = (q_t - v).detach()
    m.update(value_loss=_f(vloss), v_mean=_f(v.mean()))
    return weighted_bc(algo, batch, z, adv, td + vloss, m)
