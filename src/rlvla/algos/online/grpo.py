"""GRPO (Shao et al. 2024, with DAPO's dynamic sampling and clip-higher): an episode's score against the other
rollouts of its layout, divided by the group's std (``normalize_std=false``: Dr. GRPO). No critic."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvla.algos import core
from rlvla.algos.online.pg import PROGRESS_STD_FLOOR, GroupFields, OnlineConfig, check_group_fields, episode_group_advantages

USES_VALUE = False


@dataclass
class Config(GroupFields, OnlineConfig):
    name: str = "grpo"
    normalize_std: bool = True
    """Divide by the group's std (false: Dr. GRPO)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_group_fields(self)


def advantages(batch, cfg: Config) -> tuple[torch.Tensor, None]:
    floor = PROGRESS_STD_FLOOR if cfg.progress_score > 0 or cfg.speed_score > 0 else 0.0
    return episode_group_advantages(batch, cfg, lambda s: core.group_advantages(s, cfg.normalize_std, std_floor=floor)), None
