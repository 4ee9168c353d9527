"""`rlvla quickstart`: the main job on the embedded default benchmark.

Recipe: collect scripted-expert demonstrations for the quickstart task set (LeRobot v3.0) -> supervised
fine-tuning of a VLA policy (flow head by default) -> evaluation on evaluation seeds on ``id`` and every OOD
split (success with 95% Wilson intervals, rollout GIFs) -> ``summary.json``. Every stage resumes: rerunning the
command after an interruption continues where it stopped. The RL stage joins this recipe when it lands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlvla.data.lerobot import LeRobotDataset, atomic_write_json
from rlvla.envs import SPLITS, TASK_SETS
from rlvla.runners.collect import CollectConfig, collect



def quickstart_main(args) -> int:
    import torch

    from rlvla.configs import compose
    from rlvla.policies import VLAPolicy
    from rlvla.runners.evaluate import evaluate
    from rlvla.runners.train import peak_rss_mb, train

    from rlvla.policies import available_heads

    if args.head not in available_heads():
        raise ValueError(f"unknown head {args.head!r}; valid: {', '.join(available_heads())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks = TASK_SETS["quickstart"]
    demos = out / "demos"
    if (demos / "meta" / "info.json").exists() and LeRobotDataset(demos).num_episodes > args.episodes * len(tasks):
        raise ValueError(f"{demos} holds more than {args.episodes} demos per task; pass a new --out")
    print(f"[1/3] collecting {args.episodes} expert demonstrations per task for {', '.join(tasks)}", flush=True)
    collect(CollectConfig(tasks=tasks, episodes=args.episodes, out=str(out / "demos")))
    ds = LeRobotDataset(out / "demos")
    print(f"      dataset: {ds.num_episodes} episodes, {len(ds)} frames, {len(ds.tasks)} instructions", flush=True)

    run = out / f"sft_{args.head}"
    overrides = [f"head={args.head}", f"data.path={out / 'demos'}", f"run_dir={run}",
                 f"train.steps={args.steps}", f"train.time_limit_s={args.budget}"]  # fmt: skip
    cfg = compose(overrides)
    done = run / "train_summary.json"
    prev = json.loads(done.read_text()) if done.exists() else {}
    recipe = {"overrides": overrides, "demos_per_task": args.episodes}
    recipe_file = run / "quickstart_recipe.json"
    if recipe_file.exists() and json.loads(recipe_file.read_text()) != recipe:
        raise ValueError(f"{run} was trained with other quickstart options ({recipe_file}); pass a new --out")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(recipe_file, recipe)
    if prev.get("status") in ("done", "time_limit"):
        print(f"[2/3] SFT ({args.head} head) already finished: {prev['policy']}", flush=True)
        sft = prev
    else:
        print(f"[2/3] SFT of the {args.head} head ({args.steps} steps, at most {args.budget:.0f} s)", flush=True)
        sft = train(cfg, progress=True)  # raises TrainingError (one line from the CLI) on a NaN loss
        if sft["status"] == "interrupted":
            print("      interrupted; run the same command again to continue", flush=True)
            return 130
    print(f"      {sft['status']} at step {sft['step']} ({sft['samples_per_s']:.0f} samples/s)", flush=True)

    print(f"[3/3] evaluating on {', '.join(SPLITS)} ({args.eval_episodes} episodes each, evaluation seeds)", flush=True)
    policy = VLAPolicy.from_pretrained(sft["policy"])
    torch.set_num_threads(1)
    res = evaluate(policy, tasks, SPLITS, episodes=args.eval_episodes, video_dir=out / "videos", videos=2, progress=True)
    summary = {
        "sft": {"checkpoint": sft["policy"], **res},
        "wall_s": time.time() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "config": {"overrides": overrides, "demos_per_task": args.episodes, "eval_episodes": args.eval_episodes},
    }
    atomic_write_json(out / "summary.json", summary)
    print(f"wrote {out / 'summary.json'} and rollout GIFs in {out / 'videos'} ({summary['wall_s']:.0f} s)", flush=True)
    return 0
