"""Offline RL algorithms on chunk transitions (:mod:`rlvla.data.offline`), for every action head.

The loop they serve (``rlvla train algo=<name> data.path=...``, the same loop as SFT)::

    algo = OfflineRL(policy, cfg, loop, data)
    for step in range(start, loop.steps):
        metrics = algo.update(data.batch(data.indices(step, B, seed)), step)   # NonFiniteLossError on NaN/inf

One shared trunk: the action readout ``z`` feeds the action head, the value readout ``zv`` the value head V(s) and,
for the Q-learning methods, a Q ensemble over action chunks Q_i(s, a[i:i+K]). Policy extraction is
advantage-weighted behaviour cloning on the head's own loss (so it works for token, diffusion, flow and Gaussian
heads alike); what differs is where the advantage comes from:

========  =====================================================================================================
awr       A = G_mc - V(s); V regressed on Monte-Carlo returns; weights min(exp(A / beta), max_weight) (Peng 2019)
iql       V by expectile regression on min_i Q_target(s, a); Q by TD to r + gamma^K V(s'); A = Q - V (Kostrikov 2022)
cql       Q by TD to min Q_target(s', a' ~ pi) plus the CQL(H) penalty over policy and uniform chunks (Kumar 2020);
          A = min Q(s, a) - mean_j min Q(s, a_j ~ pi)
calql     cql with the policy chunks' Q clipped from below by the Monte-Carlo return (Nakamoto 2023)
rc        return-conditioned BC: the return-to-go is an input token (Decision Transformer / ReinboT); at test
          time the policy is conditioned on a high target return
recap     advantage-conditioned BC (pi*0.6's RECAP): V on Monte-Carlo returns, the indicator 1[G_mc - V > eps]
          is an input token, dropped with probability ``cond_dropout``; at test time conditioned on "better"
arfm      advantage-weighted flow matching (ARFM style): batch-normalised weights exp(alpha * A_hat) with alpha
          set per batch so the effective sample size stays at ``ess`` of the batch (flow and diffusion heads)
dpo       DPO on (successful, failed) trajectory pairs of one task against the frozen initial policy; trajectory
          log-likelihoods are sums over sampled frames (exact for token/Gaussian heads, the denoising-error
          surrogate of Diffusion-DPO for flow/diffusion heads)
========  =====================================================================================================
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvla.algos.offline import core as off
from rlvla.algos.optim import load_optimizer_tensors, make_adamw, optimizer_tensors, warmup_cosine
from rlvla.data.schema import IMAGE_PREFIX, Batch
from rlvla.errors import NonFiniteLossError

ALGOS = ("awr", "iql", "cql", "calql", "rc", "recap", "arfm", "dpo")
Q_ALGOS = ("iql", "cql", "calql")


@dataclass
class OfflineConfig:
    """Shared settings of the offline algorithms (``algo.*``; the loop - steps, batch size, lr - is ``train.*``)."""

    name: str = "iql"
    reward: str = "sparse"
    """A registered step reward (:mod:`rlvla.rewards`): ``sparse`` (1 at the first successful step), ``dense`` (the
    suite's shaped reward / its scale), or one you register."""
    gamma: float = 0.99
    """Per-step discount (a chunk of K steps is discounted by gamma^K)."""
    files_in_memory: int = 2
    """Data files whose images are held in memory at once (streaming; all files when the dataset is small)."""
    beta: float = 0.5
    """Temperature of the advantage weights exp(A / beta)."""
    max_weight: float = 20.0
    value_coef: float = 1.0
    """Weight of the value / Q losses in the shared-trunk objective."""
    critic: int = 2
    """Q ensemble size (iql, cql, calql)."""
    expectile: float = 0.7
    """IQL's tau."""
    target_ema: float = 0.05
    """Polyak rate of the target Q ensemble (faster than online RL's usual 0.005: a sparse success reward has to
    propagate back over ~30 decisions within a few thousand steps)."""
    cql_alpha: float = 0.5
    cql_samples: int = 4
    """Policy chunks and uniform chunks per state in the CQL penalty (each)."""
    cond_dropout: float = 0.3
    """rc / recap: probability of dropping the conditioning input in training (classifier-free style)."""
    threshold: float = 0.0
    """recap: the indicator is 1[A > threshold]."""
    cond_gamma: float = 1.0
    """rc: discount of the conditioning return-to-go (1: undiscounted; with sparse rewards, the episode's outcome)."""
    ess: float = 0.5
    """arfm: target effective sample size of the weights, as a fraction of the batch."""
    dpo_beta: float = 0.1
    dpo_pairs: int = 4
    dpo_frames: int = 8
    """dpo: trajectory pairs per step and frames scored per trajectory."""
    dpo_bc_coef: float = 0.0
    """dpo: behaviour cloning on the chosen frames added to the DPO loss (0: pure DPO)."""
    online_iterations: int = 0
    """Offline-to-online (RLPD-style mixed batches, needs ``init``: an offline run): rollout + update iterations;
    0 = offline only."""
    online_episodes_per_task: int = 2
    online_updates: int = 40
    """Gradient steps per online iteration."""
    online_ratio: float = 0.5
    """Fraction of each batch drawn from the online replay buffer (the rest from the offline dataset)."""
    online_lr: float = 1e-4
    online_buffer: int = 20000
    """Replay buffer capacity in decisions."""
    online_max_steps: int = 200

    def __post_init__(self) -> None:
        if self.name not in ALGOS:
            raise ValueError(f"unknown offline algorithm {self.name!r}; valid: {', '.join(ALGOS)}")
        from rlvla.rewards import get_reward

        get_reward(self.reward)  # a registered step reward (rlvla.rewards), e.g. sparse or dense
        if not 0 < self.gamma <= 1 or not 0 < self.cond_gamma <= 1:
            raise ValueError(f"algo.gamma and algo.cond_gamma must be in (0, 1], got {self.gamma}, {self.cond_gamma}")
        if self.beta <= 0 or self.max_weight <= 0 or self.dpo_beta <= 0:
            raise ValueError("algo.beta, algo.max_weight and algo.dpo_beta must be > 0")
        if not 0 < self.expectile < 1:
            raise ValueError(f"algo.expectile must be in (0, 1), got {self.expectile}")
        if self.name in Q_ALGOS and self.critic < 1:
            raise ValueError(f"{self.name} needs algo.critic >= 1 Q networks, got {self.critic}")
        if not 0 <= self.cond_dropout < 1 or not 0 < self.ess <= 1 or not 0 < self.target_ema <= 1:
            raise ValueError("algo.cond_dropout must be in [0, 1), algo.ess and algo.target_ema in (0, 1]")
        if self.online_iterations < 0 or min(self.online_episodes_per_task, self.online_updates, self.online_buffer) < 1 \
                or not 0 < self.online_ratio < 1 or self.online_lr <= 0:
            raise ValueError("algo.online_*: iterations >= 0, episodes_per_task/updates/buffer >= 1, ratio in (0, 1), lr > 0")
        if self.online_iterations and self.name in ("dpo", "rc", "recap"):
            raise ValueError(f"offline-to-online supports awr, iql, cql, calql and arfm, not {self.name}")
        if self.cql_samples < 1 or self.dpo_pairs < 1 or self.dpo_frames < 1 or self.files_in_memory < 1:
            raise ValueError("algo.cql_samples, dpo_pairs, dpo_frames and files_in_memory must be >= 1")


@dataclass
class AWRConfig(OfflineConfig):
    name: str = "awr"


@dataclass
class IQLConfig(OfflineConfig):
    name: str = "iql"


@dataclass
class CQLConfig(OfflineConfig):
    name: str = "cql"


@dataclass
class CalQLConfig(OfflineConfig):
    name: str = "calql"


@dataclass
class RCConfig(OfflineConfig):
    name: str = "rc"


@dataclass
class RECAPConfig(OfflineConfig):
    name: str = "recap"


@dataclass
class ARFMConfig(OfflineConfig):
    name: str = "arfm"


@dataclass
class DPOConfig(OfflineConfig):
    name: str = "dpo"


CONFIGS = {"awr": AWRConfig, "iql": IQLConfig, "cql": CQLConfig, "calql": CalQLConfig, "rc": RCConfig,
           "recap": RECAPConfig, "arfm": ARFMConfig, "dpo": DPOConfig}  # fmt: skip


def configure_policy(pcfg, cfg: OfflineConfig):
    """The policy config an algorithm trains: a Q ensemble for iql/cql/calql, a conditioning token for rc/recap."""
    import dataclasses

    from rlvla.policies.config import ConditionConfig

    if cfg.name in Q_ALGOS:
        pcfg = dataclasses.replace(pcfg, critic=cfg.critic)
    if cfg.name != "dpo":
        pcfg = dataclasses.replace(pcfg, value_target="expectile" if cfg.name == "iql" else "mc")
    if cfg.name == "rc":
        pcfg = dataclasses.replace(pcfg, condition=ConditionConfig("return", cfg.cond_dropout, 1.0))
    if cfg.name == "recap":
        pcfg = dataclasses.replace(pcfg, condition=ConditionConfig("advantage", cfg.cond_dropout, 1.0))
    if cfg.name == "arfm" and pcfg.head.name not in ("flow", "diffusion"):
        raise ValueError(f"arfm (advantage-weighted flow matching) needs a flow or diffusion head, not {pcfg.head.name!r}; "
                         "use awr for other heads")  # fmt: skip
    return pcfg


def _f(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def next_obs(batch: Batch) -> Batch:
    """The observation after each sample's chunk, as a batch the policy can encode."""
    b = Batch({k[len("next."):]: v for k, v in batch.items() if k.startswith("next." + IMAGE_PREFIX)})
    b["observation.state"] = batch["next.observation.state"]
    b["task"] = batch["task"]
    return b


def with_condition(batch: Batch, cond: torch.Tensor) -> Batch:
    b = Batch(batch)
    b["condition"] = cond
    return b


def arfm_weights(adv: torch.Tensor, ess: float, iters: int = 30) -> tuple[torch.Tensor, float]:
    """Weights ``exp(alpha * A_hat)`` normalised to mean 1, ``A_hat = A / std(A)``, with alpha >= 0 found by
    bisection so that the effective sample size ``(sum w)^2 / sum w^2`` is ``ess`` of the batch (alpha = 0 gives
    plain flow matching). -> (weights (B,), alpha)."""
    a = adv.detach()
    a = (a - a.mean()) / a.std().clamp_min(1e-6) if a.numel() > 1 else a * 0

    def frac(alpha: float) -> float:
        w = torch.softmax(alpha * a, 0)
        return float(1.0 / (w**2).sum() / a.numel())

    lo, hi = 0.0, 20.0
    if ess >= 1.0:
        hi = 0.0
    elif frac(hi) >= ess:
        lo = hi
    else:
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if frac(mid) >= ess else (lo, mid)
    w = torch.softmax(lo * a, 0) * a.numel()
    return w, lo


class OfflineRL:
    def __init__(self, policy, cfg: OfflineConfig, loop, data, reference=None) -> None:
        self.policy, self.cfg, self.loop, self.data = policy, cfg, loop, data
        self.opt = make_adamw(policy.parameters(), loop.lr, loop.weight_decay)
        self.target = None
        if cfg.name in Q_ALGOS:
            self.target = copy.deepcopy(policy.q_head).requires_grad_(False)
        self.reference = reference
        if cfg.name == "dpo":
            if reference is None:
                raise ValueError("dpo needs a reference policy: pass init=<an SFT policy or run>")
            self.reference.eval().requires_grad_(False)

    # ------------------------------------------------------------------ losses
    def _value_loss(self, zv, batch):
        v = self.policy.value_head(zv)[:, 0]
        return v, F.mse_loss(v, batch["mc_return"])

    def _weights(self, adv: torch.Tensor, metrics: dict) -> torch.Tensor:
        w = off.awr_weights(adv, self.cfg.beta, self.cfg.max_weight)
        metrics.update(adv_mean=_f(adv.mean()), adv_std=_f(adv.std()) if adv.numel() > 1 else 0.0,
                       weight_mean=_f(w.mean()), weight_ess=_f(w.sum() ** 2 / (w**2).sum() / w.numel()))  # fmt: skip
        return w

    def loss(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict]:
        c, p = self.cfg, self.policy
        m: dict = {}
        if c.name == "dpo":
            return self._dpo(step)
        if c.name == "rc":
            cond = batch["cond_return"].clone()
            cond[torch.rand(len(cond), device=cond.device) < c.cond_dropout] = float("nan")
            bc, bm = p.bc_loss(with_condition(batch, cond))
            return bc, {**bm}
        if c.name == "recap":
            nan = torch.full((len(batch["mc_return"]),), float("nan"), device=batch["mc_return"].device)
            _, zv = p.encode(with_condition(batch, nan))  # V(s) is unconditioned
            v, vloss = self._value_loss(zv, batch)
            adv = (batch["mc_return"] - v).detach()
            ind = off.advantage_indicator(adv, c.threshold).float()
            cond = ind.clone()
            cond[torch.rand(len(cond), device=cond.device) < c.cond_dropout] = float("nan")
            bc, bm = p.bc_loss(with_condition(batch, cond))
            m.update(bm, value_loss=_f(vloss), positive_frac=_f(ind.mean()), v_mean=_f(v.mean()))
            return bc + c.value_coef * vloss, m
        z, zv = p.encode(batch)
        if c.name in ("awr", "arfm"):
            v, vloss = self._value_loss(zv, batch)
            adv = (batch["mc_return"] - v).detach()
            if c.name == "awr":
                w = self._weights(adv, m)
            else:
                w, alpha = arfm_weights(adv, c.ess)
                m.update(alpha=alpha, weight_max=_f(w.max()))
            bc, bm = p.bc_loss(batch, weights=w, z=z)
            m.update(bm, value_loss=_f(vloss), v_mean=_f(v.mean()))
            return bc + c.value_coef * vloss, m
        # ---- Q-learning methods: iql, cql, calql
        actions = batch["action"]
        q = p.q_values(zv, actions)  # (n, B)
        with torch.no_grad():
            zn, zvn = p.encode(next_obs(batch))
            notdone = (~batch["chunk_done"]).float()
            if c.name == "iql":
                boot = p.value_head(zvn)[:, 0]
            else:
                a_next, _, _ = p.head.sample(zn, with_log_prob=False)
                boot = self.target(zvn, a_next.flatten(1)).min(0).values
            target_q = batch["chunk_reward"] + batch["discount"] * notdone * boot
        td = F.mse_loss(q, target_q.expand_as(q))
        m.update(q_mean=_f(q.mean()), td_loss=_f(td), target_mean=_f(target_q.mean()))
        if c.name == "iql":
            with torch.no_grad():
                q_t = self.target(zv.detach(), actions.flatten(1)).min(0).values
            v = p.value_head(zv)[:, 0]
            vloss = off.expectile_loss(q_t - v, c.expectile)
            adv = (q_t - v).detach()
            critic = td + vloss
            m.update(value_loss=_f(vloss), v_mean=_f(v.mean()))
        else:
            b, n = actions.shape[0], c.cql_samples
            with torch.no_grad():
                zr = z.detach().repeat_interleave(n, 0)
                a_pi, _, _ = p.head.sample(zr, with_log_prob=False)
            a_unif = torch.rand(b * n, *actions.shape[1:], device=actions.device) * 2 - 1
            zvr = zv.repeat_interleave(n, 0)
            q_pi = p.q_values(zvr, a_pi).reshape(-1, b, n)
            q_unif = p.q_values(zvr, a_unif).reshape(-1, b, n)
            if c.name == "calql":
                bound = batch["mc_return"]
                m["calql_bound_frac"] = _f((q_pi < bound[None, :, None]).float().mean())
                q_pi = torch.stack([off.calql_lower_bound(qi, bound) for qi in q_pi])
            sampled = torch.cat([q_pi, q_unif], -1)
            pen = sum(off.cql_penalty(q[i], sampled[i]) for i in range(q.shape[0]))
            _, vloss = self._value_loss(zv, batch)  # V(s) of the data (Monte-Carlo): progress estimates at test time
            critic = td + c.cql_alpha * pen + vloss
            m["value_loss"] = _f(vloss)
            with torch.no_grad():
                adv = q.min(0).values - q_pi.min(0).values.mean(-1)
            m.update(cql_penalty=_f(pen), q_pi_mean=_f(q_pi.mean()), q_unif_mean=_f(q_unif.mean()))
        w = self._weights(adv, m)
        bc, bm = p.bc_loss(batch, weights=w, z=z)
        m.update(bm)
        return bc + c.value_coef * critic, m

    def _dpo(self, step: int):
        c, p = self.cfg, self.policy
        got = self.data.pairs(step, c.dpo_pairs, c.dpo_frames, self.loop.seed)
        if got is None:
            raise ValueError("dpo found no task with both successful and failed episodes in the loaded data files; "
                             "collect mixed-quality data (rlvla collect --failure-prob 0.3 ...) or raise "
                             "algo.files_in_memory so that both outcomes are in memory together")  # fmt: skip
        chosen, rejected, frames = got
        chosen, rejected = chosen.to(p.device), rejected.to(p.device)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())

        def traj_ll(model, batch):
            with torch.random.fork_rng():
                torch.manual_seed(seed)  # the same (time, noise) draws for the policy and its reference
                ll = model.likelihood(batch)
            return ll.reshape(-1, frames).sum(1)

        lc, lr = traj_ll(p, chosen), traj_ll(p, rejected)
        with torch.no_grad():
            rc, rr = traj_ll(self.reference, chosen), traj_ll(self.reference, rejected)
        loss, info = off.dpo_loss(lc, lr, rc, rr, c.dpo_beta)
        m = {"dpo_loss": _f(loss), **info, "logp_chosen": _f(lc.mean()), "logp_rejected": _f(lr.mean())}
        if c.dpo_bc_coef > 0:
            bc, _ = p.bc_loss(chosen)
            loss = loss + c.dpo_bc_coef * bc
            m["bc_loss"] = _f(bc)
        return loss, m

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, step: int, lr: float | None = None) -> dict:
        """One gradient step; ``lr`` overrides the warm-up + cosine schedule (the online phase uses a constant one)."""
        # DPO scores the policy and its reference alike: no augmentation (eval mode) so both see the same images
        self.policy.train(self.cfg.name != "dpo")
        if lr is None:
            lr = self.loop.lr * warmup_cosine(step, self.loop.steps, self.loop.warmup_steps)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss, metrics = self.loss(batch.to(self.policy.device), step)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"{self.cfg.name} loss is {float(loss.detach())} at step {step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [q for q in self.policy.parameters() if q.grad is not None]
        clip = self.loop.grad_clip if self.loop.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(gnorm):
            raise NonFiniteLossError(f"gradient norm is {float(gnorm)} at step {step}")
        self.opt.step()
        if self.target is not None:
            with torch.no_grad():
                for t, s in zip(self.target.parameters(), self.policy.q_head.parameters()):
                    t.lerp_(s, self.cfg.target_ema)
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float(gnorm), "lr": lr}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = optimizer_tensors(self.opt)
        if self.target is not None:
            tensors.update({f"target.{k}": v.detach().clone() for k, v in self.target.state_dict().items()})
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        load_optimizer_tensors(self.opt, {k: v for k, v in tensors.items() if not k.startswith("target.")}, meta)
        if self.target is not None:
            self.target.load_state_dict({k[len("target."):]: v for k, v in tensors.items() if k.startswith("target.")})


def deployment_condition(cfg: OfflineConfig, data) -> float:
    """The conditioning input used at test time: for ``rc``, the 90th percentile of the data's initial
    returns-to-go (with sparse rewards and cond_gamma 1: success); for ``recap``, 1 (the "better" indicator)."""
    import numpy as np

    if cfg.name == "rc":
        return float(np.quantile(data.cond_return[data.episode_starts], 0.9))
    return 1.0


