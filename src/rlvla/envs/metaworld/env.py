"""MetaWorld v3 tasks as vision-language Gymnasium environments.

Observation (a dict):
    image           uint8 (H, W, 3), upright, from the first camera
    image_<camera>  uint8 (H, W, 3) for each further camera, when several are asked for
    proprio         float32 (4,): the robot's own state only: hand position (x, y, z) and gripper opening
    instruction     str: a natural-language instruction for the task

Object and goal positions never enter the observation (unless ``full_state=True``: then ``proprio`` is MetaWorld's
full 39-d state, the state-observation setting of classic RL baselines; use it with ``cameras=()``, which skips
rendering): they are in ``info`` (``obj_pos``, ``goal_pos``,
``rand_vec``, ``state``: MetaWorld's full 39-d state) for rewards, experts and analysis.

Action: float32 in [-1, 1]: (4,) = hand displacement (x, y, z) and gripper effort, or (chunk, 4) when
``chunk > 1``: one ``step`` then runs the chunk's actions in order, renders once at the end, sums the rewards
and stops early at termination; ``info["substep_rewards"]`` (length ``chunk``, zero-padded) and
``info["substeps"]`` (how many ran) keep the per-action rewards, and ``info["progress"]`` is the dense reward of
the last one on the common scale (reward / ``REWARD_SCALE``, in [0, 1]): the potential for shaping.

``camera_every=k``: a camera slower than the control loop (as on most robots): a new image every ``k`` low-level
steps (counted from the reset), the last one repeated in between; proprio is always current. Collection uses it to
render a quarter of the frames for chunk-4 policies, which see a fresh image at every decision.

``terminated`` is True on success (``terminate_on_success``); ``truncated`` when ``max_steps`` low-level
actions have run. They are never merged.

Layouts: ``reset(seed=s)`` makes the episode's layout, instruction and perturbation a function of the layout
seed ``s`` alone (see :mod:`rlvla.envs.splits`); a ``reset()`` without a seed takes the next seed after the
previous episode's. MetaWorld's own benchmark wrappers cycle through 50 fixed layouts whatever the seed, so
the layout vector is drawn here, from our own seeded generator.
"""

from __future__ import annotations

import types

import gymnasium as gym
import numpy as np

from rlvla.envs import splits as S
from rlvla.envs.metaworld.instructions import INSTRUCTIONS
from rlvla.envs.metaworld.scene import SceneEditor
from rlvla.envs.metaworld.tasks import DEFAULT_MAX_STEPS, REWARD_SCALE, TASKS
from rlvla.envs.render import FastRenderer, check_cameras, ensure_gl_backend
from rlvla.envs.suites import resolve_task

INSTRUCTION_CHARSET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 ,.'-")
PROPRIO_DIM = 4
STATE_DIM = 39  # MetaWorld's full state (hand, gripper, objects, goal): the state-observation setting (full_state=True)


class NonFiniteError(ValueError):
    """An action, observation or reward contained NaN or inf."""


class MetaWorldVLAEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        split: str = "id",
        seed: int | None = None,
        image_size: int = 64,
        cameras=("corner",),
        chunk: int = 1,
        max_steps: int = DEFAULT_MAX_STEPS,
        terminate_on_success: bool = True,
        goal_marker: bool = True,
        full_state: bool = False,
        render_mode: str | None = None,
        camera_every: int = 1,
        layout_edge: float = 0.0,
    ) -> None:
        ensure_gl_backend()
        self._check_args(task, split, seed, image_size, cameras, chunk, max_steps, render_mode)
        self.chunk = int(chunk)
        self.max_steps = int(max_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.full_state = bool(full_state)
        if int(camera_every) < 1:
            raise ValueError(f"camera_every must be >= 1, got {camera_every}")
        self.camera_every = int(camera_every)
        _check_edge(layout_edge, self.split)
        self.layout_edge = float(layout_edge)
        self._base_seed = seed
        self._task_index = TASKS.index(self.task)
        self._build_sim(goal_marker)
        self._build_spaces()
        self._next_seed: int | None = seed
        self.layout_seed: int | None = None
        self.instruction = ""
        self._t = 0
        self._state = None
        self._last_images: dict[str, np.ndarray] = {}

    def _check_args(self, task, split, seed, image_size, cameras, chunk, max_steps, render_mode) -> None:
        self.task = resolve_task(task)
        if self.task not in TASKS:
            raise ValueError(f"{task!r} is not a MetaWorld task; make it with rlvla.envs.make_env")
        self.split = S.check_split(split)
        if seed is not None:
            S.check_split_seed(self.split, seed)
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: rgb_array")
        self.cameras = check_cameras(cameras)
        self.image_size = int(image_size)
        if self.cameras and not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024], got {image_size}")

    def _build_sim(self, goal_marker: bool) -> None:
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        mw = ALL_V3_ENVIRONMENTS[self.task]()
        mw._partially_observable = False  # full state (goal included) goes to info, never to the observation
        mw.__dict__.pop("sawyer_observation_space", None)
        mw._set_task_called = True
        mw.max_path_length = 10**9  # truncation is ours (max_steps), in low-level steps
        self._mw = mw
        self._rand_low = np.asarray(mw._random_reset_space.low, float)
        self._rand_high = np.asarray(mw._random_reset_space.high, float)
        self._layout_rng = np.random.default_rng(0)
        # Every redraw (MetaWorld rejects layouts whose goal is too close to the object) comes from our generator.
        mw._get_state_rand_vec = types.MethodType(_make_rand_vec_sampler(self), mw)
        self._scene = SceneEditor(mw.model)
        if goal_marker:
            mw.reset()
            self._scene.show_goal_markers([name for name, _ in mw._target_site_config])
        self._renderer = FastRenderer(mw.model, self.image_size, self.cameras) if self.cameras else None
        self._camera_ids = [mujoco.mj_name2id(mw.model, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in self.cameras]

    def _build_spaces(self) -> None:
        spaces = {}
        if self.cameras:
            img = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
            spaces["image"] = img
            for cam in self.cameras[1:]:
                spaces[f"image_{cam}"] = img
        spaces["proprio"] = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM if self.full_state else PROPRIO_DIM,), np.float32)
        spaces["instruction"] = gym.spaces.Text(max_length=128, min_length=1, charset="".join(sorted(INSTRUCTION_CHARSET)))
        self.observation_space = gym.spaces.Dict(spaces)
        shape = (4,) if self.chunk == 1 else (self.chunk, 4)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape, np.float32)

    # ------------------------------------------------------------------ episode set-up
    def set_split(self, split: str) -> None:
        """Take ``split`` from the next reset on, as if built with it (no seed queued; every split-dependent choice,
        the layout rule, the look, the camera and the instruction pool, is made at reset)."""
        split = S.check_split(split)
        _check_edge(self.layout_edge, split)
        self.split = split
        self._next_seed = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = self._next_seed
        if seed is None:  # no seed anywhere: a fresh layout from the env's own generator, from the seeds the split allows
            seeds = S.EVAL_SEEDS if self.split in S.EVAL_ONLY_SPLITS else S.TRAIN_SEEDS
            seed = int(self.np_random.integers(seeds.start, seeds.stop))
        seed = int(seed)
        self.seed_role = S.check_split_seed(self.split, seed)
        self.layout_seed = seed
        self._next_seed = seed + 1

        # Independent streams per purpose, so that id/visual/camera/language share layouts seed for seed.
        self._layout_rng = np.random.default_rng([self._task_index, seed, 0])
        look_rng = np.random.default_rng([self._task_index, seed, 1])
        words_rng = np.random.default_rng([self._task_index, seed, 2])

        self._scene.restore()
        if self.split == "ood-visual":
            self._scene.perturb_visual(look_rng)
        elif self.split == "ood-camera":
            self._scene.perturb_cameras(look_rng, self._camera_ids)
        state, _ = reset_metaworld(self._mw)
        for site in self._mw._target_site_config:  # MetaWorld moves its goal sites at the first step: draw them now
            self._mw._set_pos_site(*site)
        self._after_layout()
        self.instruction = self._draw_instruction(words_rng)
        if options and "instruction" in options:
            self.instruction = str(options["instruction"])
        self._t = 0
        self._state = state
        self._check_finite(state, "observation")
        obs = self._observe()
        return obs, self._info(success=False)

    def _draw_layout(self) -> np.ndarray:
        """One MetaWorld ``rand_vec`` (object and goal positions) from the layout stream, by the split's rule."""
        return S.sample_layout(self._layout_rng, self._rand_low, self._rand_high, self.split, self.layout_edge)

    def _after_layout(self) -> None:
        """Called once the episode's layout is in the scene, before the first render (a suite's scene changes)."""

    def _draw_instruction(self, rng: np.random.Generator) -> str:
        """The episode's instruction (called after the layout is made): held-out phrasings on ``ood-language``."""
        pool = INSTRUCTIONS[self.task]["heldout" if self.split == "ood-language" else "train"]
        return pool[int(rng.integers(len(pool)))]

    # ------------------------------------------------------------------ stepping
    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        act = np.asarray(action, dtype=np.float32)
        if act.shape != self.action_space.shape:
            raise ValueError(f"action shape {act.shape} does not match the action space {self.action_space.shape}")
        if not np.all(np.isfinite(act)):
            raise NonFiniteError(f"action contains NaN or inf: {act.tolist()}; check the policy's output")
        acts = act.reshape(-1, 4)
        rewards = np.zeros(self.chunk, dtype=np.float32)
        terminated = truncated = success = False
        n = 0
        mw_info: dict = {}
        for a in acts:
            state, r, _, _, mw_info = self._mw.step(np.clip(a, -1.0, 1.0))
            self._t += 1
            rewards[n] = r
            n += 1
            self._check_finite(state, "observation")
            self._check_finite(np.asarray(r), "reward")
            success = success or bool(mw_info.get("success", False))
            if success and self.terminate_on_success:
                terminated = True
                break
            if self._t >= self.max_steps:
                truncated = True
                break
        self._state = state
        obs = self._observe(render=self._t % self.camera_every == 0)
        info = self._info(success=success)
        info["substep_rewards"] = rewards
        info["substeps"] = n
        info["progress"] = float(rewards[n - 1]) / REWARD_SCALE if n else 0.0
        for key in ("near_object", "grasp_success", "grasp_reward", "in_place_reward", "obj_to_target"):
            if key in mw_info:
                info[key] = float(mw_info[key])
        return obs, float(rewards[:n].sum()), terminated, truncated, info

    # ------------------------------------------------------------------ helpers
    def _observe(self, render: bool = True) -> dict:
        obs = {}
        if self._renderer is not None:
            if render or not self._last_images:
                self._last_images = self._renderer.render(self._mw.data)
            obs["image"] = self._last_images[self.cameras[0]]
            for cam in self.cameras[1:]:
                obs[f"image_{cam}"] = self._last_images[cam]
        obs["proprio"] = (self._state if self.full_state else self._state[:PROPRIO_DIM]).astype(np.float32)
        obs["instruction"] = self.instruction
        return obs

    def _info(self, success: bool) -> dict:
        mw = self._mw
        return {
            "success": bool(success),
            "task": self.task,
            "split": self.split,
            "layout_seed": self.layout_seed,
            "instruction": self.instruction,
            "obj_pos": np.asarray(mw._get_pos_objects()[:3], dtype=np.float32),
            "goal_pos": np.asarray(mw._target_pos, dtype=np.float32),
            "rand_vec": np.asarray(mw._last_rand_vec, dtype=np.float32),
            "state": np.asarray(self._state, dtype=np.float32),
            "elapsed_steps": self._t,
        }

    def _check_finite(self, x, what: str) -> None:
        if not np.all(np.isfinite(x)):
            raise NonFiniteError(
                f"simulator returned a non-finite {what} in task {self.task} (layout seed {self.layout_seed}, "
                f"step {self._t}); the physics went unstable: reset the environment"
            )

    def render(self):
        if self._renderer is None:
            raise RuntimeError("this environment renders no camera (cameras=()); pass cameras=('corner',)")
        return self._last_images[self.cameras[0]]

    def get_sim_state(self) -> dict:
        """Everything needed to restore this exact moment later (for tree search and analysis)."""
        d = self._mw.data
        return {
            "qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "mocap_pos": d.mocap_pos.copy(),
            "mocap_quat": d.mocap_quat.copy(), "act": d.act.copy(), "time": float(d.time), "t": self._t,
            "state": None if self._state is None else self._state.copy(),
            "prev_obs": None if getattr(self._mw, "_prev_obs", None) is None else self._mw._prev_obs.copy(),
        }  # fmt: skip

    def set_sim_state(self, s: dict) -> None:
        import mujoco

        d = self._mw.data
        d.qpos[:], d.qvel[:], d.mocap_pos[:], d.mocap_quat[:] = s["qpos"], s["qvel"], s["mocap_pos"], s["mocap_quat"]
        d.act[:] = s["act"]
        d.time = s["time"]
        mujoco.mj_forward(self._mw.model, d)
        self._t = s["t"]
        self._state = s["state"].copy()
        self._mw.curr_path_length = s["t"]
        if s.get("prev_obs") is not None:
            self._mw._prev_obs = s["prev_obs"].copy()

    def branch(self, state: dict, action):
        """Tree search: restore ``state``, step ``action`` and return the step's result plus the state reached."""
        self.set_sim_state(state)
        out = self.step(action)
        return (*out, self.get_sim_state())

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None
        mw = getattr(self, "_mw", None)
        if mw is not None and getattr(mw, "mujoco_renderer", None) is not None:
            try:
                mw.mujoco_renderer.close()
            except Exception:  # noqa: BLE001 - nothing was opened on it
                pass


def _check_edge(layout_edge: float, split: str) -> None:
    if not 0.0 <= float(layout_edge) <= 1.0 or (layout_edge and split != "id"):
        raise ValueError(f"layout_edge is a probability in [0, 1] for the id split (training layouts); got {layout_edge} on {split}")


def _no_hand_move(steps: int = 50) -> None:
    """Stands in for ``_reset_hand`` in the reset_model call whose physics is wiped (see :func:`reset_metaworld`)."""


def reset_metaworld(mw):
    """MetaWorld's ``reset`` (3.1.1) with one hand move instead of two. Its reset runs ``reset_model`` twice: once
    itself, then inside gymnasium's reset after ``mj_resetData``, which wipes the first call's physics; the first
    call's layout draws still count (the episode's layout is the second call's). Here the first call keeps its draws
    and skips the hand's 50-step move to its start (~7 ms of each reset): the state, the layout and every later step
    are MetaWorld's own, bit for bit (tests/test_envs.py)."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    mw.curr_path_length = 0
    mw._reset_hand = _no_hand_move  # this call only
    try:
        mw.reset_model()
    finally:
        del mw._reset_hand
    obs, info = super(SawyerXYZEnv, mw).reset()
    mw._prev_obs = obs[:18].copy()
    obs[18:36] = mw._prev_obs
    return obs.astype(np.float64), info


def _make_rand_vec_sampler(env: MetaWorldVLAEnv):
    def _get_state_rand_vec(mw_self):
        vec = env._draw_layout()
        mw_self._last_rand_vec = vec
        return vec

    return _get_state_rand_vec
