"""Collectors: run a policy in environments and hand back episodes.

- :class:`RolloutEngine` (:mod:`.rollout`): RL rollouts on training seeds, with group sampling, dynamic sampling,
  layout replay and the inference/simulation overlap; returns a :class:`Rollout` (a decision batch + episodes).
- :func:`evaluate` (:mod:`.evaluate`): paired evaluation episodes on named splits and seeds, with success
  intervals, latency and GIFs; test-time selectors plug in per decision.

Both run their episodes through one scheduler (:class:`Lanes`, :mod:`.scheduler`) over an
:class:`~rlvla.envs.pool.EnvPool`; a collector that runs elsewhere (Ray actors, a learned world model) is another
pool behind the same scheduler. Collectors sit above ``algos``/``policies``/``envs``
and below ``runners`` (ARCHITECTURE.md).
"""

from rlvla.collectors.evaluate import evaluate, torch_threads
from rlvla.collectors.rollout import Episode, Rollout, RolloutEngine, RolloutSettings
from rlvla.collectors.scheduler import Lanes, RolloutInterrupted

__all__ = ["Episode", "Lanes", "Rollout", "RolloutEngine", "RolloutInterrupted", "RolloutSettings", "evaluate", "torch_threads"]
