"""Measure whether a task's randomised layout can be read from pixels.

For each task: how many pixels the goal marker covers (image with the marker minus image with it hidden), and
how many pixels change between two layouts with the arm in the same pose. Used to write docs/TASKS.md.
"""

from __future__ import annotations

import numpy as np

from rlvla.envs import make_env, train_seeds
from rlvla.envs.metaworld.scene import GOAL_MARKER_RGBA


def changed_pixels(a: np.ndarray, b: np.ndarray, threshold: int = 30) -> int:
    """Pixels whose summed absolute RGB difference exceeds ``threshold``."""
    return int((np.abs(a.astype(int) - b.astype(int)).sum(-1) > threshold).sum())


def goal_marker_pixels(env) -> int:
    """Pixels that change when the goal marker is hidden, in the env's current state."""
    m = env._mw.model
    shown = env._renderer.render(env._mw.data)[env.cameras[0]]
    alpha = m.site_rgba[:, 3].copy()
    goal_sites = [i for i in range(m.nsite) if np.allclose(m.site_rgba[i], GOAL_MARKER_RGBA)]
    m.site_rgba[goal_sites, 3] = 0.0
    hidden = env._renderer.render(env._mw.data)[env.cameras[0]]
    m.site_rgba[:, 3] = alpha
    return changed_pixels(shown, hidden)


def task_visibility(task: str, seeds=None, image_size: int = 64, camera: str = "corner") -> dict:
    seeds = list(seeds or train_seeds(5))
    env = make_env(task, image_size=image_size, cameras=(camera,))
    marker, first, rel = [], [], []
    for s in seeds:
        obs, info = env.reset(seed=s)
        marker.append(goal_marker_pixels(env))
        first.append(obs["image"])
        rel.append(info["goal_pos"] - info["obj_pos"])
    env.close()
    layout_px = [changed_pixels(first[0], f) for f in first[1:]]
    return {"goal_marker_px_min": min(marker), "goal_marker_px_mean": float(np.mean(marker)),
            "layout_change_px_min": min(layout_px),
            # a goal that moves relative to the object must itself be seen; one fixed to the object need not
            "goal_independent": bool(np.max(np.std(rel, axis=0)) > 1e-3)}  # fmt: skip
