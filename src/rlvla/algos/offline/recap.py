"""Advantage-conditioned behaviour cloning (pi*0.6's RECAP): V on Monte-Carlo returns, the indicator
1[G_mc - V > threshold] is an input token, dropped with probability ``cond_dropout``; at test time conditioned on
"better" (1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rlvla.algos.offline import core as off
from rlvla.algos.offline.base import ConditionFields, OfflineConfig, _f, with_condition


@dataclass
class Config(ConditionFields, OfflineConfig):
    name: str = "recap"
    threshold: float = 0.0
    """The indicator is 1[A > threshold]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_condition()


def configure(pcfg, cfg):
    from rlvla.policies.config import ConditionConfig

    pcfg = dataclasses.replace(pcfg, value_target="mc")
    return dataclasses.replace(pcfg, condition=ConditionConfig("advantage", cfg.cond_dropout, 1.0))


def deployment_condition(cfg, data) -> float:
    return 1.0


def loss(algo, batch, step):
    c, p, m = algo.cfg, algo.policy, {}
    nan = torch.full((len(batch["mc_return"]),), float("nan"), device=batch["mc_return"].device)
    _, zv = p.encode(with_condition(batch, nan))  # V(s) is unconditioned
    v, vloss = algo._value_loss(zv, batch)
    adv = (batch["mc_return"] - v).detach()
    ind = off.advantage_indicator(adv, c.threshold).float()
    cond = ind.clone()
    cond[torch.rand(len(cond), device=cond.device) < c.cond_dropout] = float("nan")
    bc, bm = p.bc_loss(with_condition(batch, cond))
    m.update(bm, value_loss=_f(vloss), positive_frac=_f(ind.mean()), v_mean=_f(v.mean()))
    return bc + c.value_coef * vloss, m
