"""Which way did RL move a policy's actions, decision by decision, on layouts where the policy it started from fails?

    python benchmarks/rl_decision_change.py START_POLICY RL_POLICY [RL_POLICY ...] [--task T] [--layouts N]

Drives START_POLICY deterministically on the first N validation layouts of task T (default: the grounded button,
24 layouts) and, at every decision, asks each RL policy for its deterministic action from the same starting noise
(flow and diffusion heads: ``VLAPolicy.deterministic_like``). Prints the mean absolute change per action dimension and
chunk slot, and for every layout the start policy fails: where its hand ended against the named candidate (x-y-z offset
in cm, height) and RL's mean change of the action (x, y, z, gripper) over the first half of the episode. A change
that points against the offset is one RL learnt for that layout; one that is the same on every layout is not.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rlvla.envs import make_env
from rlvla.envs.pool import stack_obs
from rlvla.envs.splits import validation_seeds
from rlvla.policies import VLAPolicy


def drive(start, others, task: str, seed: int) -> tuple[list[dict], bool]:
    """One episode of ``start`` (deterministic); per decision the hand, the target and each RL policy's change."""
    env = make_env(task, "id", seed=seed, image_size=start.cfg.image_size, cameras=tuple(start.cfg.cameras),
                   chunk=start.cfg.chunk)  # fmt: skip
    obs, info = env.reset(seed=seed)
    rows, success, done = [], False, False
    while not done:
        batch = stack_obs([obs])
        with torch.no_grad():
            x0 = torch.randn(1, start.cfg.chunk, start.cfg.action_dim)
            a0 = start.deterministic_like(batch, None, {"x0": x0})
            changes = [(p.deterministic_like(batch, None, {"x0": x0}) - a0)[0].numpy() for p in others]
        target = np.asarray(info["candidates"][info["target_index"]] if "candidates" in info else info["goal_pos"])
        rows.append({"hand": np.asarray(info["state"])[:3].copy(), "target": target.copy(), "changes": changes})
        obs, _, term, trunc, info = env.step(a0[0].numpy())
        success, done = success or bool(info["success"]), term or trunc
    env.close()
    return rows, success


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("start")
    ap.add_argument("rl", nargs="+")
    ap.add_argument("--task", default="grounded/button-press-topdown")
    ap.add_argument("--layouts", type=int, default=24)
    args = ap.parse_args()
    if args.layouts < 1:
        ap.error(f"--layouts must be >= 1, got {args.layouts}")
    torch.manual_seed(0)
    start = VLAPolicy.from_pretrained(args.start).eval()
    others = [VLAPolicy.from_pretrained(p).eval() for p in args.rl]
    episodes = [(seed, *drive(start, others, args.task, seed)) for seed in validation_seeds(args.layouts)]
    print(f"start policy: {sum(s for _, _, s in episodes)} / {len(episodes)} layouts succeed")
    for j, path in enumerate(args.rl):
        d = np.stack([r["changes"][j] for _, rows, _ in episodes for r in rows])  # (decisions, K, A)
        print(f"\n{path}\n  mean |change| per dimension {np.abs(d).mean((0, 1)).round(4)}, per chunk slot "
              f"{np.abs(d).mean((0, 2)).round(4)}; mean change per dimension {d.mean((0, 1)).round(4)}")
        for seed, rows, success in episodes:
            if success:
                continue
            off = (rows[-1]["hand"] - rows[-1]["target"]) * 100
            ch = np.stack([r["changes"][j] for r in rows[: max(1, len(rows) // 2)]]).mean((0, 1))
            print(f"  fails {seed}: offset x {off[0]:+5.1f} y {off[1]:+5.1f} z {off[2]:+5.1f} cm, "
                  f"hand z {rows[-1]['hand'][2]:.3f} | "
                  f"change x {ch[0]:+.3f} y {ch[1]:+.3f} z {ch[2]:+.3f} gripper {ch[3]:+.3f}")


if __name__ == "__main__":
    main()
