"""RLOO (Ahmadian et al. 2024): an episode's score minus the mean of the other episodes of its group. No critic."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvla.algos import core
from rlvla.algos.online.pg import GroupFields, OnlineConfig, check_group_fields, episode_group_advantages

USES_VALUE = False


@dataclass
class Config(GroupFields, OnlineConfig):
    name: str = "rloo"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_fields(self)


def advantages(batch, cfg: Config) -> tuple[torch.Tensor, None]:
    return episode_group_advantages(batch, cfg, core.rloo_advantages), None
