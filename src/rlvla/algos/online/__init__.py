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

import importlib
import pkgutil
from pathlib import Path

from rlvla.algos.online.pg import OnlineConfig, PolicyGradient, compute_advantages

_SHARED = {"pg", "explore"}
_REGISTRY: dict = {}
CONFIGS: dict[str, type] = {}


def register_online(module) -> None:
    """Register an algorithm: anything with ``Config`` (whose ``name`` default is its name), ``advantages`` and
    ``USES_VALUE``."""
    name = module.Config.name
    if name in _REGISTRY and _REGISTRY[name] is not module:
        raise ValueError(f"online algorithm {name!r} is already registered")
    _REGISTRY[name] = module
    CONFIGS[name] = module.Config


def algorithm(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown online algorithm {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


for _m in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in _SHARED):
    register_online(importlib.import_module(f"rlvla.algos.online.{_m}"))

ALGOS = tuple(CONFIGS)

__all__ = ["ALGOS", "CONFIGS", "OnlineConfig", "PolicyGradient", "algorithm", "compute_advantages", "register_online"]
