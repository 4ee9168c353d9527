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


@dataclass
class OfflineConfig:
    """Settings every offline method has (``algo.*``; the loop - steps, batch size, lr - is ``train.*``). Each method
    (``algos/offline/<name>.py``) extends it with only its own fields."""

    name: str = "iql"
    reward: str = "sparse"
    """A registered step reward (:mod:`rlvla.rewards`): ``sparse`` (1 at the first successful step), ``dense`` (the
    suite's shaped reward / its scale), or one you register."""
    gamma: float = 0.99
    """Per-step discount (a chunk of K steps is discounted by gamma^K)."""
    files_in_memory: int = 2
    """Data files whose images are held in memory at once (streaming; all files when the dataset is small)."""
    value_coef: float = 1.0
    """Weight of the value / Q losses in the shared-trunk objective."""

    def __post_init__(self) -> None:
        from rlvla.rewards import get_reward

        get_reward(self.reward)  # a registered step reward (rlvla.rewards), e.g. sparse or dense
        if not 0 < self.gamma <= 1:
            raise ValueError(f"algo.gamma must be in (0, 1], got {self.gamma}")
        if self.files_in_memory < 1:
            raise ValueError("algo.files_in_memory must be >= 1")


@dataclass
class WeightFields:
    """Advantage-weighted extraction (awr, iql, cql, calql)."""

    beta: float = 0.5
    """Temperature of the advantage weights exp(A / beta)."""
    max_weight: float = 20.0

    def check_weights(self) -> None:
        if self.beta <= 0 or self.max_weight <= 0:
            raise ValueError("algo.beta and algo.max_weight must be > 0")


@dataclass
class QFields:
    """A Q ensemble with a Polyak target (iql, cql, calql)."""

    critic: int = 2
    """Q ensemble size."""
    target_ema: float = 0.05
    """Polyak rate of the target Q ensemble (faster than online RL's usual 0.005: a sparse success reward has to
    propagate back over ~30 decisions within a few thousand steps)."""

    def check_q(self) -> None:
        if self.critic < 1:
            raise ValueError(f"{self.name} needs algo.critic >= 1 Q networks, got {self.critic}")
        if not 0 < self.target_ema <= 1:
            raise ValueError("algo.target_ema must be in (0, 1]")


@dataclass
class OnlineFields:
    """Offline-to-online (RLPD-style mixed batches; awr, iql, cql, calql, arfm)."""

    online_iterations: int = 0
    """Rollout + update iterations after the offline phase (needs ``init``: an offline run); 0 = offline only."""
    online_episodes_per_task: int = 2
    online_updates: int = 40
    """Gradient steps per online iteration."""
    online_ratio: float = 0.5
    """Fraction of each batch drawn from the online replay buffer (the rest from the offline dataset)."""
    online_lr: float = 1e-4
    online_buffer: int = 20000
    """Replay buffer capacity in decisions."""
    online_max_steps: int = 200

    def check_online(self) -> None:
        if self.online_iterations < 0 or min(self.online_episodes_per_task, self.online_updates, self.online_buffer) < 1 \
                or not 0 < self.online_ratio < 1 or self.online_lr <= 0:
            raise ValueError("algo.online_*: iterations >= 0, episodes_per_task/updates/buffer >= 1, ratio in (0, 1), lr > 0")


@dataclass
class ConditionFields:
    """Conditioned behaviour cloning (rc, recap)."""

    cond_dropout: float = 0.3
    """Probability of dropping the conditioning input in training (classifier-free style)."""

    def check_condition(self) -> None:
        if not 0 <= self.cond_dropout < 1:
            raise ValueError("algo.cond_dropout must be in [0, 1)")


def configure_policy(pcfg, cfg: OfflineConfig):
    """The policy config a method trains: a Q ensemble, a value target, a conditioning token (its ``configure``)."""
    from rlvla.algos.offline import method

    return method(cfg.name).configure(pcfg, cfg)


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
    """The shared update of every offline method: its ``loss`` (``algos/offline/<name>.py``), one AdamW step with
    the warm-up + cosine schedule, the Polyak target of a Q ensemble."""

    def __init__(self, policy, cfg: OfflineConfig, loop, data, reference=None) -> None:
        from rlvla.algos.offline import method

        self.policy, self.cfg, self.loop, self.data = policy, cfg, loop, data
        self.method = method(cfg.name)
        self.opt = make_adamw(policy.parameters(), loop.lr, loop.weight_decay)
        self.target = copy.deepcopy(policy.q_head).requires_grad_(False) if getattr(self.method, "Q", False) else None
        self.reference = reference
        if getattr(self.method, "NEEDS_REFERENCE", False):
            if reference is None:
                raise ValueError(f"{cfg.name} needs a reference policy: pass init=<an SFT policy or run>")
            self.reference.eval().requires_grad_(False)

    # ------------------------------------------------------------------ shared pieces of the losses
    def _value_loss(self, zv, batch):
        v = self.policy.value_head(zv)[:, 0]
        return v, F.mse_loss(v, batch["mc_return"])

    def _weights(self, adv: torch.Tensor, metrics: dict) -> torch.Tensor:
        w = off.awr_weights(adv, self.cfg.beta, self.cfg.max_weight)
        metrics.update(adv_mean=_f(adv.mean()), adv_std=_f(adv.std()) if adv.numel() > 1 else 0.0,
                       weight_mean=_f(w.mean()), weight_ess=_f(w.sum() ** 2 / (w**2).sum() / w.numel()))  # fmt: skip
        return w

    def loss(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict]:
        return self.method.loss(self, batch, step)

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch, step: int, lr: float | None = None) -> dict:
        """One gradient step; ``lr`` overrides the warm-up + cosine schedule (the online phase uses a constant one)."""
        # a method that scores the policy against its reference (DPO) trains in eval mode: both see the same images
        self.policy.train(not getattr(self.method, "NEEDS_REFERENCE", False))
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
    """The conditioning input used at test time: a conditioned method's ``deployment_condition``; 1 otherwise (a
    method continuing a conditioned ``init`` policy keeps asking it for "better")."""
    from rlvla.algos.offline import method

    fn = getattr(method(cfg.name), "deployment_condition", None)
    return 1.0 if fn is None else fn(cfg, data)


def mc_advantage(algo, batch: Batch, zv, m: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """V(s) regressed on Monte-Carlo returns; -> (advantage G_mc - V, detached; the value loss)."""
    v, vloss = algo._value_loss(zv, batch)
    m.update(value_loss=_f(vloss), v_mean=_f(v.mean()))
    return (batch["mc_return"] - v).detach(), vloss


def q_td(algo, batch: Batch, zv, bootstrap, m: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q ensemble's TD loss to ``r + gamma^K * bootstrap(next readouts)`` (nothing past the episode's end);
    -> (Q values (n, B), TD loss)."""
    p = algo.policy
    q = p.q_values(zv, batch["action"])  # (n, B)
    with torch.no_grad():
        zn, zvn = p.encode(next_obs(batch))
        notdone = (~batch["chunk_done"]).float()
        target_q = batch["chunk_reward"] + batch["discount"] * notdone * bootstrap(zn, zvn)
    td = F.mse_loss(q, target_q.expand_as(q))
    m.update(q_mean=_f(q.mean()), td_loss=_f(td), target_mean=_f(target_q.mean()))
    return q, td


def weighted_bc(algo, batch: Batch, z, adv: torch.Tensor, critic: torch.Tensor, m: dict) -> tuple[torch.Tensor, dict]:
    """Advantage-weighted behaviour cloning on the head's own loss, plus the critic's loss at ``value_coef``."""
    w = algo._weights(adv, m)
    bc, bm = algo.policy.bc_loss(batch, weights=w, z=z)
    m.update(bm)
    return bc + algo.cfg.value_coef * critic, m


def value_target(pcfg, kind: str):
    import dataclasses

    return dataclasses.replace(pcfg, value_target=kind)
