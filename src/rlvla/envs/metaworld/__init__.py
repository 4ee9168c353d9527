"""The MetaWorld v3 suite (embedded default): 50 tasks as vision-language envs (:mod:`.env`), named task sets
(:mod:`.tasks`), instructions with held-out paraphrases (:mod:`.instructions`), scripted experts (:mod:`.experts`),
visual and camera perturbations (:mod:`.scene`). Registered as ``metaworld``; its tasks keep their bare names."""

from __future__ import annotations

from rlvla.envs.metaworld.instructions import INSTRUCTIONS
from rlvla.envs.metaworld.tasks import DEFAULT_MAX_STEPS, REWARD_SCALE, TASK_SETS, TASKS
from rlvla.envs.suites import Suite, register_suite


def make(task: str, split: str = "id", seed=None, image_size: int = 64, cameras=("corner",), chunk: int = 1,
         max_steps: int | None = None, **kwargs):  # fmt: skip
    from rlvla.envs.metaworld.env import MetaWorldVLAEnv

    return MetaWorldVLAEnv(task, split=split, seed=seed, image_size=image_size, cameras=cameras, chunk=chunk,
                           max_steps=DEFAULT_MAX_STEPS if max_steps is None else max_steps, **kwargs)  # fmt: skip


def expert(task: str, config=None, seed=None):
    from rlvla.envs.metaworld.experts import ScriptedExpert

    return ScriptedExpert(task, config, seed=seed)


def paraphrases(task: str, instruction: str) -> list[str]:
    """Every training instruction of a task means the same."""
    return list(INSTRUCTIONS[task]["train"])


SUITE = register_suite(Suite(
    name="metaworld", tasks=TASKS, make=make, task_sets=TASK_SETS, reward_scale=REWARD_SCALE,
    instructions=INSTRUCTIONS.__getitem__, expert=expert, paraphrases=paraphrases,
    info_keys=("success", "substeps", "progress", "substep_rewards", "near_object", "grasp_success", "obj_to_target"),
    default_max_steps=DEFAULT_MAX_STEPS, module=__name__,
))  # fmt: skip
