"""Online RL: the rollout engine and the policy-gradient family (PPO, GRPO, RLOO, REINFORCE++)."""

from rlvla.algos.online.pg import ALGOS, CONFIGS, OnlineConfig, PolicyGradient, compute_advantages
from rlvla.algos.online.rollout import Rollout, RolloutEngine, RolloutInterrupted

__all__ = ["ALGOS", "CONFIGS", "OnlineConfig", "PolicyGradient", "Rollout", "RolloutEngine", "RolloutInterrupted",
           "compute_advantages"]
