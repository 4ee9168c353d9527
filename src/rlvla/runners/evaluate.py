"""``rlvla eval CHECKPOINT``: evaluate a policy on named splits and print or write the result.

The evaluation itself (paired episodes over an env pool, Wilson intervals, latency, GIFs) is
:func:`rlvla.collectors.evaluate.evaluate`; this module turns the command line into its arguments.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlvla.checkpoints import resolve_checkpoint
from rlvla.collectors.evaluate import evaluate
from rlvla.envs.splits import check_split


def eval_main(args) -> int:
    from rlvla.policies import VLAPolicy

    path = resolve_checkpoint(args.checkpoint)
    policy = VLAPolicy.from_pretrained(path)
    if args.condition is not None or args.guidance is not None:
        if policy.cfg.condition.kind == "none":
            raise ValueError(f"{path} is not a conditioned policy; --condition/--guidance apply to algo=rc or recap runs")
        if args.condition is not None:
            policy.cfg.condition.value = args.condition
        if args.guidance is not None:
            if policy.cfg.head.name != "flow":
                raise ValueError(f"--guidance applies to flow heads; {path} has a {policy.cfg.head.name} head")
            policy.cfg.condition.guidance = args.guidance
    noise, steps = getattr(args, "explore_noise", 0.0), getattr(args, "explore_steps", "")
    temp = getattr(args, "explore_temperature", 0.0)
    if getattr(args, "denoise_steps", 0) or noise or steps or temp:
        from rlvla.algos.online.explore import with_exploration

        if args.denoise_steps < 0:
            raise ValueError(f"--denoise-steps must be >= 1 (0 keeps the checkpoint's), got {args.denoise_steps}")
        if (noise or steps or temp) and not args.sample:
            raise ValueError("--explore-noise / --explore-steps / --explore-temperature change how the policy samples; add --sample")
        policy = with_exploration(policy, noise, steps, args.denoise_steps, temp)
    tasks = args.tasks.split(",") if args.tasks else policy.cfg.tasks
    if not tasks:
        raise ValueError(f"{path} records no training tasks; pass --tasks")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    for s in splits:
        check_split(s)
    if args.threads:
        torch.set_num_threads(args.threads)
    video_dir = Path(args.videos_dir) if args.videos_dir else path.parent / "videos"
    from rlvla.eval.testtime import TestTimeConfig

    tt = TestTimeConfig(method=args.test_time, samples=args.samples, temperature=args.temperature, critic=args.critic,
                        simulations=args.simulations, depth=args.depth, c_puct=args.c_puct, gamma=args.gamma,
                        stall_window=args.stall_window, stall_tol=args.stall_tol, retry_decisions=args.retry_decisions)  # fmt: skip
    res = evaluate(
        policy, tasks, splits, episodes=args.episodes, num_envs=args.num_envs, workers=args.workers,
        max_steps=args.max_steps, video_dir=video_dir if args.videos > 0 else None, videos=args.videos,
        progress=not args.json, test_time=tt, deterministic=not args.sample, seeds=args.seeds,
    )  # fmt: skip
    res = {"checkpoint": str(path), **res}
    if args.out:
        from rlvla.io import atomic_write_json

        atomic_write_json(Path(args.out), res)
    if args.json:
        print(json.dumps(res))
    return 0
