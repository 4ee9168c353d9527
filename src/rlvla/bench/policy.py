"""Policy benchmarks: batched inference latency per head, and SFT-from-demos success per head.

``rlvla bench inference``: one decision for 8 envs (64x64, one camera, chunk 4) per head, p50/p95 ms.
``rlvla bench sft``: collect (or reuse) 20 expert demos per task on the ``vla5`` set, SFT each head under a
wall-clock budget, evaluate on ``id`` evaluation seeds; reports success with Wilson intervals, training time and
peak RSS of each training process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADS = {
    "token": ["head=token"],
    "diffusion": ["head=diffusion"],
    "flow-sde": ["head=flow", "policy.head.logprob=sde"],
    "flow-noise": ["head=flow", "policy.head.logprob=noise"],
    "gaussian": ["head=gaussian"],
    # baselines with the same training (DESIGN.md, "Measured facts"): image blanked; instruction blanked
    # (drawer-open and drawer-close share one scene, so only the instruction tells them apart)
    "flow-sde-blind": ["head=flow", "policy.head.logprob=sde", "policy.backbone.ablate=[image]"],
    "flow-sde-language-blind": ["head=flow", "policy.head.logprob=sde", "policy.backbone.ablate=[language]"],
}
DEFAULT_HEADS = ["token", "diffusion", "flow-sde", "flow-noise", "gaussian", "flow-sde-blind", "flow-sde-language-blind"]


def bench_inference(batch: int = 8, repeats: int = 50, threads: int = 1) -> dict:
    import torch

    from rlvla.configs import compose, policy_config
    from rlvla.policies import VLAPolicy

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    obs = {
        "image": rng.integers(0, 255, (batch, 64, 64, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(batch, 4)).astype(np.float32),
        "instruction": ["open the drawer"] * batch,
    }
    out = {}
    for name, ov in HEADS.items():
        if "blind" in name:
            continue
        policy = VLAPolicy(policy_config(compose(ov))).eval()
        row = {}
        for mode, kw in (("eval", dict(deterministic=True, with_log_prob=False)), ("rollout", dict(deterministic=False))):
            for _ in range(5):
                policy.act(obs, **kw)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                policy.act(obs, **kw)
                ts.append((time.perf_counter() - t0) * 1000)
            row[mode] = {"p50": float(np.percentile(ts, 50)), "p95": float(np.percentile(ts, 95))}
        out[name] = row
    return {"batch": batch, "threads": threads, "image_size": 64, "chunk": 4, "heads": out}


def bench_sft(out_dir: Path, heads, budget_s: float, steps: int, episodes: int, demos: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"demos{demos}"
    if not (data / "meta" / "info.json").exists():
        subprocess.run([sys.executable, "-m", "rlvla.cli", "collect", "--tasks", "vla5", "--episodes", str(demos),
                        "--out", str(data), "--quiet"], check=True)  # fmt: skip
    res = {}
    for name in heads:
        run = out_dir / f"sft_{name}"
        cmd = [sys.executable, "-m", "rlvla.cli", "train", *HEADS[name], f"data.path={data}", f"run_dir={run}",
               f"train.steps={steps}", f"train.time_limit_s={budget_s}", "--quiet"]  # fmt: skip
        if (run / "train_summary.json").exists():  # a finished run is not trained again (resume would add a budget)
            print(f"{name}: reusing {run}", flush=True)
        else:
            subprocess.run(cmd, check=True)
        summary = json.loads((run / "train_summary.json").read_text())
        ev = run / "eval.json"
        subprocess.run([sys.executable, "-m", "rlvla.cli", "eval", str(run), "--splits", "id", "--episodes", str(episodes),
                        "--out", str(ev), "--videos", "2"], check=True)  # fmt: skip
        e = json.loads(ev.read_text())["splits"]["id"]
        res[name] = {
            "success_rate": e["success_rate"], "ci95": e["ci95"], "episodes": e["episodes"], "tasks": e["tasks"],
            "train_wall_s": summary["wall_s"], "steps": summary["step"],
            "status": summary["status"], "samples_per_s": summary["samples_per_s"], "peak_rss_mb": summary["peak_rss_mb"],
        }  # fmt: skip
        print(f"{name:10s} id success {e['success_rate']:.2f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}] "
              f"train {summary['wall_s']:.0f} s ({summary['step']} steps), peak RSS {summary['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    # baselines against the full model on the same episodes (paired: same tasks and layout seeds)
    full = out_dir / "sft_flow-sde" / "eval.json"
    if full.exists():
        from rlvla.eval.metrics import mcnemar_exact

        ref = json.loads(full.read_text())["splits"]["id"]["per_episode"]
        for name in [n for n in heads if "blind" in n]:
            base = json.loads((out_dir / f"sft_{name}" / "eval.json").read_text())["splits"]["id"]["per_episode"]
            if [r[:2] for r in ref] == [r[:2] for r in base]:
                t = mcnemar_exact([r[2] for r in ref], [r[2] for r in base])
                res[name]["mcnemar_vs_flow_sde"] = t
                print(f"flow-sde vs {name}: {t['a_only']} episodes only flow-sde solved, {t['b_only']} only the "
                      f"baseline; exact McNemar p = {t['p_value']:.3f}", flush=True)  # fmt: skip
    return res


def bench_policy_main(args) -> int:
    if args.what == "inference":
        res = bench_inference(batch=args.batch, threads=args.threads or 1)
        if not args.json:
            for k, v in res["heads"].items():
                print(f"{k:10s} eval p50 {v['eval']['p50']:.1f} ms p95 {v['eval']['p95']:.1f} | "
                      f"rollout p50 {v['rollout']['p50']:.1f} ms")  # fmt: skip
    else:
        heads = args.heads.split(",") if args.heads else DEFAULT_HEADS
        for h in heads:
            if h not in HEADS:
                raise ValueError(f"unknown head {h!r}; valid: {', '.join(HEADS)}")
        res = bench_sft(Path(args.out), heads, args.budget, args.train_steps, args.episodes, args.demos)
    if args.json:
        print(json.dumps(res))
    return 0
