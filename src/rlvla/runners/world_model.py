"""World models: ``rlvla train algo=world_model`` and ``rlvla wm-eval``.

Training goes through :class:`rlvla.runners.loop.Loop` (resume, signals, the NaN stop, the time limit,
checkpoints); the model lands in the run directory's ``policy/`` like every trained network (its ``config.json``
says it is a world model). ``rlvla wm-eval MODEL DATA`` rolls the model open loop from real observations of a
dataset (held-out: ``rlvla collect --seeds eval``) and reports, at 1, 5 and 10 decisions, the decoded image's
PSNR against the real frame, the latent error (against the real frame's encoding) and the proprio error; and the
success head's ROC AUC over all predicted decisions.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from rlvla.configs import section
from rlvla.data.lerobot import LeRobotDataset
from rlvla.data.sequences import DecisionSequences
from rlvla.runners.loop import Loop, LoopSettings, prepare_run_dir
from rlvla.runners.train import DatasetRecipe


def train_world_model(cfg, progress: bool = True, on_step=None) -> dict:
    from rlvla.envs import reward_scale
    from rlvla.worldmodels import WorldModel, WorldModelConfig, WorldModelTrainer

    acfg, loop, data_cfg = section(cfg, "algo"), section(cfg, "train"), section(cfg, "data")
    if data_cfg.episodes_per_task or data_cfg.paraphrase:
        raise ValueError("data.episodes_per_task and data.paraphrase apply to sft only; a world model uses the whole dataset")
    torch.set_num_threads(loop.threads or os.cpu_count() or 1)
    prepare_run_dir(cfg)
    dataset = LeRobotDataset(data_cfg.path)
    camera = acfg.camera or dataset.image_keys[0].split(".")[-1]
    tasks = sorted({e.get("env_task", "") for e in dataset.episodes} - {""})
    data = DecisionSequences(dataset, camera, acfg.chunk, acfg.horizon, reward_scale(tasks) if tasks else 10.0)
    mcfg = WorldModelConfig(tasks=data.env_tasks, camera=camera, image_size=data.image_size, chunk=acfg.chunk,
                            action_dim=int(data.action.shape[-1]), proprio_dim=int(data.proprio.shape[-1]), latent=acfg.latent,
                            width=acfg.width, hidden=acfg.hidden, language=acfg.language,
                            reward_scale=reward_scale(data.env_tasks), data_frames=len(dataset))  # fmt: skip
    torch.manual_seed(loop.seed)
    model = WorldModel(mcfg).to(loop.device)
    trainer = WorldModelTrainer(model, acfg, loop.steps, loop.lr, loop.weight_decay, loop.warmup_steps, loop.grad_clip)
    print(f"world model on {len(data)} sequences of {acfg.horizon} decisions x {acfg.chunk} steps from {dataset.num_episodes} "
          "episodes", file=sys.stderr)  # fmt: skip
    settings = LoopSettings(total=loop.steps, ckpt_every=loop.ckpt_every, log_every=loop.log_every, time_limit_s=loop.time_limit_s,
                            label="world model", nan_hint="Check the dataset, or start a new run_dir with a lower train.lr")  # fmt: skip
    fingerprint = {"episodes": dataset.num_episodes, "frames": int(len(data.episode))}
    recipe = DatasetRecipe(trainer, data, loop.batch_size, loop.seed, data.env_tasks, fingerprint)
    return Loop(cfg, recipe, model, settings, fingerprint=fingerprint, progress=progress, on_step=on_step).run()


@torch.no_grad()
def evaluate_world_model(model, data: DecisionSequences, horizons=(1, 5, 10), sequences: int = 256, seed: int = 0) -> dict:
    """Open-loop prediction error of ``model`` on ``sequences`` random windows of ``data`` (horizon >= max(horizons))."""
    from rlvla.eval.metrics import roc_auc
    from rlvla.worldmodels.model import psnr

    model.eval()
    model.check_compatible(data.env_tasks, [data.camera], data.image_size, data.chunk)
    h = max(horizons)
    if data.horizon < h:
        raise ValueError(f"the evaluation sequences hold {data.horizon} decisions; need {h}")
    idx = np.random.default_rng(seed).choice(len(data), size=min(sequences, len(data)), replace=False)
    rows = {k: {"psnr": [], "latent_mse": [], "proprio_mse": [], "copy_psnr": []} for k in horizons}
    succ_scores, succ_labels = [], []
    for k0 in range(0, len(idx), 64):
        b = data.batch(idx[k0 : k0 + 64], h)
        n = len(b["instruction"])
        z_real = model.encode(b["image"].flatten(0, 1)).view(n, h + 1, -1)
        lang = model.embed(b["instruction"])
        z, p = z_real[:, 0], b["proprio"][:, 0].to(model.device)
        for k in range(1, h + 1):
            z, p, s, _ = model.step(z, p, b["action"][:, k - 1].to(model.device), lang)
            succ_scores.append(torch.sigmoid(s).cpu())
            succ_labels.append(b["success"][:, k - 1])
            if k in rows:
                real = b["image"][:, k]
                rows[k]["psnr"].append(psnr(model.decode(z), real))
                rows[k]["copy_psnr"].append(psnr(b["image"][:, 0], real))  # "nothing moves": the trivial predictor
                rows[k]["latent_mse"].append(((z - z_real[:, k]) ** 2).mean(-1).cpu())
                rows[k]["proprio_mse"].append(((p - b["proprio"][:, k].to(model.device)) ** 2).mean(-1).cpu())
    out = {"sequences": int(len(idx)), "horizons": {}}
    for k, r in rows.items():
        out["horizons"][str(k)] = {name: float(torch.cat(v).mean()) for name, v in r.items()}
    out["success_auc"] = roc_auc(torch.cat(succ_scores).tolist(), torch.cat(succ_labels).tolist())
    return out


@torch.no_grad()
def side_by_side(model, data: DecisionSequences, episodes: int, out_dir, decisions: int = 40) -> list:
    """GIFs of held-out episodes: the real frames (left) beside the model's open-loop prediction from the first
    frame under the recorded action chunks (right), one frame per decision."""
    from pathlib import Path

    from rlvla.collectors.evaluate import _save_gif

    out, paths = Path(out_dir), []
    k = data.chunk
    for e in sorted(set(data.episode.tolist()))[:episodes]:
        frames = np.flatnonzero(data.episode == e)
        t = frames[0] + k * np.arange(min(decisions + 1, (len(frames) - 1) // k + 1))
        real = data.image[torch.from_numpy(t)]
        z = model.encode(real[:1])
        p = data.proprio[t[0] : t[0] + 1].to(model.device)
        lang = model.embed([data.instruction[t[0]]])
        imagined = [real[0]]
        for j in range(1, len(t)):
            acts = data.action[t[j - 1] : t[j - 1] + k][None].to(model.device)
            z, p, _, _ = model.step(z, p, acts, lang)
            imagined.append(model.decode(z)[0])
        pairs = [np.concatenate([r.numpy(), np.full((r.shape[0], 2, 3), 255, np.uint8), i.numpy()], 1) for r, i in zip(real, imagined)]
        path = out / f"episode_{e}_real_vs_imagined.gif"
        _save_gif(pairs, path, fps=5)
        paths.append(path)
    return paths


def _write_html(out_dir, res: dict, gifs: list) -> None:
    import html
    from pathlib import Path

    from rlvla.io import atomic_write_bytes

    rows = "".join(f"<tr><td>{k}</td><td>{r['psnr']:.1f}</td><td>{r['copy_psnr']:.1f}</td><td>{r['latent_mse']:.4f}</td>"
                   f"<td>{r['proprio_mse']:.5f}</td></tr>" for k, r in res["horizons"].items())  # fmt: skip
    imgs = "".join(f'<figure><img src="{Path(g).name}"><figcaption>{html.escape(Path(g).stem)}</figcaption></figure>' for g in gifs)
    page = (f"<html><head><meta charset='utf-8'><title>world model</title></head><body><h1>World model {html.escape(res['model'])}</h1>"
            f"<p>Open loop from real first frames of {html.escape(res['data'])} ({res['sequences']} windows; "
            f"{res['held_out_episodes']} held-out episodes). Success head ROC AUC {res['success_auc']:.3f}.</p>"
            "<table border=1><tr><th>decisions</th><th>PSNR (dB)</th><th>copy of first frame (dB)</th><th>latent mse</th>"
            f"<th>proprio mse</th></tr>{rows}</table><h2>Real (left) and imagined (right), recorded actions</h2>{imgs}</body></html>")  # fmt: skip
    atomic_write_bytes(Path(out_dir) / "report.html", page.encode())


def wm_eval_main(args) -> int:
    import json

    from rlvla.envs import reward_scale
    from rlvla.io import atomic_write_json
    from rlvla.worldmodels import WorldModel

    torch.set_num_threads(os.cpu_count() or 1)
    model = WorldModel.from_pretrained(args.model)
    ds = LeRobotDataset(args.data)
    held = sum(1 for e in ds.episodes if e.get("seeds") == "eval")
    c = model.cfg
    horizons = tuple(sorted({int(h) for h in args.horizons.split(",") if h.strip()}))
    data = DecisionSequences(ds, c.camera, c.chunk, max(horizons), reward_scale(c.tasks), image_size=c.image_size, trainable=False)
    res = {"model": str(args.model), "data": str(args.data), "held_out_episodes": held,
           **evaluate_world_model(model, data, horizons=horizons, sequences=args.sequences)}  # fmt: skip
    if args.out:
        atomic_write_json(args.out, res)
    if args.report:
        gifs = side_by_side(model, data, args.videos, args.report)
        _write_html(args.report, res, gifs)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, r in res["horizons"].items():
            print(f"{k:>2} decisions: PSNR {r['psnr']:.1f} dB (copy of the first frame: {r['copy_psnr']:.1f}), latent mse "
                  f"{r['latent_mse']:.4f}, proprio mse {r['proprio_mse']:.5f}")  # fmt: skip
        print(f"success head AUC {res['success_auc']:.3f} over {res['sequences']} sequences ({held} held-out episodes)")
    return 0
