"""Write docs/TASKS.md: per task, whether its randomised layout is visible at 64x64 from the corner camera."""

import sys
import warnings

warnings.filterwarnings("ignore")

from rlvla.envs import TASKS  # noqa: E402
from rlvla.envs.metaworld.visibility import task_visibility  # noqa: E402

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

doc = f"""# Tasks: what the pixels show

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
