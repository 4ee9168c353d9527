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
from types import SimpleNamespace

import torch

from rlvla.algos import core
from rlvla.algos.optim import load_optimizer_tensors, make_adamw, optimizer_tensors
from rlvla.data.schema import Batch
from rlvla.errors import NonFiniteLossError
from rlvla.policies.heads.base import ActionHead
from rlvla.policies.policy import reduce_level

LEVELS = ("auto", "token", "action", "chunk")


PROGRESS_STD_FLOOR = 0.1  # below every binary group's std (>= 0.35 for 8 rollouts); scales down progress-only groups


@dataclass
class OnlineConfig:
    """Shared settings of the online algorithms (``algo.*`` in ``rlvla train``)."""

    name: str = "grpo"
    iterations: int = 20
    """Rollout + update iterations."""
    lr: float = 5e-5
    """Learning rate (constant) of the policy (and of the critic when ``value_lr`` is 0)."""
    epochs: int = 2
    """Passes over each iteration's rollouts."""
    minibatch: int = 128
    """Decisions per gradient step."""
    level: str = "auto"
    """Log-prob level of the ratio: token, action, chunk, or auto (token for the token head, else chunk: a
    per-element ratio clips each of K x A elements on its own, so the joint chunk ratio can reach 1.2^(K A))."""
    clip_low: float = 0.2
    clip_high: float = 0.28
    """Clip-higher (DAPO): ratio clipped to [1 - clip_low, 1 + clip_high]."""
    dual_clip: float = 3.0
    """Dual clip for negative advantages (0: off)."""
    kl_coef: float = 0.0
    """Weight of the KL to the initial (reference) policy (k3 or k1, on the rollout's samples). With a frozen trunk
    the reference pass is only the initial head on the cached readouts, so ``train/kl_ref`` (the policy's drift
    from its start) is logged even at 0; without one, 0 skips the reference pass."""
    kl_estimator: str = "k3"
    """``k3`` or ``k1`` on the rollout's samples; ``exact``: the whole per-token distribution over all bins (token
    head, frozen trunk), which also holds bins no sample reached: local token exploration samples only near the
    greedy token, so the sampled KL cannot see a far bin rising to become the greedy decode."""
    ent_coef: float = 0.0
    target_kl: float = 0.0
    """Stop an iteration's remaining minibatches once a minibatch's approx KL (old || new, mean over the ratio's
    elements), measured before its optimiser step, exceeds 1.5x this (SB3's rule; 0: off)."""
    explore_noise: float = 0.0
    """The head's exploration knob during RL (0: the policy's own): token temperature, flow-SDE noise level,
    Flow-Noise upper std, diffusion min std, Gaussian std (see :mod:`rlvla.algos.online.explore`). Written into
    the policy's config, so the RL checkpoint records it; deterministic evaluation does not use it."""
    explore_steps: str = ""
    """Chain heads: ``one`` stochastic denoising step per decision (piRL), ``all``, or ``output`` (Gaussian noise
    around the deterministic sampler's action, exact likelihood through the chain). Token head: ``output`` samples
    each token around the greedy decode given the greedy prefix, with a Gaussian kernel of std ``explore_noise``
    (no far bins, no autoregressive cascade). Empty keeps the policy's."""
    explore_correlation: float = 0.0
    """Output-mode exploration (chain heads): correlation rho of each env's exploration noise from one decision
    to the next (AR(1), stationary std ``explore_noise``): noise_t = rho noise_(t-1) + sqrt(1 - rho^2) std xi_t.
    Independent noise averages out over an episode, so it rarely moves the arm consistently to one side (to a
    target the policy misses by a few cm); correlated noise does. The carried part is an input of the policy, so
    the likelihood stays exact. 0: independent (white) noise."""
    explore_temperature: float = 0.0
    """Token head: the sampling temperature when ``explore_noise`` sets the local kernel (``explore_steps=output``);
    0 keeps the policy's."""
    denoise_steps: int = 0
    """Chain heads: denoising steps during RL and in the saved policy (0 keeps the policy's)."""
    freeze_backbone: bool = False
    """Train only the action head and the critic: the trunk's readouts are computed once per iteration (fast),
    and the SFT representation cannot drift. The critic still trains its own (isolated) VALUE readout token."""
    trunk_lr_scale: float = 1.0
    """With a trainable trunk (``freeze_backbone=false``): the trunk's learning rate is ``lr`` times this, the
    head's is ``lr`` (a slow trunk can learn what the head needs to see while each update stays small)."""
    cond_lr_scale: float = 1.0
    """The action head's conditioning layer (the linear map that reads the trunk's readout ``z``,
    ``head.condition_layer()``) learns at ``lr`` times this, the rest of the head at ``lr``: a faster map from z
    lets RL change what the head reads from the image (where the button is) while each update's move of the
    action, bounded by the KL stop, stays small. 10 changed nothing measurable on the quickstart tasks (0.84 and
    0.81 against 0.82 and 0.84, BENCHMARKS.md), so it is off (1) by default."""
    cond_standardize: str = "none"
    """``std`` or ``whiten``: at the run's first update, standardise the input of the head's conditioning layer on
    the rollout's readouts (``StandardizedLinear.standardize_``; the policy's function is unchanged, the statistics
    are saved with it). The frozen trunk's readout varies over a task's layouts by ~2% of its mean, so without it
    an update moves the action alike for every layout far faster than it teaches the action to follow the layout.
    Measured on the quickstart tasks (validation seeds, BENCHMARKS.md): before the SFT learnt where the object is
    (``aux_object``), ``std`` 0.78 and ``whiten`` 0.83 against 0.82; after it, ``whiten`` raised the OOD average
    (+18.1 and +16.25 against +14.4 to +15.6), so the quickstart whitens. Off (``none``) by default elsewhere."""
    cond_floor: float = 0.0
    """The standardisation's floor (``standardize_``): ``whiten`` keeps each eigendirection's std at least this
    times the largest, ``std`` each input's at least this times the median; a higher floor amplifies the
    readout's rarely-varying directions (a held-out phrasing moves z along them) less. 0: the mode's default
    (0.01 whiten, 0.1 std)."""
    gamma: float = 0.99
    group_size: int = 8
    """Rollouts per initial state (layout seed)."""
    groups_per_task: int = 2
    """Groups per task per iteration."""
    envs_per_task: int = 2
    workers: int = -1
    """Env worker processes (-1: one per core; 0: in-process)."""
    max_steps: int = 200
    """Episode time limit in low-level env steps."""
    terminate_on_success: bool = True
    """End an episode at its first success (false: run to the time limit, MetaWorld's convention; success is
    then "succeeded at any step")."""
    max_worker_restarts: int = 10
    eval_every: int = 0
    """Evaluate the deterministic policy on held-out layouts (validation seeds, ``id``) before the first iteration
    and every N iterations (logged as ``heldout/*``: the run's learning curve); 0: never."""
    eval_episodes: int = 50
    ckpt_every: int = 1
    """Checkpoint every N iterations (and at the end or on Ctrl-C)."""
    tasks: list[str] = field(default_factory=list)
    """Tasks to train on (default: the initial policy's tasks). Always the ``id`` split on training seeds."""
    layout_edge: float = 0.0
    """Probability that a rollout layout has one coordinate in the training region's outer band (``EDGE_INNER``
    to ``ID_FRACTION`` of the box half-width, :mod:`rlvla.envs.splits`) instead of a uniform draw: RL meets the
    edges of the region more often. Layouts stay inside the training region. 0: uniform layouts."""
    world_model: str = ""
    """Roll out in a learned world model (``rlvla train algo=world_model``; its dir or run dir) instead of the
    simulator: each episode starts from a real reset (one rendered frame) and every decision after it is imagined.
    Held-out evaluation (``eval_every``) and ``rlvla eval`` always run in the simulator."""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown log-prob level {self.level!r}; valid: {', '.join(LEVELS)}")
        if self.kl_estimator not in ("k1", "k3", "exact"):
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}; valid: k1, k3, exact")
        if self.explore_steps not in ("", "one", "all", "output"):
            raise ValueError(f"unknown explore_steps {self.explore_steps!r}; valid: one, all, output (or empty: the policy's)")
        if min(self.iterations, self.epochs, self.minibatch, self.group_size, self.groups_per_task, self.envs_per_task, self.max_steps, self.ckpt_every) < 1:
            raise ValueError("iterations, epochs, minibatch, group_size, groups_per_task, envs_per_task, max_steps, ckpt_every must be >= 1")
        if not 0 <= self.layout_edge <= 1:
            raise ValueError(f"layout_edge is a probability in [0, 1], got {self.layout_edge}")
        if not 0 <= self.explore_correlation < 1:
            raise ValueError(f"explore_correlation must be in [0, 1), got {self.explore_correlation}")
        if self.explore_correlation and self.world_model:
            raise ValueError("explore_correlation applies to simulator rollouts, not to a world model's; set it to 0")
        if self.trunk_lr_scale <= 0:
            raise ValueError(f"trunk_lr_scale must be > 0 (got {self.trunk_lr_scale}); freeze_backbone=true fixes the trunk")
        if self.cond_floor < 0 or self.cond_floor >= 1:
            raise ValueError(f"cond_floor must be in [0, 1) (0: the mode's default), got {self.cond_floor}")
        if self.cond_standardize not in ("none", "std", "whiten"):
            raise ValueError(f"cond_standardize must be none, std or whiten (got {self.cond_standardize!r})")
        if self.cond_lr_scale <= 0:
            raise ValueError(f"cond_lr_scale must be > 0 (got {self.cond_lr_scale})")
        if self.trunk_lr_scale != 1.0 and self.freeze_backbone:
            raise ValueError("trunk_lr_scale applies to a trainable trunk; set freeze_backbone=false or leave it at 1")
        if self.lr <= 0 or self.clip_low <= 0 or self.clip_high <= 0 or not 0 <= self.gamma <= 1:
            raise ValueError(f"need lr, clip_low, clip_high > 0 and gamma in [0, 1] (got {self})")
        if self.eval_every < 0 or self.eval_episodes < 1:
            raise ValueError(f"eval_every must be >= 0 and eval_episodes >= 1 (got {self.eval_every}, {self.eval_episodes})")
        if self.explore_noise < 0 or self.explore_temperature < 0 or self.denoise_steps < 0:
            raise ValueError("explore_noise, explore_temperature and denoise_steps must be >= 0")
        if self.dual_clip and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 or 0 (off), got {self.dual_clip}")


@dataclass
class DecisionRewardFields:
    """Algorithms that learn from per-decision rewards (ppo, reinforce_pp): what a decision earns."""

    success_bonus: float = 1.0
    """Per-decision reward on the first success."""
    shaping: float = 0.0
    """Weight of potential-based shaping with the env's dense progress (``info["progress"]``) as potential."""
    env_reward: float = 0.0
    """Weight of the environment's own (dense) reward per decision."""
    reward: str = ""
    """A learned reward model (``rlvla train algo=reward_model``; its dir or run dir) scoring the observation each
    decision leads to: a ``success`` model pays ``reward_weight`` once, at the first decision it scores above
    ``reward_threshold``; a ``progress`` or ``preference`` model is a potential (shaping ``gamma phi(s') - phi(s)``
    times ``reward_weight``). Alone (``success_bonus=0``) or beside the simulator's success bonus. Alone, set
    ``terminate_on_success=false`` too: otherwise episodes still end at the simulator's success."""
    reward_weight: float = 1.0
    reward_threshold: float = 0.5
    bonus: str = ""
    """Exploration bonus on the policy's readout of the next observation: ``rnd`` (random network distillation)
    or ``count`` (SimHash counts); empty: none."""
    bonus_coef: float = 0.05
    bonus_anneal: int = 0
    """Iterations over which the bonus weight decays linearly to 0 (0: constant)."""


@dataclass
class CriticFields:
    """Algorithms with a learned critic (ppo)."""

    value_lr: float = 0.0
    """The critic's own learning rate, with its own gradient clip (anchors train the critic 10-30x faster than
    the actor); 0: one optimiser group and one gradient clip for both, as SB3."""
    value_warmup: int = 0
    """Iterations at the start of a run that train only the critic (its rollouts still count): an SFT policy's
    value head knows nothing, and advantages from it are noise (RLinf, RL4VLA warm the critic up)."""
    vf_coef: float = 0.5
    vf_clip: float = 0.0
    """Value-loss clip around the rollout's values (0: unclipped). An absolute clip of 0.2 on returns of order
    1-10 keeps a fresh critic from ever catching up."""
    lam: float = 0.95
    advantage_norm: str = "task"
    """Normalise advantages per ``task`` (each task's mean 0, std 1: one task's reward scale cannot drown the
    others), over the ``batch``, per ``minibatch`` (as SB3) or ``none``."""


@dataclass
class GroupFields:
    """Group methods (grpo, rloo): episodes scored against the other rollouts of the same layout."""

    dynamic_sampling: bool = True
    """Drop groups that all succeeded or all failed and draw new ones (bounded by max_refill_rounds)."""
    max_refill_rounds: int = 2
    progress_score: float = 0.0
    """A failed episode scores this times its best dense progress (the env's ``info["progress"]``, in [0, 1])
    instead of 0; a success scores 1. A group where every episode failed then still ranks its episodes (and is
    kept by dynamic sampling) instead of carrying no signal; below 1, every success still outranks every failure.
    With it, GRPO's group std has a floor of ``PROGRESS_STD_FLOOR``. 0: success only."""
    speed_score: float = 0.0
    """A success scores 1 plus this times the fraction of the time limit it left unused, so the rollouts of a
    group that all succeeded still rank (faster first) and dynamic sampling keeps the group: the behaviour that
    already works keeps being reinforced while RL moves the rest. 0: every success scores 1."""
    replay: float = 0.0
    """Fraction of each round's groups that replay layouts whose latest group had mixed outcomes (prioritised
    layout replay; 0: fresh layouts only). See :mod:`rlvla.collectors.rollout`."""
    reward: str = ""
    """A learned reward model (its dir or run dir) that scores episodes instead of the simulator: a ``success``
    model scores 1 where it calls any of the episode's observations a success (above ``reward_threshold``), a
    ``progress`` or ``preference`` model the episode's highest score. Needs ``dynamic_sampling=false``,
    ``progress_score=0`` and ``replay=0``: those select and score episodes by the simulator's outcome."""
    reward_threshold: float = 0.5


def check_group_fields(cfg) -> None:
    if cfg.reward and (cfg.dynamic_sampling or cfg.progress_score or cfg.speed_score or cfg.replay):
        raise ValueError(f"algo.reward with {cfg.name} needs algo.dynamic_sampling=false, algo.progress_score=0, algo.speed_score=0 and algo.replay=0: "
                         "they select and score episodes by the simulator's outcome, which the learned reward replaces")  # fmt: skip
    if not 0 < cfg.reward_threshold < 1:
        raise ValueError(f"reward_threshold must be in (0, 1), got {cfg.reward_threshold}")
    if not 0.0 <= cfg.progress_score < 1.0:
        raise ValueError(f"progress_score must be in [0, 1) so that every success outranks every failure; got {cfg.progress_score}")
    if not 0.0 <= cfg.speed_score <= 1.0:
        raise ValueError(f"speed_score must be in [0, 1] (a success scores 1 to 1 + speed_score); got {cfg.speed_score}")
    if not 0.0 <= cfg.replay <= 1.0:
        raise ValueError(f"replay is a fraction of each round's groups, in [0, 1]; got {cfg.replay}")
    if cfg.group_size < 2:
        raise ValueError(f"{cfg.name} needs group_size >= 2 (rollouts per initial state), got {cfg.group_size}")


def check_reward_fields(cfg) -> None:
    if cfg.bonus not in ("", "rnd", "count"):
        raise ValueError(f"unknown exploration bonus {cfg.bonus!r}; valid: rnd, count (or empty: none)")
    if cfg.bonus_coef < 0 or cfg.bonus_anneal < 0 or cfg.reward_weight < 0 or not 0 < cfg.reward_threshold < 1:
        raise ValueError("need bonus_coef, bonus_anneal, reward_weight >= 0 and reward_threshold in (0, 1)")


def check_critic_fields(cfg) -> None:
    if cfg.advantage_norm not in ("task", "batch", "minibatch", "none"):
        raise ValueError(f"unknown advantage_norm {cfg.advantage_norm!r}; valid: task, batch, minibatch, none")
    if not 0 <= cfg.lam <= 1 or cfg.value_lr < 0 or cfg.value_warmup < 0 or cfg.vf_clip < 0:
        raise ValueError(f"need lam in [0, 1] and value_lr, value_warmup, vf_clip >= 0 (got {cfg})")


def resolve_level(level: str, policy) -> str:
    """``auto`` -> ``token`` for the token head, else ``chunk``."""
    if level != "auto":
        return level
    head = getattr(getattr(policy, "cfg", None), "head", None)
    return "token" if getattr(head, "name", None) == "token" else "chunk"


def _finite(x: torch.Tensor, what: str, it: int) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteLossError(f"{what} has {bad} NaN/inf value(s) at iteration {it}")


def compute_advantages(batch, cfg: OnlineConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-> (advantages (N,), value targets (N,) or None) for the decisions of a rollout batch (episodes contiguous),
    by the registered algorithm ``cfg.name`` (``algos/online/<name>.py``)."""
    from rlvla.algos.online import algorithm

    return algorithm(cfg.name).advantages(batch, cfg)


def episode_group_advantages(batch, cfg, fn) -> torch.Tensor:
    """Group methods: one score per episode (``batch["score"]``), grouped by initial state; ``fn(scores (G, n))``
    -> advantages (G, n); each decision gets its episode's advantage."""
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
    a = fn(ep_score[order].reshape(len(groups), -1))
    ep_adv = torch.empty_like(ep_score)
    ep_adv[order] = a.reshape(-1)
    ep_of_step = torch.cumsum(first.long(), 0) - 1
    return ep_adv[ep_of_step].float()


class PolicyGradient:
    """One update per iteration: advantages, then epochs x minibatches of the clipped surrogate (+ value loss,
    KL to the reference, entropy bonus). The critic (``policy.critic_parameters``) can have its own learning rate
    and gradient clip (``value_lr``) and trains alone for the first ``value_warmup`` iterations."""

    EXPLORE_SAMPLE = 256  # decisions per iteration on which rollout/explore_std is measured

    def __init__(self, policy, cfg: OnlineConfig, ref_policy=None, grad_clip: float = 1.0, weight_decay: float = 0.0,
                 seed: int = 0) -> None:  # fmt: skip
        self.policy = policy
        self.cfg = cfg
        self.level = resolve_level(cfg.level, policy)
        self.ref = ref_policy
        if cfg.kl_coef > 0 and ref_policy is None:
            raise ValueError("kl_coef > 0 needs a reference policy")
        exact = cfg.kl_estimator == "exact"
        self.exact_kl = exact and ref_policy is not None
        if exact and not (cfg.freeze_backbone and hasattr(policy, "rl_features")):
            raise ValueError("algo.kl_estimator=exact needs algo.freeze_backbone=true (the KL is taken on the shared trunk's readouts)")
        if exact and type(policy.head).dist_logits is ActionHead.dist_logits:
            raise ValueError(f"algo.kl_estimator=exact needs a discrete (token) head, not {policy.head.cfg.name}; use k3")
        self.grad_clip = grad_clip
        self.seed = seed
        from rlvla.algos.online import algorithm

        self.uses_value = bool(getattr(algorithm(cfg.name), "USES_VALUE", False))  # the algorithm trains a critic
        if self.uses_value and not isinstance(cfg, CriticFields):
            raise ValueError(f"{cfg.name} trains a critic (USES_VALUE) but its Config lacks CriticFields (value_lr, "
                             "value_warmup, vf_coef, vf_clip, lam, advantage_norm); add them to its Config bases")  # fmt: skip
        self.has_trunk = hasattr(policy, "rl_features")
        self.frozen = cfg.freeze_backbone and self.has_trunk
        critic = policy.critic_parameters(self.frozen) if self.uses_value else []
        critic_ids = {id(p) for p in critic}
        # the fixed trunk: no gradients are computed for it during an update (the critic's readout token excepted)
        self.fixed = [p for n, p in policy.named_parameters() if self.frozen and n.startswith("backbone.") and id(p) not in critic_ids]
        fixed_ids = {id(p) for p in self.fixed}
        self.actor_params = [p for p in policy.parameters() if p.requires_grad and id(p) not in critic_ids | fixed_ids]
        self.critic_params = [p for p in critic if p.requires_grad]
        self.split = self.uses_value and cfg.value_lr > 0 and bool(self.critic_params)
        scale = cfg.trunk_lr_scale
        trunk_ids = {id(p) for n, p in policy.named_parameters() if n.startswith("backbone.")} if scale != 1.0 else set()
        trunk = [p for p in self.actor_params if id(p) in trunk_ids]
        actor = [p for p in self.actor_params if id(p) not in trunk_ids]
        if (cfg.cond_lr_scale != 1.0 or cfg.cond_standardize != "none") and not hasattr(policy, "head"):
            raise ValueError(f"algo.cond_lr_scale and algo.cond_standardize apply to a VLA policy's action head; "
                             f"{type(policy).__name__} has none (leave them at 1 and none)")  # fmt: skip
        cond_ids = {id(p) for p in policy.head.condition_layer().parameters()} if cfg.cond_lr_scale != 1.0 else set()
        cond = [p for p in actor if id(p) in cond_ids]
        actor = [p for p in actor if id(p) not in cond_ids]
        if self.split:  # the critic's own lr; no weight decay on it, so the readout token's ACT half stays exact
            self.opt = make_adamw(actor, cfg.lr, weight_decay)
            self.opt.add_param_group({"params": self.critic_params, "lr": cfg.value_lr, "weight_decay": 0.0})
        else:
            self.opt = make_adamw(actor + self.critic_params, cfg.lr, weight_decay)
        for params, lr in ((trunk, cfg.lr * scale), (cond, cfg.lr * cfg.cond_lr_scale)):
            for group in make_adamw(params, lr, weight_decay).param_groups if params else ():
                self.opt.add_param_group({k: group[k] for k in ("params", "lr", "weight_decay")})

    def _features(self, ro) -> dict:
        parts: list[dict] = []
        for k in range(0, len(ro), 256):
            parts.append(self.policy.rl_features(ro.select(torch.arange(k, min(k + 256, len(ro))))))
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def _standardize_condition(self, ro, feats: dict | None) -> dict:
        """``algo.cond_standardize``: once per run, before the first optimiser step (a resumed run finds the layer
        standardised in its checkpoint and leaves it), on the readouts ``z`` of this rollout's decisions."""
        layer = self.policy.head.condition_layer() if self.cfg.cond_standardize != "none" else None
        if layer is None or layer.is_standardized():
            return {}
        with torch.no_grad():
            z = (feats if feats is not None else self._features(ro))["z"]
            layer.standardize_(z, self.cfg.cond_standardize, floor=self.cfg.cond_floor or None)
        return {"train/cond_in_gain": float(layer.in_proj.norm() / layer.in_features**0.5)}

    @torch.no_grad()
    def _explore_std(self, ro, feats: dict | None, gen: torch.Generator) -> float:
        """RMS distance (action units) of the rollout's sampled actions from the deterministic action for the same
        input and starting noise, on a random subset of decisions."""
        n = len(ro)
        idx = torch.randperm(n, generator=gen)[: self.EXPLORE_SAMPLE].sort().values
        actions = ro.batch["action"][idx]
        z = feats["z"][idx] if feats is not None else None
        det = self.policy.deterministic_like(ro.select(idx) if z is None else None, actions, ro.extras(idx), z=z)
        return float(((actions - det.reshape(actions.shape)) ** 2).mean().sqrt())

    def _clip(self, params: list, max_norm: float, what: str, iteration: int) -> float:
        params = [p for p in params if p.grad is not None]
        if not params:
            return 0.0
        gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        if not torch.isfinite(gnorm):
            raise NonFiniteLossError(f"{what} gradient norm is {float(gnorm)} at iteration {iteration}")
        return float(gnorm)

    def update(self, ro, iteration: int) -> dict:
        flags = [p.requires_grad for p in self.fixed]
        for p in self.fixed:
            p.requires_grad_(False)
        try:
            return self._update(ro, iteration)
        finally:
            for p, f in zip(self.fixed, flags):
                p.requires_grad_(f)

    def _update(self, ro, iteration: int) -> dict:
        cfg, batch, n = self.cfg, ro.batch, len(ro)
        if n == 0:
            return {"train/updates": 0}
        _finite(batch["next.reward"], "rewards", iteration)
        adv, returns = compute_advantages(batch, cfg)
        _finite(adv, "advantages", iteration)
        out: dict = {}
        if returns is not None:
            _finite(returns, "value targets", iteration)
            out["train/explained_variance"] = core.explained_variance(batch["value"], returns)
            out["train/value_mean"] = float(batch["value"].mean())
            out["train/return_mean"] = float(returns.mean())
        warmup = self.uses_value and iteration < cfg.value_warmup
        self.policy.eval()  # no augmentation/dropout: the ratio is exactly 1 at the first minibatch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        # features once per iteration: always for a frozen trunk, and in warm-up (only the critic learns)
        feats = self._features(ro) if self.has_trunk and (self.frozen or warmup) else None
        out.update(self._standardize_condition(ro, feats))
        out["rollout/explore_std"] = self._explore_std(ro, feats, torch.Generator().manual_seed(iteration))
        it = SimpleNamespace(batch=batch, adv=adv, returns=returns, feats=feats, warmup=warmup, iteration=iteration,
                             extras=ro.extras(), ratio_error0=None,
                             obs_keys=[key for key in batch if key.startswith("observation.") or key == "task"])  # fmt: skip
        sums: dict[str, float] = {}
        count, stopped = 0, False
        for _epoch in range(cfg.epochs):
            if stopped:
                break
            perm = torch.randperm(n, generator=gen)
            for k in range(0, n, cfg.minibatch):
                m = self._minibatch(it, perm[k : k + cfg.minibatch])
                if m is None:  # the KL stop: this minibatch already sees a policy too far from the rollout's
                    stopped = True
                    out["train/stop_kl"] = it.stop_kl
                    break
                for key, v in m.items():
                    sums[key] = sums.get(key, 0.0) + v
                count += 1
        out.update({f"train/{k}": v / max(count, 1) for k, v in sums.items()})
        out.update({"train/updates": count, "train/decisions": n, "train/adv_abs_mean": float(adv.abs().mean()),
                    "train/ratio_error0": it.ratio_error0, "train/early_stop": float(stopped),
                    "train/value_warmup": float(warmup)})  # fmt: skip
        return out

    def _minibatch(self, it, idx: torch.Tensor) -> dict | None:
        """One gradient step on decisions ``idx``; None (and no step) when the KL stop fires before it."""
        cfg, policy, batch = self.cfg, self.policy, it.batch
        extras = {key: v[idx] for key, v in it.extras.items()}
        actions = batch["action"][idx]
        mb = None
        if it.feats is None or (self.ref is not None and not self.frozen):
            mb = Batch({key: ([batch["task"][i] for i in idx.tolist()] if key == "task" else batch[key][idx]) for key in it.obs_keys})
        m: dict[str, float] = {}
        loss = torch.zeros(())
        if it.feats is not None:
            value = policy.value_from_features(it.feats, idx) if self.uses_value else None
            if not it.warmup:
                logp, ent, _ = policy.evaluate_features(it.feats["z"][idx], it.feats["zv"][idx], actions, extras, level=self.level)
        else:
            logp, ent, value = policy.evaluate(mb, actions, extras, level=self.level)
        if not it.warmup:
            old = batch["old_log_prob"][idx]
            a = it.adv[idx]
            if self.uses_value and cfg.advantage_norm == "minibatch" and a.numel() > 1:
                a = (a - a.mean()) / (a.std() + 1e-8)
            a = a.reshape(-1, *([1] * (logp.ndim - 1))).expand_as(logp)
            if it.ratio_error0 is None:
                it.ratio_error0 = float((logp.detach() - old).abs().max())
            pi_loss, info = core.clipped_surrogate(logp, old, a, cfg.clip_low, cfg.clip_high, cfg.dual_clip or None)
            if cfg.target_kl and info["approx_kl"] > 1.5 * cfg.target_kl:
                it.stop_kl = float(info["approx_kl"])  # SB3's rule, checked before the step
                return None
            loss = loss + pi_loss
            m.update(pi_loss=float(pi_loss.detach()), **info)
            loss = self._kl_term(loss, m, it, idx, logp, mb, actions, extras)
            if ent is not None:
                if cfg.ent_coef:
                    loss = loss + core.entropy_bonus(ent, cfg.ent_coef)
                m["entropy"] = float(ent.detach().mean())
        if self.uses_value:
            v_loss = core.clipped_value_loss(value, batch["value"][idx], it.returns[idx], cfg.vf_clip or None)
            loss = loss + cfg.vf_coef * v_loss
            m["value_loss"] = float(v_loss.detach())
        self._step(loss, m, it)
        return m

    def _kl_term(self, loss, m: dict, it, idx, logp, mb, actions, extras):
        """The KL to the reference policy (logged as ``kl_ref``; added to the loss at ``kl_coef``)."""
        cfg = self.cfg
        if self.exact_kl:
            z = it.feats["z"][idx]
            with torch.no_grad():
                ref_logits = self.ref.head.dist_logits(z, extras)
            kl = core.kl_exact(self.policy.head.dist_logits(z, extras), ref_logits).mean()
        elif self.ref is not None:
            with torch.no_grad():
                self.ref.eval()
                if self.frozen:  # the trunk is the reference's own: only its head differs
                    ref_lp = reduce_level(self.ref.head.log_prob(it.feats["z"][idx], actions, extras), self.level)
                else:
                    ref_lp = self.ref.log_prob(mb, actions, extras, level=self.level)
            kl = (core.kl_k3 if cfg.kl_estimator == "k3" else core.kl_k1)(logp, ref_lp).mean()
        else:
            return loss
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * kl
        m["kl_ref"] = float(kl.detach())
        return loss

    def _step(self, loss: torch.Tensor, m: dict, it) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {float(loss.detach())} at iteration {it.iteration}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if it.warmup:
            for p in self.actor_params:
                p.grad = None  # AdamW skips parameters without a gradient (no decay, no momentum step)
        if self.split:
            m["grad_norm"] = self._clip(self.actor_params, self.grad_clip, "policy", it.iteration)
            m["value_grad_norm"] = self._clip(self.critic_params, self.grad_clip, "critic", it.iteration)
        else:
            m["grad_norm"] = self._clip(self.actor_params + self.critic_params, self.grad_clip, "policy", it.iteration)
        self.opt.step()
        m["loss"] = float(loss.detach())

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return optimizer_tensors(self.opt)

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        load_optimizer_tensors(self.opt, tensors, meta)
