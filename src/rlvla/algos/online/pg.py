"""Online policy-gradient algorithms for every action head: PPO, GRPO, RLOO, REINFORCE++.

They share one update (the clipped surrogate of :mod:`rlvla.algos.core`, epochs x minibatches, optional KL to a
frozen reference policy and an entropy bonus) and differ in the advantage:

=============  ================================================================  ===========
algo           advantage of a decision                                           value head
=============  ================================================================  ===========
ppo            GAE on per-decision rewards, normalised per task                  trained
grpo           episode success vs its group (same layout seed), / group std     unused
rloo           episode success minus the mean of the other episodes in group    unused
reinforce_pp   discounted return-to-go, normalised over the batch               unused
=============  ================================================================  ===========

Log-prob levels (``level``): ``token`` (one ratio per action element, or per token of the token head),
``action`` (per action of the chunk) or ``chunk``. Updates run in eval mode (no image augmentation or dropout),
so at the first minibatch the ratio is exactly 1 (``ratio_error0`` in the metrics checks it).

The loop it serves::

    algo = PolicyGradient(policy, cfg)
    ro = engine.collect(it, need_values=algo.uses_value)
    metrics = algo.update(ro, it)        # raises NonFiniteLossError on NaN/inf advantages, losses or gradients
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlvla.algos import core
from rlvla.algos.offline.sft import NonFiniteLossError
from rlvla.algos.optim import load_optimizer_tensors, make_adamw, optimizer_tensors
from rlvla.data.schema import Batch

ALGOS = ("ppo", "grpo", "rloo", "reinforce_pp")


@dataclass
class OnlineConfig:
    """Shared settings of the online algorithms (``algo.*`` in ``rlvla train``)."""

    name: str = "grpo"
    iterations: int = 20
    """Rollout + update iterations."""
    lr: float = 5e-5
    """Learning rate (constant)."""
    epochs: int = 2
    """Passes over each iteration's rollouts."""
    minibatch: int = 128
    """Decisions per gradient step."""
    level: str = "token"
    """Log-prob level of the ratio: token, action or chunk."""
    clip_low: float = 0.2
    clip_high: float = 0.28
    """Clip-higher (DAPO): ratio clipped to [1 - clip_low, 1 + clip_high]."""
    dual_clip: float = 3.0
    """Dual clip for negative advantages (0: off)."""
    kl_coef: float = 0.0
    """Weight of the KL to the initial (reference) policy; 0 skips the reference pass."""
    kl_estimator: str = "k3"
    ent_coef: float = 0.0
    target_kl: float = 0.0
    """Stop an iteration's remaining minibatches once a minibatch's approx KL (old || new, mean over the ratio's
    elements) exceeds this (0: off)."""
    explore_noise: float = 0.0
    """Exploration noise of the chain heads during RL (0: the policy's own): flow-SDE ``noise_level``, diffusion
    ``min_std``. It is written into the policy's config, so the RL checkpoint records it; deterministic sampling
    (evaluation) does not use it."""
    freeze_backbone: bool = False
    """Train only the action and value heads: the backbone's readouts are computed once per iteration (fast), and
    the SFT representation cannot drift."""
    vf_coef: float = 0.5
    vf_clip: float = 0.2
    """PPO value-loss clip (0: unclipped)."""
    gamma: float = 0.99
    lam: float = 0.95
    advantage_norm: str = "task"
    """PPO: normalise advantages per ``task`` (each task's mean 0, std 1: one task's reward scale cannot drown the
    others), over the ``batch``, per ``minibatch`` (as SB3) or ``none``."""
    normalize_std: bool = True
    """GRPO: divide by the group's std (false: Dr. GRPO)."""
    group_size: int = 8
    """Rollouts per initial state (layout seed)."""
    groups_per_task: int = 2
    """Groups per task per iteration."""
    envs_per_task: int = 2
    workers: int = -1
    """Env worker processes (-1: one per core; 0: in-process)."""
    max_steps: int = 200
    """Episode time limit in low-level env steps."""
    dynamic_sampling: bool = True
    """Drop groups that all succeeded or all failed and draw new ones (bounded by max_refill_rounds)."""
    max_refill_rounds: int = 2
    success_bonus: float = 1.0
    """Per-decision reward on the first success (ppo, reinforce_pp)."""
    shaping: float = 0.0
    """Weight of potential-based shaping with the env's dense reward / 10 as potential (ppo, reinforce_pp)."""
    env_reward: float = 0.0
    """Weight of the environment's own (dense) reward per decision (ppo, reinforce_pp)."""
    max_worker_restarts: int = 10
    ckpt_every: int = 1
    """Checkpoint every N iterations (and at the end or on Ctrl-C)."""
    tasks: list[str] = field(default_factory=list)
    """Tasks to train on (default: the initial policy's tasks). Always the ``id`` split on training seeds."""

    def __post_init__(self) -> None:
        if self.name not in ALGOS:
            raise ValueError(f"unknown online algo {self.name!r}; valid: {', '.join(ALGOS)}")
        if self.level not in ("token", "action", "chunk"):
            raise ValueError(f"unknown log-prob level {self.level!r}; valid: token, action, chunk")
        if self.advantage_norm not in ("task", "batch", "minibatch", "none"):
            raise ValueError(f"unknown advantage_norm {self.advantage_norm!r}; valid: task, batch, minibatch, none")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}; valid: k1, k3")
        if min(self.iterations, self.epochs, self.minibatch, self.group_size, self.groups_per_task, self.envs_per_task, self.max_steps, self.ckpt_every) < 1:
            raise ValueError("iterations, epochs, minibatch, group_size, groups_per_task, envs_per_task, max_steps, ckpt_every must be >= 1")
        if self.lr <= 0 or self.clip_low <= 0 or self.clip_high <= 0 or not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"need lr, clip_low, clip_high > 0 and gamma, lam in [0, 1] (got {self})")
        if self.explore_noise < 0:
            raise ValueError(f"explore_noise must be >= 0, got {self.explore_noise}")
        if self.dual_clip and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 or 0 (off), got {self.dual_clip}")
        if self.name in ("grpo", "rloo") and self.group_size < 2:
            raise ValueError(f"{self.name} needs group_size >= 2 (rollouts per initial state), got {self.group_size}")


@dataclass
class PPOConfig(OnlineConfig):
    name: str = "ppo"
    group_size: int = 1
    dynamic_sampling: bool = False
    clip_high: float = 0.2
    lr: float = 1e-4
    shaping: float = 0.5
    epochs: int = 4
    minibatch: int = 256


@dataclass
class GRPOConfig(OnlineConfig):
    name: str = "grpo"


@dataclass
class RLOOConfig(OnlineConfig):
    name: str = "rloo"


@dataclass
class ReinforcePPConfig(OnlineConfig):
    name: str = "reinforce_pp"
    dynamic_sampling: bool = False
    group_size: int = 1


def set_explore_noise(policy, noise: float) -> None:
    """Set the exploration noise of a flow-SDE or diffusion head in place (see ``OnlineConfig.explore_noise``)."""
    if noise <= 0:
        return
    head = getattr(policy.cfg, "head", None)
    name = getattr(head, "name", None)
    if name == "flow" and head.logprob == "sde":
        head.noise_level = noise
    elif name == "diffusion":
        head.min_std = noise
    else:
        raise ValueError(f"explore_noise applies to flow (logprob=sde) and diffusion heads, not {name!r}; set it to 0")
    policy.head.cfg = head


CONFIGS = {"ppo": PPOConfig, "grpo": GRPOConfig, "rloo": RLOOConfig, "reinforce_pp": ReinforcePPConfig}


def _finite(x: torch.Tensor, what: str, it: int) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteLossError(f"{what} has {bad} NaN/inf value(s) at iteration {it}")


def compute_advantages(batch, cfg: OnlineConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-> (advantages (N,), value targets (N,) or None) for the decisions of a rollout batch (episodes contiguous)."""
    r = batch["next.reward"].double()
    if cfg.name == "ppo":
        adv, ret = core.gae(r[:, None], batch["value"].double()[:, None], batch["next_value"].double()[:, None],
                            batch["next.terminated"][:, None], batch["next.done"][:, None], cfg.gamma, cfg.lam)  # fmt: skip
        adv, ret = adv[:, 0], ret[:, 0]
        if cfg.advantage_norm in ("none", "minibatch"):
            return adv.float(), ret.float()
        task = batch["task_id"] if cfg.advantage_norm == "task" else torch.zeros_like(batch["task_id"])
        out = torch.zeros_like(adv)
        for t in task.unique():  # per-task normalisation: one task's scale must not drown the others
            m = task == t
            a = adv[m]
            out[m] = (a - a.mean()) / (a.std(unbiased=False) + 1e-8) if a.numel() > 1 else a - a.mean()
        return out.float(), ret.float()
    if cfg.name == "reinforce_pp":
        ret = core.discounted_returns(r[:, None], batch["next.done"][:, None], cfg.gamma)[:, 0]
        return core.reinforce_pp_advantages(ret).float(), None
    # group methods: one score per episode, grouped by initial state
    ep = batch["episode_index"]
    first = torch.ones_like(ep, dtype=torch.bool)
    first[1:] = ep[1:] != ep[:-1]
    ep_group = batch["group_index"][first]
    ep_score = batch["score"][first].double()
    groups = ep_group.unique()
    sizes = {int((ep_group == g).sum()) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"{cfg.name} needs equal group sizes, got {sorted(sizes)}")
    order = torch.cat([torch.nonzero(ep_group == g)[:, 0] for g in groups])
    scores = ep_score[order].reshape(len(groups), -1)
    a = core.group_advantages(scores, cfg.normalize_std) if cfg.name == "grpo" else core.rloo_advantages(scores)
    ep_adv = torch.empty_like(ep_score)
    ep_adv[order] = a.reshape(-1)
    ep_of_step = torch.cumsum(first.long(), 0) - 1
    return ep_adv[ep_of_step].float(), None


class PolicyGradient:
    def __init__(self, policy, cfg: OnlineConfig, ref_policy=None, grad_clip: float = 1.0, weight_decay: float = 0.0,
                 seed: int = 0) -> None:  # fmt: skip
        self.policy = policy
        self.cfg = cfg
        self.ref = ref_policy
        if cfg.kl_coef > 0 and ref_policy is None:
            raise ValueError("kl_coef > 0 needs a reference policy")
        self.grad_clip = grad_clip
        self.seed = seed
        self.uses_value = cfg.name == "ppo"
        self.frozen = cfg.freeze_backbone and hasattr(policy, "backbone")
        params = [p for n, p in policy.named_parameters() if not (self.frozen and n.startswith("backbone."))]
        self.opt = make_adamw(params, cfg.lr, weight_decay)

    @torch.no_grad()
    def _features(self, ro) -> tuple[torch.Tensor, torch.Tensor]:
        zs, zvs = [], []
        for k in range(0, len(ro), 256):
            z, zv = self.policy.encode(ro.select(torch.arange(k, min(k + 256, len(ro)))))
            zs.append(z)
            zvs.append(zv)
        return torch.cat(zs), torch.cat(zvs)

    def update(self, ro, iteration: int) -> dict:
        cfg, policy = self.cfg, self.policy
        batch = ro.batch
        n = len(ro)
        if n == 0:
            return {"train/updates": 0}
        _finite(batch["next.reward"], "rewards", iteration)
        adv, returns = compute_advantages(batch, cfg)
        _finite(adv, "advantages", iteration)
        if returns is not None:
            _finite(returns, "value targets", iteration)
        policy.eval()  # no augmentation/dropout: the ratio is exactly 1 at the first minibatch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        sums: dict[str, float] = {}
        count = 0
        ratio_error0 = None
        feats = self._features(ro) if self.frozen else None
        extra_t = ro.extras()
        obs_keys = [key for key in batch if key.startswith("observation.") or key == "task"]
        stopped = False
        for _epoch in range(cfg.epochs):
            if stopped:
                break
            perm = torch.randperm(n, generator=gen)
            for k in range(0, n, cfg.minibatch):
                idx = perm[k : k + cfg.minibatch]
                extras = {key: v[idx] for key, v in extra_t.items()}
                actions = batch["action"][idx]
                mb = None
                if feats is None or self.ref is not None:
                    mb = Batch({key: ([batch["task"][i] for i in idx.tolist()] if key == "task" else batch[key][idx]) for key in obs_keys})
                if feats is not None:
                    logp, ent, value = policy.evaluate_features(feats[0][idx], feats[1][idx], actions, extras, level=cfg.level)
                else:
                    logp, ent, value = policy.evaluate(mb, actions, extras, level=cfg.level)
                old = batch["old_log_prob"][idx]
                a = adv[idx]
                if cfg.advantage_norm == "minibatch" and cfg.name == "ppo" and a.numel() > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                a = a.reshape(-1, *([1] * (logp.ndim - 1))).expand_as(logp)
                if ratio_error0 is None:
                    ratio_error0 = float((logp.detach() - old).abs().max())
                pi_loss, info = core.clipped_surrogate(logp, old, a, cfg.clip_low, cfg.clip_high, cfg.dual_clip or None)
                loss = pi_loss
                m = {"pi_loss": float(pi_loss.detach()), **info}
                if self.uses_value:
                    v_loss = core.clipped_value_loss(value, batch["value"][idx], returns[idx], cfg.vf_clip or None)
                    loss = loss + cfg.vf_coef * v_loss
                    m["value_loss"] = float(v_loss.detach())
                if cfg.kl_coef > 0:
                    with torch.no_grad():
                        self.ref.eval()
                        ref_lp = self.ref.log_prob(mb, actions, extras, level=cfg.level)
                    kl = (core.kl_k3 if cfg.kl_estimator == "k3" else core.kl_k1)(logp, ref_lp).mean()
                    loss = loss + cfg.kl_coef * kl
                    m["kl_ref"] = float(kl.detach())
                if ent is not None:
                    if cfg.ent_coef:
                        loss = loss + core.entropy_bonus(ent, cfg.ent_coef)
                    m["entropy"] = float(ent.detach().mean())
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"loss is {float(loss.detach())} at iteration {iteration}")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for p in policy.parameters() if p.grad is not None]
                gnorm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else float("inf"))
                if not torch.isfinite(gnorm):
                    raise NonFiniteLossError(f"gradient norm is {float(gnorm)} at iteration {iteration}")
                self.opt.step()
                m["loss"] = float(loss.detach())
                m["grad_norm"] = float(gnorm)
                for key, v in m.items():
                    sums[key] = sums.get(key, 0.0) + v
                count += 1
                if cfg.target_kl and info["approx_kl"] > cfg.target_kl:
                    stopped = True
                    break
        out = {f"train/{k}": v / count for k, v in sums.items()}
        out["train/updates"] = count
        out["train/decisions"] = n
        out["train/adv_abs_mean"] = float(adv.abs().mean())
        out["train/ratio_error0"] = ratio_error0
        out["train/early_stop"] = float(stopped)
        return out

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return optimizer_tensors(self.opt)

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        load_optimizer_tensors(self.opt, tensors, meta)
