"""Env suites: the contract a benchmark (MetaWorld, LIBERO, ManiSkill3, a toy) implements, and their registry.

A suite declares, behind one small :class:`Suite` record:

- ``tasks`` and ``task_sets`` (named lists of its tasks);
- ``make(task, split, seed, image_size, cameras, chunk, max_steps, **kwargs)``: a Gymnasium env whose observation
  is ``{"image": (H, W, 3) uint8 (further cameras as "image_<camera>"), "proprio": (P,) float32, "instruction":
  str}``, whose action is (chunk, A) in [-1, 1] ((A,) when chunk is 1), and whose ``step`` info holds ``info_keys``: at least ``success`` (bool),
  ``substeps`` (low-level steps the chunk ran) and ``progress`` (dense progress in [0, 1], the shaping potential);
  ``reset(seed=...)`` makes the layout a function of the seed and refuses seeds the split does not allow
  (:mod:`rlvla.envs.splits`);
- ``reward_scale``: its dense reward divided by this lies in [0, 1] per step (:mod:`rlvla.rewards`);
- ``instructions(task) -> {"train": [...], "heldout": [...]}`` and optionally ``expert(task, **cfg)`` (a scripted
  policy for demonstrations) and ``paraphrases(task, instruction)`` (the training phrasings that mean the same: SFT's
  instruction augmentation, ``data.paraphrase``);
- ``module``: the importable module that registers it, so spawned env workers can find it.

Task names: ``"<suite>/<task>"`` everywhere; the default suite's tasks also by their bare names (``"push-v3"`` =
``"metaworld/push-v3"``), which is how datasets and checkpoints record them.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_SUITE = "metaworld"
INFO_KEYS = ("success", "substeps", "progress")


@dataclass
class ExpertConfig:
    """What a suite's scripted expert takes (``Suite.expert(task, config, seed)`` -> an object with
    ``begin_episode()`` and ``act(info) -> action``): noise and injected failures for mixed-quality data."""

    noise_std: float = 0.0  # std of Gaussian noise added to every action (before clipping)
    failure_prob: float = 0.0  # probability that an episode is made to fail
    failure_window: tuple[int, int] = (10, 60)  # the failure starts at a step drawn from this range

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0.0 <= self.failure_prob <= 1.0:
            raise ValueError(f"failure_prob must be in [0, 1], got {self.failure_prob}")
        lo, hi = self.failure_window
        if not 0 <= lo <= hi:
            raise ValueError(f"failure_window must be (lo, hi) with 0 <= lo <= hi, got {self.failure_window}")


@dataclass
class Suite:
    name: str
    tasks: tuple[str, ...]
    make: Callable[..., Any]
    task_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reward_scale: float = 1.0
    instructions: Callable[[str], dict] | None = None
    expert: Callable[..., Any] | None = None
    paraphrases: Callable[[str, str], list[str]] | None = None
    """(task, instruction) -> the training phrasings that mean the same (instruction augmentation); [] if unknown."""
    info_keys: tuple[str, ...] = INFO_KEYS
    default_max_steps: int = 200
    module: str = ""

    def __post_init__(self) -> None:
        if "/" in self.name or not self.tasks:
            raise ValueError(f"a suite needs a name without '/' and at least one task (got {self.name!r}, {len(self.tasks)} tasks)")
        missing = [k for k in INFO_KEYS if k not in self.info_keys]
        if missing:
            raise ValueError(f"suite {self.name!r} must provide info keys {', '.join(missing)} (see rlvla.envs.suites)")


_SUITES: dict[str, Suite] = {}
# "wm": imagined envs of a learned world model (make_env("wm/<task>", world_model=DIR)); the module is named, not
# imported, here: envs know nothing of learning code until a world-model env is asked for
_BUILTIN = {"metaworld": "rlvla.envs.metaworld", "grounded": "rlvla.envs.metaworld.grounded", "wm": "rlvla.worldmodels.env"}


def register_suite(suite: Suite) -> Suite:
    if suite.name in _SUITES and _SUITES[suite.name] is not suite:
        raise ValueError(f"env suite {suite.name!r} is already registered")
    _SUITES[suite.name] = suite
    return suite


def available_suites() -> list[str]:
    return sorted(set(_SUITES) | set(_BUILTIN))


def get_suite(name: str, module: str = "") -> Suite:
    if name not in _SUITES and (module or name in _BUILTIN):
        importlib.import_module(module or _BUILTIN[name])  # registers it
    if name not in _SUITES:
        raise ValueError(f"unknown env suite {name!r}; valid: {', '.join(available_suites())}")
    return _SUITES[name]


def split_task(name: str) -> tuple[Suite, str]:
    """``"suite/task"`` or a bare task of the default suite -> (suite, the suite's task name); one-line error."""
    key = name.strip()
    suite_name, _, task = key.rpartition("/")
    suite = get_suite(suite_name or DEFAULT_SUITE)
    if task in suite.tasks:
        return suite, task
    if f"{task}-v3" in suite.tasks:  # MetaWorld's version suffix may be left out
        return suite, f"{task}-v3"
    close = difflib.get_close_matches(task, suite.tasks, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown task {name!r}{hint}; valid {suite.name} tasks: {', '.join(suite.tasks)}; "
                     f"task sets: {', '.join(suite.task_sets)}")  # fmt: skip


def reward_scale(tasks) -> float:
    """The dense-reward scale shared by ``tasks``' suites; an error if they differ (one dataset, one scale)."""
    scales = {split_task(t)[0].reward_scale for t in tasks}
    if len(scales) != 1:
        raise ValueError(f"tasks {list(tasks)} come from suites with different reward scales {sorted(scales)}; "
                         "train on one suite's tasks, or use algo.reward=sparse")  # fmt: skip
    return scales.pop()


def paraphrase_pools(pairs) -> dict[str, list[str]]:
    """{instruction: its training paraphrases} for (env task, instruction) pairs, from each task's suite; pairs
    whose suite offers none are left out."""
    out = {}
    for task, instruction in pairs:
        suite, name = split_task(task)
        same = suite.paraphrases(name, instruction) if suite.paraphrases else []
        if same:
            out[instruction] = sorted(set(same))
    return out


def suite_module(name: str) -> str:
    """The module a worker process must import to make task ``name`` ("" for built-in suites)."""
    suite, _ = split_task(name)
    return "" if suite.name in _BUILTIN else suite.module


def canonical(suite: Suite, task: str) -> str:
    return task if suite.name == DEFAULT_SUITE else f"{suite.name}/{task}"


def resolve_task(name: str) -> str:
    """Canonical task name ('reach', 'reach-v3' and 'metaworld/reach-v3' give 'reach-v3'; a toy suite's 'toy/a')."""
    return canonical(*split_task(name))


def resolve_tasks(spec) -> tuple[str, ...]:
    """Tasks from a task-set name (``"mt10"``, ``"<suite>/<set>"``, a suite's name alone for all its tasks:
    ``"grounded"``), a comma-separated string or a list."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        suite_name, _, set_name = item.rpartition("/")
        if not suite_name and item not in get_suite(DEFAULT_SUITE).task_sets and item in available_suites():
            suite_name, set_name = item, "all"  # a suite's name alone: all its tasks
        suite = get_suite(suite_name or DEFAULT_SUITE)
        sets = {"all": suite.tasks, **suite.task_sets}
        names = [canonical(suite, t) for t in sets[set_name]] if set_name in sets else [resolve_task(item)]
        out.extend(n for n in names if n not in out)
    if not out:
        raise ValueError(f"no tasks given; name tasks or a task set ({', '.join(get_suite(DEFAULT_SUITE).task_sets)})")
    return tuple(out)
