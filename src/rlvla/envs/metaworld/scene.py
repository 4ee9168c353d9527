"""Per-episode changes to a MuJoCo model's appearance: goal markers, colours and lighting, camera pose.

Each function works from a snapshot of the model's original values taken once, so perturbations never
accumulate across episodes and ``id`` episodes always see the unmodified scene.
"""

from __future__ import annotations

import numpy as np

# Goal markers: MetaWorld draws the goal as a 1-2 pixel site at 64x64. A sphere of this radius covers
# several pixels at 64x64 from the corner cameras while staying smaller than the objects it marks.
GOAL_MARKER_RADIUS = 0.04
GOAL_MARKER_RGBA = np.array([0.1, 0.9, 0.1, 1.0])

# ood-visual: colour and light changes, each magnitude drawn uniformly in [lo, hi].
TINT_RANGE = (0.35, 0.75)  # how far each colour moves towards a random other colour
LIGHT_SCALE_RANGE = (0.45, 1.9)
LIGHT_DIR_JITTER = 0.5

# ood-camera: position offset (m) and rotation (rad) magnitudes.
CAMERA_SHIFT_RANGE = (0.05, 0.10)
CAMERA_ROT_RANGE = (np.deg2rad(6.0), np.deg2rad(12.0))


class SceneEditor:
    """Holds the original appearance of ``model`` and applies one split's perturbation per episode."""

    def __init__(self, model, robot_root_body: int | None = None) -> None:
        self.model = model
        m = model
        if robot_root_body is None:
            robot_root_body = self._find_robot_root(m)
        self.robot_root = robot_root_body
        # Object geoms: geoms on bodies outside the robot's and the mocap's kinematic trees and not the world.
        body_root = m.body_rootid
        mocap_bodies = {b for b in range(m.nbody) if m.body_mocapid[b] >= 0}
        self.object_geoms = np.array(
            [
                g
                for g in range(m.ngeom)
                if m.geom_bodyid[g] != 0
                and body_root[m.geom_bodyid[g]] != robot_root_body
                and body_root[m.geom_bodyid[g]] not in mocap_bodies
            ],
            dtype=int,
        )
        self.orig = {
            "geom_rgba": m.geom_rgba.copy(),
            "mat_rgba": m.mat_rgba.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "light_ambient": m.light_ambient.copy(),
            "light_dir": m.light_dir.copy(),
            "headlight_diffuse": np.array(m.vis.headlight.diffuse).copy(),
            "headlight_ambient": np.array(m.vis.headlight.ambient).copy(),
            "cam_pos": m.cam_pos.copy(),
            "cam_quat": m.cam_quat.copy(),
            "site_size": m.site_size.copy(),
            "site_rgba": m.site_rgba.copy(),
        }

    @staticmethod
    def _find_robot_root(m) -> int:
        import mujoco

        bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "right_arm_base_link")
        if bid < 0:
            raise ValueError("model has no body 'right_arm_base_link'; cannot tell robot from objects")
        return int(m.body_rootid[bid])

    def show_goal_markers(self, site_names) -> None:
        """Enlarge and colour the goal sites so the goal is visible at small image sizes."""
        import mujoco

        for name in site_names:
            sid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)
            if sid < 0:
                continue
            self.model.site_type[sid] = mujoco.mjtGeom.mjGEOM_SPHERE
            self.model.site_size[sid] = [GOAL_MARKER_RADIUS, 0, 0]
            self.model.site_rgba[sid] = GOAL_MARKER_RGBA
        self.orig["site_size"] = self.model.site_size.copy()
        self.orig["site_rgba"] = self.model.site_rgba.copy()

    def restore(self) -> None:
        m, o = self.model, self.orig
        m.geom_rgba[:] = o["geom_rgba"]
        m.mat_rgba[:] = o["mat_rgba"]
        m.light_diffuse[:] = o["light_diffuse"]
        m.light_ambient[:] = o["light_ambient"]
        m.light_dir[:] = o["light_dir"]
        m.vis.headlight.diffuse[:] = o["headlight_diffuse"]
        m.vis.headlight.ambient[:] = o["headlight_ambient"]
        m.cam_pos[:] = o["cam_pos"]
        m.cam_quat[:] = o["cam_quat"]

    def perturb_visual(self, rng: np.random.Generator) -> None:
        """Tint materials (table, objects) and object geoms; rescale and re-aim the lights."""
        m, o = self.model, self.orig

        def tint(rgb: np.ndarray) -> np.ndarray:
            target = rng.uniform(0.0, 1.0, size=3)
            amount = rng.uniform(*TINT_RANGE)
            return (1 - amount) * rgb + amount * target

        for i in range(m.nmat):
            m.mat_rgba[i, :3] = tint(o["mat_rgba"][i, :3])
        for g in self.object_geoms:
            m.geom_rgba[g, :3] = tint(o["geom_rgba"][g, :3])
        scale = rng.uniform(*LIGHT_SCALE_RANGE)
        colour = rng.uniform(0.7, 1.0, size=3)
        m.light_diffuse[:] = np.clip(o["light_diffuse"] * scale * colour, 0, 1)
        m.vis.headlight.diffuse[:] = np.clip(o["headlight_diffuse"] * scale * colour, 0, 1)
        m.vis.headlight.ambient[:] = np.clip(o["headlight_ambient"] * rng.uniform(*LIGHT_SCALE_RANGE), 0, 1)
        d = o["light_dir"] + rng.uniform(-LIGHT_DIR_JITTER, LIGHT_DIR_JITTER, size=o["light_dir"].shape)
        m.light_dir[:] = d / np.linalg.norm(d, axis=1, keepdims=True)

    def perturb_cameras(self, rng: np.random.Generator, camera_ids) -> None:
        """Move each camera by 5-10 cm and turn it by 6-12 degrees about a random axis."""
        m, o = self.model, self.orig
        for cid in camera_ids:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            m.cam_pos[cid] = o["cam_pos"][cid] + direction * rng.uniform(*CAMERA_SHIFT_RANGE)
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            angle = rng.uniform(*CAMERA_ROT_RANGE)
            dq = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
            m.cam_quat[cid] = _quat_mul(o["cam_quat"][cid], dq)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    q = np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )
    return q / np.linalg.norm(q)
