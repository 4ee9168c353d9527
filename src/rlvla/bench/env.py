"""`rlvla bench env`: environment throughput, measured in one run so that ratios are meaningful.

Measures low-level env steps per second, each with one rendered frame per policy decision:
  raw        MetaWorld's own env, no rlvla wrapper, a bare mujoco.Renderer with the same fast settings
  raw_full_meshes   the same with every mesh triangle drawn (the renderer's mesh simplification off)
  raw_stock  MetaWorld's own env with its stock Gymnasium renderer (default settings), for reference
  wrapper    rlvla env, one process, chunk 1
  async2     rlvla vector env, 2 spawn workers (steps counted over both)
  chunk4     rlvla env, one process, chunk 4 (one render per 4 low-level steps)
Random actions; episodes reset at the time limit in every variant.
"""

from __future__ import annotations

import json
import time

import numpy as np

from rlvla.envs import make_env, make_vec_env
from rlvla.envs.render import ensure_gl_backend


def _raw(task: str, size: int, camera: str, steps: int, max_steps: int, fast: bool, cell: float | None = None) -> float:
    """MetaWorld without rlvla: its stock renderer, or a bare mujoco.Renderer with our fast settings (``cell``:
    the mesh simplification grid, None: the renderer's default, 0: full meshes)."""
    ensure_gl_backend()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    kw = {} if fast else dict(render_mode="rgb_array", camera_name=camera, width=size, height=size)
    env = ALL_V3_ENVIRONMENTS[task](**kw)
    env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
    env.max_path_length = max_steps
    env.seed(0)
    env.reset()
    if fast:
        from rlvla.envs.render import FastRenderer

        renderer = FastRenderer(env.model, size, (camera,), cell=cell)
        render = lambda: renderer.render(env.data)  # noqa: E731
    else:
        render = env.render
    render()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    n = 0
    for i in range(steps):
        _, _, _, trunc, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        render()
        n += 1
        if trunc:
            env.reset()
    dt = time.perf_counter() - t0
    if fast:
        renderer.close()
    env.close()
    return n / dt


def _single(task: str, size: int, camera: str, steps: int, max_steps: int, chunk: int) -> float:
    env = make_env(task, image_size=size, cameras=(camera,), chunk=chunk, max_steps=max_steps, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    n = 0
    while n < steps:
        _, _, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        n += info["substeps"]
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return n / dt


def _vector(task: str, size: int, camera: str, steps: int, max_steps: int, num_envs: int, mode: str) -> float:
    venv = make_vec_env([task], num_envs, seeds=list(range(num_envs)), mode=mode, image_size=size,
                        cameras=(camera,), max_steps=max_steps)  # fmt: skip
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):  # workers warm up (first render creates the GL context)
        venv.step(rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32))
    t0 = time.perf_counter()
    n = 0
    while n < steps:
        venv.step(rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32))
        n += num_envs
    dt = time.perf_counter() - t0
    venv.close()
    return n / dt


def bench_env(task: str = "push-v3", size: int = 64, camera: str = "corner", steps: int = 1000, max_steps: int = 200) -> dict:
    r = {}
    r["raw_stock_render_steps_per_s"] = _raw(task, size, camera, max(100, steps // 10), max_steps, fast=False)
    r["raw_steps_per_s"] = _raw(task, size, camera, steps, max_steps, fast=True)
    r["raw_full_meshes_steps_per_s"] = _raw(task, size, camera, steps, max_steps, fast=True, cell=0.0)
    r["wrapper_steps_per_s"] = _single(task, size, camera, steps, max_steps, chunk=1)
    r["async2_steps_per_s"] = _vector(task, size, camera, 2 * steps, max_steps, num_envs=2, mode="async")
    r["chunk4_steps_per_s"] = _single(task, size, camera, 2 * steps, max_steps, chunk=4)
    r["ratios"] = {
        "wrapper_vs_raw": r["wrapper_steps_per_s"] / r["raw_steps_per_s"],
        "wrapper_vs_raw_stock_render": r["wrapper_steps_per_s"] / r["raw_stock_render_steps_per_s"],
        "simplified_vs_full_meshes": r["raw_steps_per_s"] / r["raw_full_meshes_steps_per_s"],
        "async2_vs_wrapper": r["async2_steps_per_s"] / r["wrapper_steps_per_s"],
        "chunk4_vs_chunk1": r["chunk4_steps_per_s"] / r["wrapper_steps_per_s"],
    }
    r["targets"] = {"wrapper_vs_raw": 0.8, "async2_vs_wrapper": 1.4, "chunk4_vs_chunk1": 2.5}
    r["met"] = {k: r["ratios"][k] >= v for k, v in r["targets"].items()}
    r["setup"] = {"task": task, "image_size": size, "camera": camera, "steps": steps, "max_steps": max_steps}
    return r


def bench_main(args) -> int:
    if args.what != "env":
        raise SystemExit(f"unknown benchmark {args.what!r}; valid: env")
    r = bench_env(task=args.task, size=args.image_size, steps=args.steps)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        for k, v in r.items():
            print(f"{k}: {v}")
    return 0 if all(r["met"].values()) else 1
