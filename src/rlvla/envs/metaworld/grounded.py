"""The grounded suite: MetaWorld tasks where the policy must look and must read.

Every episode shows ``N_CANDIDATES`` candidates in the three colours of ``COLOURS``: coloured goal markers
(``reach``, ``push``, ``pick-place``: which marker is the goal) or coloured buttons (``button-press-topdown``:
which button to press). The instruction names the colour of the one that counts ("push the puck to the blue
target"). The candidates are exchangeable: all are drawn from the same region by the split's rule (the object
too), then the target and the colours are drawn uniformly, so a policy that ignores the image or the instruction
succeeds about 1/N of the time.

Decoys exist only in the rendered image (:meth:`rlvla.envs.render.FastRenderer.set_decoys`), drawn exactly as
the real target is drawn (a copy of its scene geoms, recoloured); the physics, ``proprio`` and the observation
dict never see them. ``info`` holds the truth for experts and analysis: ``goal_pos`` (the real goal),
``candidates`` (N, 3), ``target_index``, ``target_colour`` and ``colours`` (per candidate).

Language: each task has ``TRAIN`` phrasings (>= 10 per task, used for training and the ``id``-style splits) and
``HELDOUT`` phrasings used only by ``ood-language``. Held-out phrasings change the wording (other verbs, nouns and
sentence shapes), never the colour words: the split tests paraphrase, not new concepts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from rlvla.envs import splits as S
from rlvla.envs.metaworld.env import MetaWorldVLAEnv
from rlvla.envs.metaworld.tasks import REWARD_SCALE
from rlvla.envs.suites import Suite, register_suite

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.9, 0.1, 0.1, 1.0),
    "green": (0.1, 0.8, 0.15, 1.0),
    "blue": (0.1, 0.25, 1.0, 1.0),
}
N_CANDIDATES = 3
GOAL_MARKER_RADIUS = 0.05  # larger than the single-goal suite's 4 cm: colour must be told apart at 64x64
MAX_LAYOUT_DRAWS = 10_000


@dataclass(frozen=True)
class GroundedTask:
    base: str  # the MetaWorld task that runs the physics, reward and success
    kind: str  # "goal": candidates are goal markers; "object": candidates are copies of the object (button)
    low: tuple[float, float, float]  # candidate region (goal positions or object positions)
    high: tuple[float, float, float]
    min_sep: float  # candidates at least this far apart in x-y (m), so that reaching a decoy never counts
    train: tuple[str, ...]
    heldout: tuple[str, ...]


_REACH_TRAIN = (
    "reach the {c} target", "move the gripper to the {c} ball", "touch the {c} sphere", "go to the {c} marker",
    "put the gripper on the {c} target", "reach for the {c} ball", "move your hand to the {c} sphere",
    "bring the gripper to the {c} goal", "position the hand at the {c} marker", "find the {c} ball and touch it",
    "send the gripper to the {c} target", "reach the {c} goal marker",
)  # fmt: skip
_REACH_HELDOUT = (
    "guide the robot arm until it contacts the {c} orb", "the {c} dot is where the claw should end up",
    "navigate the tool tip over to the {c} point", "make the end effector arrive at the {c} round marker",
)  # fmt: skip
_PUSH_TRAIN = (
    "push the puck to the {c} target", "slide the puck onto the {c} marker", "move the puck to the {c} goal",
    "push the disc to the {c} ball", "shove the puck over to the {c} target", "slide the puck to the {c} sphere",
    "push the puck until it reaches the {c} marker", "move the disc onto the {c} goal",
    "bring the puck to the {c} target by pushing it", "push the object to the {c} marker",
    "slide the disc over to the {c} target", "get the puck to the {c} ball",
)  # fmt: skip
_PUSH_HELDOUT = (
    "nudge the hockey puck across the table toward the {c} orb", "the {c} dot is where the puck has to end up",
    "drive the round block along the surface to the {c} point", "relocate the flat disk so it sits at the {c} spot",
)  # fmt: skip
_PICK_TRAIN = (
    "pick up the puck and place it at the {c} target", "lift the puck and put it on the {c} ball",
    "grab the puck and move it to the {c} marker", "pick the object and place it at the {c} sphere",
    "carry the puck to the {c} goal", "pick up the disc and bring it to the {c} target",
    "lift the object to the {c} marker", "grasp the puck and hold it at the {c} ball",
    "take the puck to the {c} sphere", "pick and place the puck at the {c} goal",
    "grab the disc and carry it to the {c} target", "move the puck through the air to the {c} marker",
)  # fmt: skip
_PICK_HELDOUT = (
    "raise the hockey puck and deliver it to the {c} orb", "the {c} dot is where the lifted disk should be held",
    "clutch the round block and transport it to the {c} point", "hoist the flat disk up to the {c} spot",
)  # fmt: skip
_BUTTON_TRAIN = (
    "press the {c} button", "push the {c} button down", "press down on the {c} button", "hit the {c} button",
    "push down the {c} button from above", "press the {c} button from the top", "tap the {c} button",
    "find the {c} button and press it", "push the button that is {c}", "press the button with the {c} top",
    "go to the {c} button and push it", "press on the {c} button",
)  # fmt: skip
_BUTTON_HELDOUT = (
    "depress the {c} switch with the claw", "the {c} key is the one the robot should activate",
    "lower the end effector onto the {c} pushbutton", "activate the {c} knob by pushing it in",
)  # fmt: skip

GROUNDED: dict[str, GroundedTask] = {
    "reach": GroundedTask("reach-v3", "goal", (-0.25, 0.7, 0.15), (0.25, 0.9, 0.15), 0.12, _REACH_TRAIN, _REACH_HELDOUT),
    "push": GroundedTask("push-v3", "goal", (-0.25, 0.75, 0.02), (0.25, 0.9, 0.02), 0.10, _PUSH_TRAIN, _PUSH_HELDOUT),
    "pick-place": GroundedTask("pick-place-v3", "goal", (-0.25, 0.75, 0.15), (0.25, 0.9, 0.15), 0.12, _PICK_TRAIN,
                               _PICK_HELDOUT),
    "button-press-topdown": GroundedTask("button-press-topdown-v3", "object", (-0.4, 0.7, 0.115), (0.4, 0.9, 0.115),
                                         0.2, _BUTTON_TRAIN, _BUTTON_HELDOUT),
}  # fmt: skip
TASKS: tuple[str, ...] = tuple(GROUNDED)
# The grounded quickstart's tasks: those whose skills 50 demonstrations teach within its budget on two cores (push
# and pick-place stay skill-limited there: BENCHMARKS.md, "SFT on the grounded suite").
QUICKSTART: tuple[str, ...] = ("reach", "button-press-topdown")
# Episodes end after 150 low-level steps (MetaWorld suite: 200). The expert's longest episode over 50 evaluation
# layouts per task and split is 145 steps (button-press-topdown, ood-position; p95 <= 104, and <= 72 everywhere
# else); a policy that has not succeeded by 150 does not later (SFT and RL policies' successes end by step 77),
# and every failed episode, in rollouts and evaluations, costs a quarter less.
MAX_STEPS = 150
OBJECT_CLEARANCE = 0.15  # MetaWorld's own rule: the object starts at least this far (x-y) from the goal


_PAIRS = tuple((i, j) for i in range(N_CANDIDATES) for j in range(i + 1, N_CANDIDATES))


def layout_valid(obj, cands, min_sep: float) -> bool:
    """Candidates at least ``min_sep`` apart in x-y, and the object (if any) at least ``OBJECT_CLEARANCE`` from each.
    Scalar arithmetic (the distances numpy's norm gives, bit for bit): a layout is drawn by rejection, ~130 draws
    per button layout, and the array version cost each reset ~17 ms."""
    xy = [(float(c[0]), float(c[1])) for c in cands]
    for i, j in _PAIRS:
        dx, dy = xy[i][0] - xy[j][0], xy[i][1] - xy[j][1]
        if math.sqrt(dx * dx + dy * dy) < min_sep:
            return False
    if obj is None:
        return True
    ox, oy = float(obj[0]), float(obj[1])
    return all(math.sqrt((x - ox) * (x - ox) + (y - oy) * (y - oy)) >= OBJECT_CLEARANCE for x, y in xy)


def instructions(task: str) -> dict[str, list[str]]:
    """Every instruction the task can give: ``{"train": [...], "heldout": [...]}`` (templates x colours)."""
    spec = GROUNDED[task]
    return {k: [t.format(c=c) for t in temps for c in COLOURS] for k, temps in (("train", spec.train), ("heldout", spec.heldout))}


def paraphrases(task: str, instruction: str) -> list[str]:
    """The training phrasings that mean the same as ``instruction`` (same task, same colour); [] if none match."""
    spec = GROUNDED[task.rpartition("/")[2]]
    for temp in spec.train + spec.heldout:
        m = re.fullmatch(re.escape(temp).replace(re.escape("{c}"), "(?P<c>[a-z]+)"), instruction)
        if m and m["c"] in COLOURS:
            return [t.format(c=m["c"]) for t in spec.train]
    return []


class GroundedEnv(MetaWorldVLAEnv):
    """A MetaWorld task with ``N_CANDIDATES`` coloured candidates; the instruction names the one that counts."""

    def __init__(self, task: str, **kwargs) -> None:
        if task not in GROUNDED:
            raise ValueError(f"unknown grounded task {task!r}; valid: {', '.join(GROUNDED)}")
        self.spec = GROUNDED[task]
        self._cand_low = np.tile(self.spec.low, N_CANDIDATES)
        self._cand_high = np.tile(self.spec.high, N_CANDIDATES)
        super().__init__(self.spec.base, **kwargs)
        self.base_task = self.task
        self.task = f"grounded/{task}"
        self._task_index = 1000 + TASKS.index(task)  # streams of their own, apart from the base task's
        self._bind_targets()

    def _build_sim(self, goal_marker: bool) -> None:
        import gymnasium as gym

        super()._build_sim(goal_marker)
        mw = self._mw
        if self.spec.kind == "goal":  # MetaWorld clips the state's goal to its goal box: widen it to the candidates'
            low = np.minimum(mw.goal_space.low, self.spec.low)
            high = np.maximum(mw.goal_space.high, self.spec.high)
            mw.goal_space = gym.spaces.Box(low, high, dtype=np.float64)
            mw.__dict__.pop("sawyer_observation_space", None)

    def _bind_targets(self) -> None:
        import mujoco

        m = self._mw.model
        if self.spec.kind == "goal":
            sid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "goal")
            m.site_size[sid] = [GOAL_MARKER_RADIUS, 0, 0]
            self._target_parts = [(int(mujoco.mjtObj.mjOBJ_SITE), sid, True)]
            self._recolour = lambda rgba: m.site_rgba.__setitem__(sid, rgba)
        else:  # the button: its housing keeps its look, its cap takes the colour
            box = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "box")
            cap = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "button")
            body = {box}
            for b in range(m.nbody):  # the box's subtree (bodies come after their parents)
                if m.body_parentid[b] in body:
                    body.add(b)
            shown = [g for g in range(m.ngeom) if m.geom_group[g] <= 2 and m.geom_bodyid[g] in body]
            caps = [g for g in shown if m.geom_bodyid[g] == cap]
            self._target_parts = [(int(mujoco.mjtObj.mjOBJ_GEOM), g, g in caps) for g in shown]
            m.geom_matid[caps] = -1  # so that the cap's own rgba is what is drawn

            def recolour(rgba):
                m.geom_rgba[caps] = rgba

            self._recolour = recolour

    # ------------------------------------------------------------------ layout: candidates, target, colours
    def _draw_layout(self) -> np.ndarray:
        goal_kind = self.spec.kind == "goal"
        low = np.concatenate([self._rand_low[:3], self._cand_low]) if goal_kind else self._cand_low
        high = np.concatenate([self._rand_high[:3], self._cand_high]) if goal_kind else self._cand_high
        for _ in range(MAX_LAYOUT_DRAWS):
            vec = S.sample_layout(self._layout_rng, low, high, self.split, self.layout_edge)
            obj, cands = (vec[:3], vec[3:].reshape(N_CANDIDATES, 3)) if goal_kind else (None, vec.reshape(N_CANDIDATES, 3))
            if self._valid(obj, cands):
                break
        else:
            raise RuntimeError(f"no valid {self.task} layout in {MAX_LAYOUT_DRAWS} draws; widen the candidate region")
        self.candidates = cands
        self.target_index = int(self._layout_rng.integers(N_CANDIDATES))
        self.colours = [list(COLOURS)[i] for i in self._layout_rng.permutation(len(COLOURS))[:N_CANDIDATES]]
        target = cands[self.target_index]
        return np.concatenate([obj, target]) if goal_kind else target

    def _valid(self, obj, cands) -> bool:
        return layout_valid(obj, cands, self.spec.min_sep)

    def _after_layout(self) -> None:
        self._show_candidates()

    def _draw_instruction(self, rng: np.random.Generator) -> str:
        pool = self.spec.heldout if self.split == "ood-language" else self.spec.train
        return pool[int(rng.integers(len(pool)))].format(c=self.target_colour)

    @property
    def target_colour(self) -> str:
        return self.colours[self.target_index]

    def _show_candidates(self, paint: dict | None = None) -> None:
        """Colour the real target and draw the decoys, each a recoloured copy of the target at its candidate.
        ``paint``: {candidate index: rgba} drawn instead of its colour (to measure the pixels it covers)."""
        rgba = [(paint or {}).get(i, COLOURS[c]) for i, c in enumerate(self.colours)]
        self._recolour(rgba[self.target_index])
        if self._renderer is None:
            return
        true = self._target_position()
        decoys = []
        for i, pos in enumerate(self.candidates):
            if i == self.target_index:
                continue
            parts = [(t, j, rgba[i] if painted else None) for t, j, painted in self._target_parts]
            decoys.append({"copy": parts, "offset": pos - true})
        self._renderer.set_decoys(decoys)

    def colour_pixels(self, threshold: int = 30) -> list[int]:
        """Per candidate (in ``info["candidates"]`` order), the pixels of the first camera's image that show its
        colour now: those that change when it is painted black."""
        if self._renderer is None:
            raise RuntimeError("colour_pixels needs a camera")
        cam = self.cameras[0]
        shown = self._renderer.render(self._mw.data)[cam].astype(int)
        out = []
        for i in range(N_CANDIDATES):
            self._show_candidates({i: (0.0, 0.0, 0.0, 1.0)})
            dark = self._renderer.render(self._mw.data)[cam].astype(int)
            out.append(int((np.abs(shown - dark).sum(-1) > threshold).sum()))
        self._show_candidates()
        return out

    def candidate_pixels(self, camera: str | None = None) -> np.ndarray:
        """Where each candidate's colour is drawn in ``camera``'s image (default: the first), in ``candidates``
        order: (N, 2) (column, row) pixels of the centre of the coloured part (the goal marker, the button's cap),
        from the camera model; no rendering."""
        from rlvla.envs.render import project

        mw = self._mw
        parts = [j for t, j, painted in self._target_parts if painted]
        anchor = (mw.data.site_xpos if self.spec.kind == "goal" else mw.data.geom_xpos)[parts].mean(0)
        points = anchor + (np.asarray(self.candidates, float) - self._target_position())
        return project(mw.model, mw.data, camera or self.cameras[0], points, self.image_size)

    def _target_position(self) -> np.ndarray:
        """Where the real target is drawn (MetaWorld moves push's goal to the puck's height)."""
        mw = self._mw
        if self.spec.kind == "goal":
            return np.asarray(mw._target_pos, float)
        return np.asarray(mw.obj_init_pos, float)

    def _info(self, success: bool) -> dict:
        info = super()._info(success)
        info["task"] = self.task
        if hasattr(self, "candidates"):
            info["candidates"] = self.candidates.astype(np.float32)
            info["target_index"] = self.target_index
            info["target_colour"] = self.target_colour
            info["colours"] = list(self.colours)
        return info


def make(task: str, split: str = "id", seed=None, image_size: int = 64, cameras=("corner",), chunk: int = 1,
         max_steps: int | None = None, **kwargs):  # fmt: skip
    return GroundedEnv(task, split=split, seed=seed, image_size=image_size, cameras=cameras, chunk=chunk,
                       max_steps=MAX_STEPS if max_steps is None else max_steps, **kwargs)  # fmt: skip


def expert(task: str, config=None, seed=None):
    """MetaWorld's scripted policy for the base task: it reads the real goal from ``info["state"]``."""
    from rlvla.envs.metaworld.experts import ScriptedExpert

    return ScriptedExpert(GROUNDED[task.rpartition("/")[2]].base, config, seed=seed)


SUITE = register_suite(Suite(
    name="grounded", tasks=TASKS, make=make, task_sets={"all": TASKS, "quickstart": QUICKSTART}, reward_scale=REWARD_SCALE,
    instructions=instructions, expert=expert, paraphrases=paraphrases,
    info_keys=("success", "substeps", "progress", "substep_rewards", "candidates", "target_index", "target_colour"),
    default_max_steps=MAX_STEPS, module=__name__,
))  # fmt: skip
