"""REINFORCE++ (Hu 2025): the discounted return-to-go of per-decision rewards, normalised over the batch. No critic."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvla.algos import core
from rlvla.algos.online.pg import DecisionRewardFields, OnlineConfig, check_reward_fields

USES_VALUE = False


@dataclass
class Config(DecisionRewardFields, OnlineConfig):
    name: str = "reinforce_pp"
    group_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_reward_fields(self)


def advantages(batch, cfg: Config) -> tuple[torch.Tensor, None]:
    r = batch["next.reward"].double()
    ret = core.discounted_returns(r[:, None], batch["next.done"][:, None], cfg.gamma)[:, 0]
    return core.reinforce_pp_advantages(ret).float(), None
