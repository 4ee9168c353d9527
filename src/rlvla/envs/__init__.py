"""Environments: env suites (MetaWorld v3 embedded; :mod:`rlvla.envs.suites` is the contract a new one implements),
OOD splits and seeds, vector execution and env worker pools.

This package knows nothing of learning: it imports no policies or algorithms.
"""

from __future__ import annotations

from rlvla.envs.render import ensure_gl_backend

ensure_gl_backend()  # MuJoCo reads MUJOCO_GL once, when first imported: choose a headless backend early

from rlvla.envs.metaworld import SUITE as _METAWORLD  # noqa: E402  (registers the default suite)
from rlvla.envs.splits import (  # noqa: E402
    EVAL_ONLY_SPLITS,
    EVAL_SEEDS,
    SPLITS,
    TRAIN_SEEDS,
    check_split_seed,
    eval_seeds,
    seed_role,
    train_seeds,
)
from rlvla.envs.suites import (  # noqa: E402
    DEFAULT_SUITE,
    Suite,
    available_suites,
    get_suite,
    register_suite,
    resolve_task,
    resolve_tasks,
    reward_scale,
    split_task,
)
from rlvla.envs.vector import VECTOR_MODES, choose_mode, env_fn, make_vector  # noqa: E402

# The default suite's names, as before suites existed.
TASKS, TASK_SETS, REWARD_SCALE = _METAWORLD.tasks, _METAWORLD.task_sets, _METAWORLD.reward_scale

__all__ = [
    "DEFAULT_SUITE", "EVAL_ONLY_SPLITS", "EVAL_SEEDS", "REWARD_SCALE", "SPLITS", "Suite", "TASKS", "TASK_SETS",
    "TRAIN_SEEDS", "VECTOR_MODES", "available_suites", "check_split_seed", "choose_mode", "eval_seeds", "get_suite",
    "make_env", "make_vec_env", "register_suite", "resolve_task", "resolve_tasks", "reward_scale", "seed_role",
    "split_task", "train_seeds",
]  # fmt: skip


def make_env(name: str, split: str = "id", seed: int | None = None, image_size: int = 64, cameras=("corner",), chunk: int = 1,
             max_steps: int | None = None, suite_module: str = "", **kwargs):  # fmt: skip
    """One vision-language env of any registered suite: ``"push-v3"`` (the default suite, MetaWorld) or
    ``"<suite>/<task>"``. See :mod:`rlvla.envs.suites` for the contract and :mod:`rlvla.envs.metaworld.env` for
    MetaWorld's spaces. ``suite_module``: import this first (a suite registered outside rlvla, in a worker).

    ``seed`` is the first episode's layout seed (later resets without a seed take the next ones);
    evaluation-only splits need a seed from ``EVAL_SEEDS``.
    """
    if suite_module:
        import importlib

        importlib.import_module(suite_module)
    suite, task = split_task(name)
    return suite.make(task, split=split, seed=seed, image_size=image_size, cameras=cameras, chunk=chunk,
                      max_steps=suite.default_max_steps if max_steps is None else max_steps, **kwargs)  # fmt: skip


def make_vec_env(tasks, num_envs: int, split: str = "id", seeds=None, mode: str = "auto", **env_kwargs):
    """``num_envs`` envs over ``tasks`` (assigned round-robin), synchronous or ``spawn``-asynchronous.

    ``seeds``: one first layout seed per env (defaults to no seed: training layouts drawn per env).
    """
    tasks = resolve_tasks(tasks)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    seeds = [None] * num_envs if seeds is None else list(seeds)
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for {num_envs} envs; give one seed per env")
    for s in seeds:
        if s is not None:
            check_split_seed(split, s)
    fns = [
        env_fn(name=tasks[i % len(tasks)], split=split, seed=seeds[i], **env_kwargs) for i in range(num_envs)
    ]
    return make_vector(fns, mode=mode)
