"""Does a world model rank a policy's rollouts as the simulator does? The same exploring policy (the quickstart RL
recipe's exploration for flow and diffusion heads) runs GRPO groups on the same layouts in the simulator and in the
world model; per layout, the success rate on each side, the number of mixed groups (the ones that carry a GRPO
gradient), and the correlation of the per-layout rates.

    python benchmarks/imagined_vs_real_groups.py POLICY WORLD_MODEL [GROUP_SIZE=8] [LAYOUTS_PER_TASK=4]
"""

import os
import sys
from functools import partial

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlvla.algos.online import CONFIGS  # noqa: E402
from rlvla.algos.online.explore import RL_EXPLORATION, with_exploration  # noqa: E402
from rlvla.collectors import RolloutEngine, torch_threads  # noqa: E402
from rlvla.policies import VLAPolicy  # noqa: E402
from rlvla.worldmodels.env import ImaginedPool, load_world_model  # noqa: E402


def per_layout(policy, tasks, group: int, layouts: int, **pool) -> dict:
    cfg = CONFIGS["grpo"](group_size=group, groups_per_task=layouts, envs_per_task=group, dynamic_sampling=False)
    torch.manual_seed(0)
    with RolloutEngine(policy, tasks, cfg, seed=7, **pool) as eng, torch_threads(1 if eng.pool.workers else 2):
        ro = eng.collect(0)
    out: dict = {}
    for e in ro.episodes:
        out.setdefault((e["task"], e["seed"]), []).append(bool(e["success"]))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    group, layouts = (int(sys.argv[3]) if len(sys.argv) > 3 else 8), (int(sys.argv[4]) if len(sys.argv) > 4 else 4)
    policy = VLAPolicy.from_pretrained(sys.argv[1])
    if policy.cfg.head.name in ("flow", "diffusion"):
        policy = with_exploration(policy, **RL_EXPLORATION)
    policy.eval()
    tasks = list(policy.cfg.tasks)
    real = per_layout(policy, tasks, group, layouts)
    imagined = per_layout(policy, tasks, group, layouts, workers=0,
                          make_pool=partial(ImaginedPool, world_model=load_world_model(sys.argv[2])))  # fmt: skip
    for name, rates in (("real", real), ("imagined", imagined)):
        mixed = sum(0 < r < 1 for r in rates.values())
        print(f"{name:9s} success {np.mean(list(rates.values())):.3f}, mixed groups {mixed} / {len(rates)}")
    keys = sorted(set(real) & set(imagined))
    r, m = np.array([real[k] for k in keys]), np.array([imagined[k] for k in keys])
    print(f"per-layout correlation {np.corrcoef(r, m)[0, 1]:.2f}, mean |difference| {np.abs(r - m).mean():.3f}")
    for t in tasks:
        ks = [k for k in keys if k[0] == t]
        print(f"{t}: real {[real[k] for k in ks]}  imagined {[imagined[k] for k in ks]}")


if __name__ == "__main__":
    main()
