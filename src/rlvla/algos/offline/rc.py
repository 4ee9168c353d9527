"""Return-conditioned behaviour cloning (Decision Transformer / ReinboT): the return-to-go is an input token; at
test time the policy is conditioned on a high target return (the 90th percentile of the data's initial returns)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from rlvla.algos.offline.base import ConditionFields, OfflineConfig, with_condition


@dataclass
class Config(ConditionFields, OfflineConfig):
    name: str = "rc"
    cond_gamma: float = 1.0
    """Discount of the conditioning return-to-go (1: undiscounted; with sparse rewards, the episode's outcome)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_condition()
        if not 0 < self.cond_gamma <= 1:
            raise ValueError(f"algo.cond_gamma must be in (0, 1], got {self.cond_gamma}")


def configure(pcfg, cfg):
    from rlvla.policies.config import ConditionConfig

    pcfg = dataclasses.replace(pcfg, value_target="mc")
    return dataclasses.replace(pcfg, condition=ConditionConfig("return", cfg.cond_dropout, 1.0))


def deployment_condition(cfg, data) -> float:
    return float(np.quantile(data.cond_return[data.episode_starts], 0.9))


def loss(algo, batch, step):
    cond = batch["cond_return"].clone()
    cond[torch.rand(len(cond), device=cond.device) < algo.cfg.cond_dropout] = float("nan")
    bc, bm = algo.policy.bc_loss(with_condition(batch, cond))
    return bc, {**bm}
