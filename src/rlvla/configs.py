"""Hydra structured configs for ``rlvla train``.

Composition::

    rlvla train algo=sft head=flow data.path=runs/demos train.steps=3000 policy.backbone.dim=256

    rlvla train algo=grpo init=runs/sft/policy algo.iterations=30 run_dir=runs/rl

``head=<name>`` picks the action head's config (group ``head``, placed at ``policy.head``), ``algo=<name>`` the
algorithm: ``sft`` or an offline one (``awr``, ``iql``, ``cql``, ``calql``, ``rc``, ``recap``, ``arfm``, ``dpo``; on
``data.path``, loop settings in ``train.*``, method settings in ``algo.*``, optionally starting from ``init``) or an
online one (``ppo``, ``grpo``, ``rloo``,
``reinforce_pp``: starts from ``init``, its loop settings in ``algo.*``; of ``train.*`` only ``seed``, ``grad_clip``,
``weight_decay``, ``time_limit_s``, ``threads`` and ``device`` apply). Every field is typed and documented where
it is defined; a key that does not exist is an error.
The resolved config is saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from rlvla.policies.config import PolicyConfig


@dataclass
class DataConfig:
    path: str = "runs/demos"
    """A LeRobot v3.0 dataset directory (make one with ``rlvla collect``)."""
    episodes_per_task: int = 0
    """Use only the first N episodes of each task (0: all) - the few-demo setting."""
    paraphrase: float = 0.0
    """SFT: probability that a sample's instruction is replaced by another training phrasing of the same meaning
    (the env suite's paraphrases; instruction augmentation for language that generalises)."""


@dataclass
class LoopConfig:
    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    """Linear warm-up, then cosine decay to 10% of ``lr`` at ``steps``."""
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    """Checkpoint every N steps (and at the end)."""
    time_limit_s: float = 0.0
    """Stop (with a checkpoint) after this much training wall time; 0 = no limit."""
    threads: int = 0
    """torch intra-op threads (0: one per core)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.log_every < 1 or self.ckpt_every < 1:
            raise ValueError(f"train needs steps, batch_size, log_every, ckpt_every >= 1 and lr > 0 (got {self})")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.time_limit_s < 0 or self.threads < 0:
            raise ValueError(f"train needs warmup_steps, grad_clip, time_limit_s, threads >= 0 (got {self})")


AUX_TARGETS = {"object": ("obj_pos",), "goal": ("goal_pos",), "both": ("obj_pos", "goal_pos"), "candidate": ("target_rank",),
               "grounded": ("target_rank", "obj_pos", "goal_pos"),
               "colours": ("target_rank", "obj_pos", "goal_pos", "colour_pos")}  # fmt: skip


@dataclass
class SFTConfig:
    name: str = "sft"
    aux_goal: float = 0.0
    """Weight of an auxiliary loss: predict the episode's goal position (recorded in the simulator by ``rlvla
    collect``; a training-only target, never a policy input) from the action readout, as Levine et al. (2016)
    pretrain visuomotor keypoints on object poses; 0 = off."""
    aux_object: float = 0.0
    """Weight of an auxiliary loss on frames of ``aux_layouts`` random training layouts per task (rendered at the
    start; no expert, no actions): predict the simulator's object position from the action readout, so the trunk
    learns where the object is from more places than the demonstrations show (:mod:`rlvla.collectors.layouts`).
    A training-only target, never a policy input; 0 = off."""
    aux_target: str = "object"
    """``aux_object``'s target: ``object`` (``info["obj_pos"]``), ``goal`` (``info["goal_pos"]``: on the grounded
    suite the goal the instruction names, so the trunk must read both), ``both``, or ``candidate`` (grounded suite:
    which candidate, left to right, the instruction names; a classification), or ``grounded`` (the candidate, the
    object and the named goal at once: what the skills read), or ``colours`` (``grounded`` plus every candidate's
    position by colour: a target that needs no language, so the trunk learns where each colour is before (and
    while) it learns which colour the instruction names)."""
    aux_layouts: int = 256
    """``aux_object``: random training layouts per task (two frames each: at reset and after a few random arm moves)."""
    aux_batch: int = 32
    """``aux_object``: layout frames per SFT step."""
    aux_warmup: int = 0
    """``aux_object``: the first ``aux_warmup`` steps train the trunk on the layout target alone (no behaviour
    cloning), so that it learns where things are before it learns what to do (part of ``train.steps``)."""
    aux_clone: float = 1.0
    """``aux_object``: the layout loss's weight during behaviour cloning (after ``aux_warmup``), as a fraction of
    ``aux_object``; 0 = cloning steps pass no layout batch through the trunk (about 40% cheaper per step)."""
    aux_keypoints: float = 0.0
    """With ``aux_target=colours`` and ``policy.backbone.vision.keypoints`` >= the colours: weight of a loss on the
    layout frames that ties keypoint ``c`` to the candidate of colour ``c`` (colours in name order): the residual of
    the batch's least-squares affine fit from the keypoint's image (x, y) to that candidate's x-y on the table
    (standardised), or where the camera draws it (``aux_keypoint_target``). Supervised keypoints (Levine et al.
    2016) instead of the near-uniform maps SFT leaves; 0 = off. The affine target left the maps flat (BENCHMARKS.md,
    "Flat keypoints"); the pixel target is the grounded quickstart's ("Keypoints on the pixels")."""
    aux_keypoint_target: str = "affine"
    """``aux_keypoints``' target: ``affine`` (above), or ``pixels``: keypoint ``c`` must sit where the first camera
    draws colour ``c``'s candidate and keypoint ``colours`` (the next one) where it draws the candidate the
    instruction names (the camera model's projection, moved with the random shift), a smooth-L1 loss in pixels.
    No fitted map to absorb a small, flat keypoint: only a peaked map puts its mean on a candidate."""
    aux_restart: bool = False
    """``aux_warmup``: one learning-rate schedule per stage instead of one for the run: the layout warm-up ramps up
    over ``train.warmup_steps`` and stays at ``train.lr``; cloning ramps up again and decays by its own cosine, so it
    is not run at a rate the warm-up already decayed."""
    lang_noise: float = 0.0
    """Gaussian noise on each training sample's instruction embedding (the frozen MiniLM's unit vector), as the
    noise vector's expected norm (its per-dimension std is this / sqrt(384)); 0 = off. On the grounded suite the
    training phrasings of one instruction lie ~0.83 apart and a colour swap moves one by ~0.66; a policy that has only seen the training phrasings' exact points can read a
    held-out one as another instruction. Training only (SFT's own steps; RL and evaluation never see it)."""
    lang_mix: float = 0.0
    """With instruction prototypes (``policy.backbone.language.prototype_temperature``): the probability that a
    training sample reads its instruction as a mix of its own prototype (weight ~ U(0.5, 1)) and the prototype of an
    instruction of another task of the dataset. A new wording can land partly on another task's prototype (on the
    grounded suite, held-out reach phrasings put ~20% of their weight on the button's); trained this way, the policy
    takes the task from the scene and the rest from the instruction. For task sets whose tasks each have their own
    scene; 0 = off. SFT's own steps only."""
    proprio_noise: float = 0.0
    """Std of Gaussian noise added to each training sample's proprioception, in units of the dataset's per-dimension
    std (the policy's proprio normalisation); 0 = off. With few demonstrations the arm's state alone identifies the
    demo and the time step, and a policy can replay the demo from it instead of reading the image (the "copycat"
    shortcut, Wen et al. 2020); the noise blurs that key. Training only."""

    def __post_init__(self) -> None:
        if self.aux_goal < 0:
            raise ValueError(f"algo.aux_goal must be >= 0, got {self.aux_goal}")
        if self.proprio_noise < 0:
            raise ValueError(f"algo.proprio_noise must be >= 0, got {self.proprio_noise}")
        if self.aux_keypoints < 0 or (self.aux_keypoints and (self.aux_target != "colours" or self.aux_object <= 0)):
            raise ValueError(f"algo.aux_keypoints must be >= 0 and needs algo.aux_object > 0 with algo.aux_target=colours "
                             f"(got {self.aux_keypoints}, {self.aux_object}, {self.aux_target!r})")  # fmt: skip
        if self.aux_keypoint_target not in ("affine", "pixels"):
            raise ValueError(f"unknown algo.aux_keypoint_target {self.aux_keypoint_target!r}; valid: affine, pixels")
        if self.aux_target not in AUX_TARGETS:
            raise ValueError(f"unknown algo.aux_target {self.aux_target!r}; valid: {', '.join(AUX_TARGETS)}")
        if self.aux_warmup < 0 or (self.aux_warmup > 0 and self.aux_object <= 0):
            raise ValueError(f"algo.aux_warmup must be >= 0 and needs algo.aux_object > 0 (got {self.aux_warmup}, "
                             f"{self.aux_object})")  # fmt: skip
        if not 0 <= self.lang_mix <= 1:
            raise ValueError(f"algo.lang_mix is a probability in [0, 1], got {self.lang_mix}")
        if self.aux_clone < 0 or self.lang_noise < 0:
            raise ValueError(f"algo.aux_clone and algo.lang_noise must be >= 0, got {self.aux_clone}, {self.lang_noise}")
        if self.aux_object > 0 and self.aux_clone == 0 and self.aux_warmup == 0:
            raise ValueError("algo.aux_clone=0 without algo.aux_warmup renders layout frames that no step uses; "
                             "set algo.aux_warmup > 0 or algo.aux_object=0")  # fmt: skip
        if self.aux_object < 0 or self.aux_layouts < 1 or self.aux_batch < 1:
            raise ValueError(f"algo.aux_object must be >= 0 and algo.aux_layouts, algo.aux_batch >= 1 (got {self.aux_object}, "
                             f"{self.aux_layouts}, {self.aux_batch})")  # fmt: skip


@dataclass
class EvalAfterConfig:
    episodes: int = 0
    """Evaluate the final policy on this many episodes per split (0: skip; or run ``rlvla eval`` later)."""
    splits: list[str] = field(default_factory=lambda: ["id"])
    num_envs: int = 8


@dataclass
class TrainConfig:
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"algo": "sft"}, {"head": "token"}])
    algo: Any = MISSING
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalAfterConfig = field(default_factory=EvalAfterConfig)
    init: str = ""
    """Offline algorithms (optional; dpo: required, its reference) and online ones: the policy to start from (a policy dir, run dir or checkpoint, e.g. an SFT run); its
    config replaces ``policy.*`` and ``head``."""
    run_dir: str = "runs/train"
    """Output directory: config.yaml, metrics.jsonl, tensorboard/, checkpoints/, policy/ (the final weights)."""
    resume: bool = True
    """Continue from the run directory's latest checkpoint when there is one."""
    overrides: list[str] = field(default_factory=list)
    """Recorded by :func:`compose`: the overrides this config was composed from (checked by :func:`check_overrides`)."""


_STORED: set[str] = set()


def register() -> None:
    """Store the config nodes in Hydra's ConfigStore: the train config, every head and every algorithm in the
    registries (again on each call for algorithms registered since, e.g. by a test)."""
    from hydra.core.config_store import ConfigStore

    from rlvla.algos.offline import CONFIGS as OFFLINE
    from rlvla.algos.online import CONFIGS as ONLINE
    from rlvla.policies.heads import available_heads, head_config_class
    from rlvla.rewards.models import RewardTrainConfig
    from rlvla.worldmodels.model import WorldModelTrainConfig

    cs = ConfigStore.instance()
    if "train" not in _STORED:
        cs.store(name="train", node=TrainConfig)
        _STORED.add("train")
    for name, node in {"sft": SFTConfig, "reward_model": RewardTrainConfig, "world_model": WorldModelTrainConfig, **ONLINE, **OFFLINE}.items():
        if f"algo/{name}" not in _STORED:
            cs.store(group="algo", name=name, node=node)
            _STORED.add(f"algo/{name}")
    for name in available_heads():
        if f"head/{name}" not in _STORED:
            cs.store(group="head", name=name, node=head_config_class(name), package="policy.head")
            _STORED.add(f"head/{name}")


def compose(overrides: list[str]):
    """The composed, validated config (an OmegaConf DictConfig in struct mode)."""
    from hydra import compose as hydra_compose
    from hydra import initialize
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    try:
        with initialize(version_base=None, config_path=None):
            cfg = hydra_compose(config_name="train", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        unknown = re.search(r"Could not override '([\w.]+)'", msg)
        if unknown:
            groups = [o for o in overrides if _key(o) in ("algo", "head")]  # the section as composed, without other keys
            raise ValueError(_unknown_key(unknown.group(1), groups)) from None
        raise ValueError(f"bad config: {msg}; see `rlvla train --help` for the keys") from None
    cfg.overrides = [o for o in overrides if _key(o) != "overrides"]
    return cfg


def _unknown_key(key: str, others: list[str]) -> str:
    """'unknown key algo.vf_coef for algo=grpo; did you mean ...; valid: ...' (the section's keys as composed)."""
    import difflib

    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(compose(others), parent) if parent else compose(others)
    except ValueError:
        node = None
    if not OmegaConf.is_dict(node):
        return f"bad config: unknown key {key}; see `rlvla train --help-config` for the keys"
    valid = sorted(str(k) for k in node.keys())
    what = f" for algo={node.name}" if parent == "algo" and "name" in node else ""
    close = difflib.get_close_matches(leaf, valid, n=2)
    hint = f"; did you mean {' or '.join(f'{parent}.{c}' for c in close)}" if close else ""
    return f"unknown key {key}{what}{hint}; valid {parent or 'top-level'} keys: {', '.join(valid)}"


# Of ``train.*``, what an online run uses (its loop settings are ``algo.*``).
ONLINE_TRAIN_KEYS = ("seed", "grad_clip", "weight_decay", "time_limit_s", "threads", "device")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].strip()


def check_overrides(cfg) -> None:
    """An override that the run would silently ignore is an error naming it and what applies instead.

    - ``init=`` fixes the policy (its saved config replaces ``policy.*`` and ``head``): a ``head=`` or
      ``policy.*`` override that differs from the init policy's config would be ignored (one that agrees is fine).
    - Online algorithms take their loop from ``algo.*``: ``data.*`` and ``train.*`` other than
      :data:`ONLINE_TRAIN_KEYS` would be ignored.
    - ``algo=sft`` trains a new policy from a dataset: ``init=`` would be ignored.
    """
    from rlvla.algos.online import CONFIGS as ONLINE

    keys = {_key(o): o for o in cfg.get("overrides", [])}
    name = str(cfg.algo.name)
    if name == "sft" and cfg.init:
        raise ValueError(f"algo=sft trains a new policy from data.path and ignores init={cfg.init}; drop init, or continue a "
                         "policy with an offline (e.g. algo=awr) or online (e.g. algo=grpo) algorithm")  # fmt: skip
    if cfg.init:
        bad = _conflicts_with_init(cfg, keys)
        if bad:
            raise ValueError(f"init={cfg.init} fixes the policy (its config replaces head and policy.*), so {' '.join(bad)} "
                             "would be ignored; drop it, or train a new policy with algo=sft")  # fmt: skip
    if name in ("reward_model", "world_model"):
        bad = [o for k, o in keys.items() if k == "head" or k.startswith("policy.") or k == "init" or k.startswith("eval.")]
        if bad:
            raise ValueError(f"algo={name} trains a {name.replace('_', ' ')} (its network in algo.*: width, hidden, ...), so "
                             f"{' '.join(bad)} would be ignored")  # fmt: skip
    if name in ONLINE:
        bad = [o for k, o in keys.items() if k.startswith("data.") or (k.startswith("train.") and k[6:] not in ONLINE_TRAIN_KEYS)]
        if bad:
            raise ValueError(f"algo={name} takes its loop settings from algo.* (algo.iterations, algo.lr, algo.minibatch, ...), "
                             f"so {' '.join(bad)} would be ignored; of train.* only {', '.join(ONLINE_TRAIN_KEYS)} apply")  # fmt: skip


def _conflicts_with_init(cfg, keys: dict) -> list[str]:
    """The ``head=`` / ``policy.*`` overrides whose value differs from the ``init`` policy's saved config."""
    from omegaconf import OmegaConf

    from rlvla.checkpoints import resolve_checkpoint
    from rlvla.policies import VLAPolicy

    wanted = {k: o for k, o in keys.items() if k == "head" or k.startswith("policy.")}
    if not wanted:
        return []
    try:
        saved = VLAPolicy.read_config(resolve_checkpoint(cfg.init)).to_dict()
    except (FileNotFoundError, ValueError):
        return []  # a missing or unreadable init is reported where it is loaded
    bad = []
    for k, o in wanted.items():
        if k == "head":
            same = str(cfg.policy.head.name) == saved["head"]["name"]
        else:
            node = saved
            for part in k.split(".")[1:]:
                node = node.get(part, "<missing>") if isinstance(node, dict) else "<missing>"
            mine = OmegaConf.select(cfg, k)
            same = (OmegaConf.to_container(mine) if OmegaConf.is_config(mine) else mine) == node
        if not same:
            bad.append(o)
    return bad


def section(cfg, key: str):
    """A composed section as its validated dataclass (``__post_init__`` checks run here)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_object(cfg[key])
    except TypeError as e:
        raise ValueError(f"bad config section {key!r}: {e}") from None


def policy_config(cfg) -> PolicyConfig:
    """The policy part of a composed config as a validated :class:`PolicyConfig`."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg.policy, resolve=True)
    return PolicyConfig.from_dict(d)
