"""Online RL: the policy-gradient family. Rollouts come from :mod:`rlvla.collectors`.

The folder is the registry: ``algos/online/<name>.py`` (``ppo``, ``grpo``, ``rloo``, ``reinforce_pp``) defines

- ``Config``: a dataclass extending :class:`~rlvla.algos.online.pg.OnlineConfig` with only the fields the algorithm
  uses (``name = "<name>"``); ``rlvla train algo=<name> algo.<key>=...`` composes it, and a key it does not have is
  an error naming the valid ones;
- ``advantages(batch, cfg) -> (advantages (N,), value targets (N,) or None)``: its math, from the shared pieces in
  :mod:`rlvla.algos.core`;
- ``USES_VALUE``: whether it trains the critic.

The update itself (clipped surrogate, epochs x minibatches, KL, entropy, critic) is :class:`PolicyGradient`, shared.
Adding an algorithm is one new file here (or :func:`register_online` of a module-like object, as a test does).
"""

from __future__ import annotations

from rlvla.algos.online.pg import OnlineConfig, PolicyGradient, compute_advantages
from rlvla.registry import Registry

_REGISTRY = Registry("online algorithm", __name__, shared={"pg", "explore"})
CONFIGS: dict[str, type] = _REGISTRY.configs
register_online = _REGISTRY.register
algorithm = _REGISTRY.get
_REGISTRY.discover()
ALGOS = tuple(CONFIGS)

__all__ = ["ALGOS", "CONFIGS", "OnlineConfig", "PolicyGradient", "algorithm", "compute_advantages", "register_online"]
