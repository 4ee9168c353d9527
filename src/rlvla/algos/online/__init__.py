"""Online RL: the policy-gradient family (PPO, GRPO, RLOO, REINFORCE++). Rollouts come from
:mod:`rlvla.collectors`."""

from rlvla.algos.online.pg import ALGOS, CONFIGS, OnlineConfig, PolicyGradient, compute_advantages

__all__ = ["ALGOS", "CONFIGS", "OnlineConfig", "PolicyGradient", "compute_advantages"]
