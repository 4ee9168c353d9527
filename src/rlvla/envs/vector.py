"""Vector execution behind one API: synchronous (in-process) or asynchronous (``spawn`` workers).

Workers that render must be started with ``spawn``: forking a process that holds a GL context deadlocks.
``mode="auto"`` picks asynchronous workers when there is more than one env and more than one core.
Episodes reset themselves in the same step that ends them (Gymnasium's SAME_STEP autoreset): the final
observation and info are in ``info["final_obs"]`` / ``info["final_info"]`` for bootstrapping.
"""

from __future__ import annotations

import functools
import os

import gymnasium as gym

from rlvla.envs.render import ensure_gl_backend

VECTOR_MODES = ("auto", "sync", "async")


def choose_mode(mode: str, num_envs: int) -> str:
    if mode not in VECTOR_MODES:
        raise ValueError(f"unknown vector mode {mode!r}; valid modes: {', '.join(VECTOR_MODES)}")
    if mode == "auto":
        return "async" if num_envs > 1 and (os.cpu_count() or 1) > 1 else "sync"
    return mode


def make_vector(env_fns, mode: str = "auto") -> gym.vector.VectorEnv:
    """A vector env over ``env_fns`` (picklable zero-argument callables)."""
    mode = choose_mode(mode, len(env_fns))
    ensure_gl_backend()  # workers inherit the environment at spawn time
    kwargs = dict(autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    if mode == "sync":
        return gym.vector.SyncVectorEnv(env_fns, **kwargs)
    # The instruction is text, which shared memory cannot hold: observations travel through pipes.
    return gym.vector.AsyncVectorEnv(env_fns, context="spawn", shared_memory=False, **kwargs)


def env_fn(**kwargs):
    """A picklable constructor for one environment (for worker processes)."""
    from rlvla.envs import make_env

    return functools.partial(make_env, **kwargs)
