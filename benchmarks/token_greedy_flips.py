"""How far RL moved a token policy's greedy decode: greedy actions of the SFT policy and of each RL policy on the
same rollout decisions (collected by the SFT policy), per chunk, token and element.

    python benchmarks/token_greedy_flips.py SFT_POLICY RL_POLICY [RL_POLICY ...]
"""

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from rlvla.algos.online import CONFIGS  # noqa: E402
from rlvla.collectors import RolloutEngine  # noqa: E402
from rlvla.policies import VLAPolicy  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
torch.set_num_threads(1)
sft = VLAPolicy.from_pretrained(sys.argv[1]).eval()
cfg = CONFIGS["grpo"](group_size=2, groups_per_task=1, envs_per_task=2, dynamic_sampling=False, workers=0)
torch.manual_seed(0)
with RolloutEngine(sft, list(sft.cfg.tasks), cfg, workers=0, seed=321) as eng:
    ro = eng.collect(0)
idx = torch.randperm(len(ro), generator=torch.Generator().manual_seed(0))[:256]
obs = ro.select(idx)


@torch.no_grad()
def greedy(policy):
    z = policy.encode(obs)[0]
    actions, _, extras = policy.head.sample(z, deterministic=True, with_log_prob=False)
    return actions, extras["tokens"].reshape(len(idx), -1)


a0, t0 = greedy(sft)
for path in sys.argv[2:]:
    a1, t1 = greedy(VLAPolicy.from_pretrained(path).eval())
    d = (a1 - a0).abs()
    diff = t1 != t0
    changed = diff.any(1)
    rows = changed.nonzero()[:, 0]
    first = diff.float().argmax(1)[rows]
    moved = (a1 - a0).abs().reshape(len(idx), -1)[rows, first]  # action units
    print(f"{path}: chunks changed {float(changed.float().mean()):.2f}, tokens changed {float(diff.float().mean()):.3f}, "
          f"elements > 0.5 away {float((d > 0.5).float().mean()):.3f}, RMS {float(d.pow(2).mean().sqrt()):.3f}, "
          f"first changed token: median position {float(first.float().median()) if len(rows) else -1:.0f} of {t0.shape[1]}, "
          f"moved > 0.25 in {float((moved > 0.25).float().mean()) if len(rows) else 0:.2f} of chunks changed")
