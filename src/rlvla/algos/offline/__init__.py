"""Offline algorithms: learning from a fixed dataset. ``sft`` (:mod:`.sft`) trains a new policy; the offline RL
methods continue one or start fresh on chunk transitions (:mod:`rlvla.data.offline`).

The folder is the registry: ``algos/offline/<name>.py`` (``awr``, ``iql``, ``cql``, ``calql``, ``rc``, ``recap``,
``arfm``, ``dpo``) defines

- ``Config``: a dataclass extending :class:`~rlvla.algos.offline.base.OfflineConfig` with only its own fields
  (``algo=awr algo.cql_alpha=5`` is an error naming awr's keys);
- ``loss(algo, batch, step) -> (loss, metrics)``: its objective, from the shared pieces in :mod:`.base` and the
  math in :mod:`.core`;
- ``configure(pcfg, cfg) -> pcfg``: what it needs of the policy (a Q ensemble, a value target, a condition token);
- optionally ``Q = True`` (a Q ensemble with a Polyak target), ``NEEDS_REFERENCE = True`` (a frozen ``init``
  policy, as DPO), ``deployment_condition(cfg, data)`` (a conditioned policy's test-time input).

The update (one AdamW step, schedule, target) is :class:`~rlvla.algos.offline.base.OfflineRL`, shared.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

_SHARED = {"base", "core", "sft"}
_REGISTRY: dict = {}
CONFIGS: dict[str, type] = {}


def register_offline(module) -> None:
    name = module.Config.name
    if name in _REGISTRY and _REGISTRY[name] is not module:
        raise ValueError(f"offline algorithm {name!r} is already registered")
    _REGISTRY[name] = module
    CONFIGS[name] = module.Config


def method(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown offline algorithm {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


for _m in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in _SHARED):
    register_offline(importlib.import_module(f"rlvla.algos.offline.{_m}"))

ALGOS = tuple(CONFIGS)

__all__ = ["ALGOS", "CONFIGS", "method", "register_offline"]
