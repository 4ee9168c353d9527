"""CQL (Kumar et al. 2020): Q by TD to min Q_target(s', a' ~ pi) plus the CQL(H) penalty over policy and uniform
chunks; A = min Q(s, a) - mean_j min Q(s, a_j ~ pi), extracted by advantage-weighted behaviour cloning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rlvla.algos.offline import core as off
from rlvla.algos.offline.base import OfflineConfig, OnlineFields, QFields, WeightFields, _f, q_td, value_target, weighted_bc

Q = True


@dataclass
class Config(OnlineFields, QFields, WeightFields, OfflineConfig):
    name: str = "cql"
    cql_alpha: float = 0.5
    cql_samples: int = 4
    """Policy chunks and uniform chunks per state in the penalty (each)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_weights()
        self.check_q()
        self.check_online()
        if self.cql_samples < 1:
            raise ValueError("algo.cql_samples must be >= 1")


def configure(pcfg, cfg):
    return value_target(dataclasses.replace(pcfg, critic=cfg.critic), "mc")


def loss(algo, batch, step, calibrated: bool = False):
    """``calibrated``: Cal-QL's lower bound on the policy chunks' Q (the Monte-Carlo return)."""
    c, p, m = algo.cfg, algo.policy, {}
    z, zv = p.encode(batch)

    def bootstrap(zn, zvn):
        a_next, _, _ = p.head.sample(zn, with_log_prob=False)
        return algo.target(zvn, a_next.flatten(1)).min(0).values

    q, td = q_td(algo, batch, zv, bootstrap, m)
    actions = batch["action"]
    b, n = actions.shape[0], c.cql_samples
    with torch.no_grad():
        zr = z.detach().repeat_interleave(n, 0)
        a_pi, _, _ = p.head.sample(zr, with_log_prob=False)
    a_unif = torch.rand(b * n, *actions.shape[1:], device=actions.device) * 2 - 1
    zvr = zv.repeat_interleave(n, 0)
    q_pi = p.q_values(zvr, a_pi).reshape(-1, b, n)
    q_unif = p.q_values(zvr, a_unif).reshape(-1, b, n)
    if calibrated:
        bound = batch["mc_return"]
        m["calql_bound_frac"] = _f((q_pi < bound[None, :, None]).float().mean())
        q_pi = torch.stack([off.calql_lower_bound(qi, bound) for qi in q_pi])
    sampled = torch.cat([q_pi, q_unif], -1)
    pen = sum(off.cql_penalty(q[i], sampled[i]) for i in range(q.shape[0]))
    _, vloss = algo._value_loss(zv, batch)  # V(s) of the data (Monte-Carlo): progress estimates at test time
    m["value_loss"] = _f(vloss)
    with torch.no_grad():
        adv = q.min(0).values - q_pi.min(0).values.mean(-1)
    m.update(cql_penalty=_f(pen), q_pi_mean=_f(q_pi.mean()), q_unif_mean=_f(q_unif.mean()))
    return weighted_bc(algo, batch, z, adv, td + c.cql_alpha * pen + vloss, m)
