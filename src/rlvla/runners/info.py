"""`rlvla tasks`: what can be asked for."""

from __future__ import annotations

import json

from rlvla.envs import DEFAULT_SUITE, SPLITS, TASK_SETS, TASKS, available_suites, resolve_tasks
from rlvla.envs.render import CAMERAS


def tasks_main(args) -> int:
    others = [s for s in available_suites() if s != DEFAULT_SUITE]
    info = {"tasks": list(TASKS), "task_sets": {k: list(v) for k, v in TASK_SETS.items()}, "splits": list(SPLITS),
            "cameras": list(CAMERAS), "suites": available_suites(), "default_suite": DEFAULT_SUITE,
            # every other suite's tasks, as `--tasks <suite>` takes them (e.g. --tasks grounded)
            "suite_tasks": {s: list(resolve_tasks(s)) for s in others}}  # fmt: skip
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        tasks_of = info.pop("suite_tasks")
        for k, v in info.items():
            print(f"{k}: {v if not isinstance(v, dict) else ', '.join(v)}")
        for suite, names in tasks_of.items():
            print(f"{suite} tasks (--tasks {suite}): {', '.join(names)}")
    return 0
