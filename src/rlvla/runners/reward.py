"""Learned reward models: ``rlvla train algo=reward_model`` and ``rlvla reward-eval``.

Training goes through :class:`rlvla.runners.loop.Loop` (resume, signals, the NaN stop, time limit, checkpoints);
the model is saved in the run directory's ``policy/`` like every trained network (``config.json`` says it is a
reward model). Evaluation scores a held-out dataset (``rlvla collect --seeds eval``) frame by frame:

- ``success``: ROC AUC of the frame's score against "the image shows success", and per episode (the episode's
  highest score against its outcome); accuracy at 0.5; the false-success rate (failed episodes whose highest
  score passes 0.5);
- ``progress``: Spearman correlation with the time-index progress on each successful episode (the mean over
  episodes, and pooled over their frames); AUC of the frame's score for success frames as above;
- ``preference``: pairwise accuracy (is the preferred episode of a pair scored higher) and per-episode AUC.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from rlvla.configs import section
from rlvla.data.frames import LabelledFrames
from rlvla.data.lerobot import LeRobotDataset
from rlvla.runners.loop import Loop, LoopSettings, prepare_run_dir
from rlvla.runners.train import DatasetRecipe


def train_reward_model(cfg, progress: bool = True, on_step=None) -> dict:
    from rlvla.rewards.models import RewardModel, RewardModelConfig, RewardModelTrainer

    acfg, loop, data_cfg = section(cfg, "algo"), section(cfg, "train"), section(cfg, "data")
    if data_cfg.episodes_per_task or data_cfg.paraphrase:
        raise ValueError("data.episodes_per_task and data.paraphrase apply to sft only; a reward model uses the whole dataset")
    torch.set_num_threads(loop.threads or os.cpu_count() or 1)
    prepare_run_dir(cfg)
    frames = LabelledFrames(LeRobotDataset(data_cfg.path), acfg.cameras)
    mcfg = RewardModelConfig(kind=acfg.kind, tasks=frames.env_tasks, cameras=frames.cameras, image_size=frames.image_size,
                             width=acfg.width, depth=acfg.depth, hidden=acfg.hidden, random_shift=acfg.random_shift,
                             language=acfg.language)  # fmt: skip
    torch.manual_seed(loop.seed)
    model = RewardModel(mcfg).to(loop.device)
    trainer = RewardModelTrainer(model, acfg, loop.steps, loop.lr, loop.weight_decay, loop.warmup_steps, loop.grad_clip)
    print(f"reward model ({acfg.kind}) on {len(frames)} frames of {frames.num_episodes} episodes "
          f"({int(frames.success.sum())} success frames)", file=sys.stderr)  # fmt: skip
    settings = LoopSettings(total=loop.steps, ckpt_every=loop.ckpt_every, log_every=loop.log_every, time_limit_s=loop.time_limit_s,
                            label=f"reward:{acfg.kind}", nan_hint="Check the dataset, or start a new run_dir with a lower train.lr")  # fmt: skip
    fingerprint = {"episodes": frames.num_episodes, "frames": len(frames)}
    recipe = DatasetRecipe(trainer, frames, loop.batch_size, loop.seed, frames.env_tasks, fingerprint,
                           draw=lambda i: trainer.draw(frames, i, loop.seed, loop.batch_size))  # fmt: skip
    return Loop(cfg, recipe, model, settings, fingerprint=fingerprint, progress=progress, on_step=on_step).run()


def evaluate_reward_model(model, frames: LabelledFrames) -> dict:
    """Scores of every frame of ``frames`` and the metrics of the module docstring."""
    from rlvla.eval.metrics import roc_auc, spearman

    model.check_compatible(frames.env_tasks, frames.cameras, frames.image_size)
    scores = np.concatenate([model.score(**_frames_args(frames, np.arange(k, min(k + 512, len(frames))))).numpy()
                             for k in range(0, len(frames), 512)])  # fmt: skip
    kind = model.cfg.kind
    ep_max = np.array([scores[s:e].max() for s, e in zip(frames.starts, frames.ends)])
    ep_success = frames.episode_success[frames.starts]
    out = {"kind": kind, "frames": len(frames), "episodes": frames.num_episodes, "success_frames": int(frames.success.sum()),
           "successful_episodes": int(ep_success.sum()), "episode_auc": roc_auc(ep_max, ep_success)}  # fmt: skip
    if kind in ("success", "progress"):
        out["frame_auc"] = roc_auc(scores, frames.success)
    if kind == "success":
        out["frame_accuracy"] = float(np.mean((scores > 0.5) == frames.success))
        fails = ~ep_success
        out["false_success_rate"] = float(np.mean(ep_max[fails] > 0.5)) if fails.any() else float("nan")
    if kind == "progress":
        rhos, xs, ys = [], [], []
        for s, e, ok in zip(frames.starts, frames.ends, ep_success):
            if ok and e - s > 2:
                rhos.append(spearman(scores[s:e], frames.progress[s:e]))
                xs.append(scores[s:e])
                ys.append(frames.progress[s:e])
        rhos = [r for r in rhos if np.isfinite(r)]
        out["spearman_mean"] = float(np.mean(rhos)) if rhos else float("nan")
        out["spearman_min"] = float(np.min(rhos)) if rhos else float("nan")
        out["spearman_pooled"] = spearman(np.concatenate(xs), np.concatenate(ys)) if xs else float("nan")
    if kind == "preference":
        means = np.array([scores[s:e].mean() for s, e in zip(frames.starts, frames.ends)])
        task = frames.task_id[frames.starts]
        key = list(zip(ep_success.astype(float), frames.episode_return[frames.starts]))
        right = total = 0
        for a in range(len(means)):
            for b in range(a + 1, len(means)):
                if task[a] == task[b] and key[a] != key[b]:
                    total += 1
                    right += (means[a] > means[b]) == (key[a] > key[b])
        out["pair_accuracy"] = right / total if total else float("nan")
        out["pairs"] = total
    per_task = {}
    for ti, t in enumerate(frames.env_tasks):
        m = frames.task_id == ti
        per_task[t] = {"frame_auc": roc_auc(scores[m], frames.success[m]),
                       "episode_auc": roc_auc(ep_max[frames.task_id[frames.starts] == ti], ep_success[frames.task_id[frames.starts] == ti])}  # fmt: skip
    out["per_task"] = per_task
    return out


def _frames_args(frames: LabelledFrames, idx) -> dict:
    f = frames.frames(idx)
    return {"images": f["images"], "instructions": f["instruction"]}


def reward_eval_main(args) -> int:
    import json

    from rlvla.io import atomic_write_json
    from rlvla.rewards.models import RewardModel

    torch.set_num_threads(os.cpu_count() or 1)
    model = RewardModel.from_pretrained(args.model)
    frames = LabelledFrames(LeRobotDataset(args.data), model.cfg.cameras, model.cfg.image_size, trainable=False)
    held = sum(1 for e in LeRobotDataset(args.data).episodes if e.get("seeds") == "eval")
    res = {"model": str(args.model), "data": str(args.data), "held_out_episodes": held, **evaluate_reward_model(model, frames)}
    if args.out:
        atomic_write_json(args.out, res)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        keys = [k for k in ("frame_auc", "episode_auc", "frame_accuracy", "false_success_rate", "spearman_mean", "spearman_min",
                            "spearman_pooled", "pair_accuracy") if k in res]  # fmt: skip
        print(f"{res['kind']} model on {res['frames']} frames of {res['episodes']} episodes ({held} on evaluation seeds): "
              + ", ".join(f"{k} {res[k]:.3f}" for k in keys))  # fmt: skip
    return 0
