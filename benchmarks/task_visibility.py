"""Write docs/TASKS.md: per task, whether its randomised layout is visible at 64x64 from the corner camera; for the
grounded suite, the scripted expert's success on id and ood-position and the pixels the target and decoys cover
from the corner and top-down cameras."""

import sys
import warnings

warnings.filterwarnings("ignore")

from rlvla.envs import TASKS  # noqa: E402
from rlvla.envs.metaworld.grounded import COLOURS, GROUNDED, MAX_STEPS, N_CANDIDATES  # noqa: E402
from rlvla.envs.metaworld.visibility import expert_episodes, grounded_visibility, task_visibility  # noqa: E402

MIN_MARKER_PX = 4  # a goal marker this many pixels is clearly visible at 64x64
MIN_LAYOUT_PX = 4  # two layouts differing by this many pixels are told apart

rows = []
for task in TASKS:
    v = task_visibility(task)
    goal_ok = v["goal_marker_px_min"] >= MIN_MARKER_PX
    layout_ok = v["layout_change_px_min"] >= MIN_LAYOUT_PX
    if not layout_ok:
        verdict = "no: layouts look alike"
    elif not v["goal_independent"]:
        verdict = "yes (goal fixed to the object)"
    elif goal_ok:
        verdict = "yes"
    elif v["goal_marker_px_mean"] > 0:
        verdict = "partly: marker hidden in some layouts"
    else:
        verdict = "marker hidden: only where a second object (bin, box, hole) shows the goal"
    indep = "yes" if v["goal_independent"] else "no"
    rows.append(f"| {task} | {indep} | {v['goal_marker_px_min']} | {v['goal_marker_px_mean']:.1f} | {v['layout_change_px_min']} | {verdict} |")
    print(rows[-1], file=sys.stderr, flush=True)

GROUNDED_CAMERAS = ("corner", "topview")  # topview: what the grounded quickstart records and reads


def _pixels(v: dict) -> str:
    return f"{v['target_px_min']} / {v['target_px_mean']:.1f} | {v['decoy_px_min']} / {v['decoy_px_mean']:.1f} | {100 * v['under_4px']:.0f}%"


grounded = []
for task in GROUNDED:
    px = " | ".join(_pixels(grounded_visibility(task, camera=cam)) for cam in GROUNDED_CAMERAS)
    ok = {split: expert_episodes(f"grounded/{task}", split, 50) for split in ("id", "ood-position")}
    steps = " / ".join(f"{ok[s]['steps_p95']:.0f}, {ok[s]['steps_max']}" for s in ok)
    grounded.append(f"| grounded/{task} | {GROUNDED[task].kind} | {ok['id']['success_rate']:.2f} | "
                    f"{ok['ood-position']['success_rate']:.2f} | {steps} | {px} |")  # fmt: skip
    print(grounded[-1], file=sys.stderr, flush=True)

doc = f"""# Tasks: what the pixels show

## The grounded suite (`--tasks grounded`)

Each episode shows {N_CANDIDATES} candidates, one in each of {", ".join(COLOURS)}: goal markers (radius 5 cm) for
reach, push and pick-place, buttons for button-press-topdown. The instruction names the colour of the one that
counts; the others are decoys drawn only in the image (recoloured copies of the target). All candidates (and the
object) come from the same region by the split's rule and the target and colours are drawn uniformly, so a policy
that ignores the image or the instruction is right about 1/{N_CANDIDATES} of the time.

Measured by `python benchmarks/task_visibility.py`: the scripted expert (MetaWorld's policy for the base task,
reading the real goal from `info`) on 50 evaluation episodes per split, and at reset on 20 training layouts the
pixels (64x64) that show each candidate's colour from the `corner` camera and from `topview` (the camera the grounded
quickstart records and reads): those that change when it is painted black (min / mean; "< 4 px": the share of
candidates shown by fewer than 4 pixels). Expert steps: the 95th percentile and the maximum length of its successful
episodes on id / ood-position, against the episode limit of {MAX_STEPS}.

| task | candidates are | expert id | expert ood-position | expert steps (p95, max) | corner: target px (min / mean) | corner: decoy px (min / mean) | corner: < 4 px | topview: target px (min / mean) | topview: decoy px (min / mean) | topview: < 4 px |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(grounded) + f"""

## MetaWorld v3

Measured by `python benchmarks/task_visibility.py` (64x64, corner camera, 5 training layouts per task).
A goal marker (green sphere, radius 4 cm) is drawn at every MetaWorld goal site.

- **goal marker px**: pixels that change when the marker is hidden (min and mean over layouts); 0 means the
  marker is fully hidden (usually by the arm or an object) in at least one layout.
- **goal moves relative to object**: whether goal minus object position varies across layouts; where it does not,
  seeing the object is enough.
- **layout change px**: pixels that differ between the first layout and each other (min): the objects move.
- **solvable from pixels**: the layout (objects and goal) is visible: marker >= {MIN_MARKER_PX} px in every layout and
  layouts differ by >= {MIN_LAYOUT_PX} px. Where the goal is fixed relative to an object (doors, drawers, buttons,
  handles), the object alone carries it.

| task | goal moves relative to object | goal marker px (min) | goal marker px (mean) | layout change px (min) | solvable from pixels |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
open("docs/TASKS.md", "w").write(doc)
print("wrote docs/TASKS.md")
