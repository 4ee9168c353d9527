"""Environments: MetaWorld v3 as vision-language Gymnasium envs, OOD splits, experts, vector execution.

This package knows nothing of learning: it imports no policies or algorithms.
"""

from __future__ import annotations

from rlvla.envs.render import ensure_gl_backend

ensure_gl_backend()  # MuJoCo reads MUJOCO_GL once, when first imported: choose a headless backend early

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
from rlvla.envs.tasks import REWARD_SCALE, TASK_SETS, TASKS, resolve_task, resolve_tasks  # noqa: E402
from rlvla.envs.vector import VECTOR_MODES, choose_mode, env_fn, make_vector  # noqa: E402

__all__ = [
    "EVAL_ONLY_SPLITS", "EVAL_SEEDS", "REWARD_SCALE", "SPLITS", "TASKS", "TASK_SETS", "TRAIN_SEEDS", "VECTOR_MODES",
    "check_split_seed", "choose_mode", "eval_seeds", "make_env", "make_vec_env", "resolve_task",
    "resolve_tasks", "seed_role", "train_seeds",
]  # fmt: skip


def make_env(
    name: str,
    split: str = "id",
    seed: int | None = None,
    image_size: int = 64,
    cameras=("corner",),
    chunk: int = 1,
    max_steps: int | None = None,
    **kwargs,
):
    """One MetaWorld vision-language env. See :mod:`rlvla.envs.metaworld_env` for the spaces.

    ``seed`` is the first episode's layout seed (later resets without a seed take the next ones);
    evaluation-only splits need a seed from ``EVAL_SEEDS``.
    """
    from rlvla.envs.metaworld_env import DEFAULT_MAX_STEPS, MetaWorldVLAEnv

    return MetaWorldVLAEnv(
        name,
        split=split,
        seed=seed,
        image_size=image_size,
        cameras=cameras,
        chunk=chunk,
        max_steps=DEFAULT_MAX_STEPS if max_steps is None else max_steps,
        **kwargs,
    )


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
