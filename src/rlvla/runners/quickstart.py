"""`rlvla quickstart`: the main job on the embedded default benchmark.

Today: collect scripted-expert demonstrations for the quickstart task set into a LeRobot v3.0 dataset, then
measure the scripted expert on evaluation seeds on ``id`` and every OOD split (success rate with 95% Wilson
intervals) and save one rollout GIF per split. SFT and RL stages join this recipe as they land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rlvla.data.lerobot import LeRobotDataset, atomic_write_json
from rlvla.envs import SPLITS, TASK_SETS, eval_seeds, make_env
from rlvla.envs.experts import ScriptedExpert
from rlvla.eval.metrics import wilson_interval
from rlvla.runners.collect import CollectConfig, collect


def evaluate_expert(task: str, split: str, episodes: int, gif: Path | None = None) -> dict:
    env = make_env(task, split=split, seed=eval_seeds(1)[0], cameras=("corner",) if gif else ()  # render only for the GIF)
    expert = ScriptedExpert(task, seed=0)
    wins, lengths, frames = 0, [], []
    for ep in range(episodes):
        obs, info = env.reset()
        expert.begin_episode()
        done = False
        while not done:
            if gif is not None and ep == 0:
                frames.append(obs["image"])
            obs, _, term, trunc, info = env.step(expert.act(info))
            done = term or trunc
        wins += int(info["success"])
        lengths.append(info["elapsed_steps"])
    env.close()
    if gif is not None and frames:
        from PIL import Image

        imgs = [Image.fromarray(f).resize((128, 128), Image.NEAREST) for f in frames[::2]]
        gif.parent.mkdir(parents=True, exist_ok=True)
        imgs[0].save(gif, save_all=True, append_images=imgs[1:], duration=50, loop=0)
    lo, hi = wilson_interval(wins, episodes)
    return {"success_rate": wins / episodes, "ci95": [lo, hi], "episodes": episodes, "mean_length": float(np.mean(lengths))}


def quickstart_main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks = TASK_SETS["quickstart"]
    cfg = CollectConfig(tasks=tasks, episodes=args.episodes, out=str(out / "demos"))
    print(f"[1/2] collecting {args.episodes} expert demonstrations per task for {', '.join(tasks)}")
    collect(cfg)
    ds = LeRobotDataset(out / "demos")
    print(f"      dataset: {ds.num_episodes} episodes, {len(ds)} frames, {len(ds.tasks)} instructions")
    print("[2/2] scripted expert on evaluation seeds, every split")
    results: dict = {}
    for split in SPLITS:
        per_task = {}
        for task in tasks:
            gif = out / "videos" / f"{split}_{task}.gif" if task == tasks[0] else None
            per_task[task] = evaluate_expert(task, split, episodes=10, gif=gif)
        wins = sum(round(r["success_rate"] * r["episodes"]) for r in per_task.values())
        n = sum(r["episodes"] for r in per_task.values())
        results[split] = {"success_rate": wins / n, "ci95": list(wilson_interval(wins, n)), "episodes": n, "tasks": per_task}
        lo, hi = results[split]["ci95"]
        print(f"      {split:13s} expert success {wins}/{n} = {wins / n:.0%}  (95% CI {lo:.0%}-{hi:.0%})")
    summary = {"dataset": str(out / "demos"), "expert": results, "wall_s": time.time() - t0}
    atomic_write_json(out / "summary.json", summary)
    print(f"wrote {out / 'summary.json'} and rollout GIFs in {out / 'videos'} ({summary['wall_s']:.0f} s)")
    return 0
