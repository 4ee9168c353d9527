"""Cal-QL (Nakamoto et al. 2023): CQL with the policy chunks' Q clipped from below by the Monte-Carlo return, so
offline values are calibrated for fine-tuning online."""

from __future__ import annotations

from dataclasses import dataclass

from rlvla.algos.offline import cql

Q = True


@dataclass
class Config(cql.Config):
    name: str = "calql"


configure = cql.configure


def loss(algo, batch, step):
    return cql.loss(algo, batch, step, calibrated=True)
