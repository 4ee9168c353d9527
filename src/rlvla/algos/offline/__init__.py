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

from rlvla.registry import Registry

_REGISTRY = Registry("offline algorithm", __name__, shared={"base", "core", "sft"})
CONFIGS: dict[str, type] = _REGISTRY.configs
register_offline = _REGISTRY.register
method = _REGISTRY.get
_REGISTRY.discover()
ALGOS = tuple(CONFIGS)

__all__ = ["ALGOS", "CONFIGS", "method", "register_offline"]
