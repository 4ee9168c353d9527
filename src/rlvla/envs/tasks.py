"""The MetaWorld v3 task registry, named task sets and name resolution."""

from __future__ import annotations

import difflib

from rlvla.envs.instructions import INSTRUCTIONS

REWARD_SCALE = 10.0
"""MetaWorld's dense reward lies in [0, 10]: rewards on the common scale (:mod:`rlvla.rewards`) divide by this."""

# All 50 MetaWorld v3 tasks, in MetaWorld's MT50 order.
TASKS: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3",
    "door-open-v3", "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3",
    "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3", "handle-press-v3",
    "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3", "peg-insert-side-v3", "pick-place-wall-v3",
    "pick-out-of-hole-v3", "reach-v3", "push-back-v3", "push-v3", "pick-place-v3", "plate-slide-v3",
    "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-unplug-side-v3",
    "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-wall-v3", "reach-wall-v3", "shelf-place-v3",
    "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)  # fmt: skip

TASK_SETS: dict[str, tuple[str, ...]] = {
    # MetaWorld's MT10.
    "mt10": (
        "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
    ),
    # The quickstart's set: three articulated tasks whose layouts the pixels show (docs/TASKS.md) and where SFT from
    # 2 demonstrations is far from saturated (0.45-0.6 success), so online RL has room to act within minutes.
    "quickstart": ("button-press-topdown-v3", "drawer-open-v3", "door-open-v3"),
    # The earlier quickstart set (SFT, offline-RL and rollout benchmarks in BENCHMARKS.md): two easy tasks, one
    # with a small randomised goal (reach), one contact-rich (push); drawer-open/close share a scene.
    "vla5": ("drawer-open-v3", "drawer-close-v3", "button-press-topdown-v3", "reach-v3", "push-v3"),
    "mt50": TASKS,
}  # fmt: skip

assert set(INSTRUCTIONS) == set(TASKS), "every task needs instructions"


def resolve_task(name: str) -> str:
    """Canonical task name ('reach' and 'reach-v3' both give 'reach-v3'); one-line error otherwise."""
    key = name.strip()
    if key in TASKS:
        return key
    if f"{key}-v3" in TASKS:
        return f"{key}-v3"
    close = difflib.get_close_matches(key, TASKS, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"unknown task {name!r}{hint}; valid tasks: {', '.join(TASKS)}; task sets: {', '.join(TASK_SETS)}"
    )


def resolve_tasks(spec) -> tuple[str, ...]:
    """Tasks from a task-set name, a comma-separated string or a list of names/sets."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        names = TASK_SETS[item] if item in TASK_SETS else (resolve_task(item),)
        out.extend(n for n in names if n not in out)
    if not out:
        raise ValueError(f"no tasks given; name tasks or a task set ({', '.join(TASK_SETS)})")
    return tuple(out)
