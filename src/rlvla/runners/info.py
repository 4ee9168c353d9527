"""`rlvla tasks`: what can be asked for."""

from __future__ import annotations

import json

from rlvla.envs import DEFAULT_SUITE, SPLITS, TASK_SETS, TASKS, available_suites
from rlvla.envs.render import CAMERAS


def tasks_main(args) -> int:
    info = {"tasks": list(TASKS), "task_sets": {k: list(v) for k, v in TASK_SETS.items()}, "splits": list(SPLITS),
            "cameras": list(CAMERAS), "suites": available_suites(), "default_suite": DEFAULT_SUITE}  # fmt: skip
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k}: {v if not isinstance(v, dict) else ', '.join(v)}")
    return 0
