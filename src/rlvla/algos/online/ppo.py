"""PPO (Schulman et al. 2017): GAE on per-decision rewards with a learned critic, advantages normalised per task.

The RL4VLA / RLinf choice for VLAs; the critic can warm up and learn at its own rate (``value_warmup``,
``value_lr``). Rewards per decision: a success bonus once, potential-based shaping, the env's dense reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvla.algos import core
from rlvla.algos.online.pg import CriticFields, DecisionRewardFields, OnlineConfig, check_critic_fields, check_reward_fields

USES_VALUE = True


@dataclass
class Config(DecisionRewardFields, CriticFields, OnlineConfig):
    name: str = "ppo"
    group_size: int = 1
    clip_high: float = 0.2
    lr: float = 1e-4
    shaping: float = 0.5
    epochs: int = 4
    minibatch: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_critic_fields(self)
        check_reward_fields(self)


def advantages(batch, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    r = batch["next.reward"].double()
    adv, ret = core.gae(r[:, None], batch["value"].double()[:, None], batch["next_value"].double()[:, None],
                        batch["next.terminated"][:, None], batch["next.done"][:, None], cfg.gamma, cfg.lam)  # fmt: skip
    adv, ret = adv[:, 0], ret[:, 0]
    if cfg.advantage_norm in ("none", "minibatch"):
        return adv.float(), ret.float()
    task = batch["task_id"] if cfg.advantage_norm == "task" else torch.zeros_like(batch["task_id"])
    out = torch.zeros_like(adv)
    for t in task.unique():  # per-task normalisation: one task's scale must not drown the others
        m = task == t
        a = adv[m]
        out[m] = (a - a.mean()) / (a.std(unbiased=False) + 1e-8) if a.numel() > 1 else a - a.mean()
    return out.float(), ret.float()
