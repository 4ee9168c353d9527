"""``rlvla bench offline``: offline RL streams a large dataset in bounded memory.

Recipe: build (once) a dataset ``--copies`` times the size of a source dataset by re-writing its episodes
(``--source``, e.g. a mixed-quality dataset from ``rlvla collect``; episodes are copied verbatim, so the data
is real but repeated), then run ``rlvla train algo=<algo>`` on it for ``--train-steps`` steps, twice: streaming
(``algo.files_in_memory=2``) and with every data file in memory. Reports the peak RSS of each (whole process
tree, sampled), the frames and bytes of decoded images held, and training throughput.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def replicate(source: str, out: str, copies: int) -> dict:
    from rlvla.data.lerobot import LeRobotDataset, LeRobotWriter

    src = LeRobotDataset(source)
    target = src.num_episodes * copies
    w = LeRobotWriter(out, features=src.features, fps=src.info["fps"])
    t0 = time.perf_counter()
    while w.info["total_episodes"] < target:
        i = w.info["total_episodes"] % src.num_episodes
        e = src.episode(i)
        frames = {k: e[k] for k in src.features}
        meta = {k: v for k, v in src.episodes[i].items() if k in ("env_task", "split", "layout_seed", "success", "source")}
        w.add_episode(frames, str(e["task"][0]), meta)
    return {"episodes": w.info["total_episodes"], "frames": w.info["total_frames"], "wall_s": time.perf_counter() - t0}


def _run(overrides: list[str]) -> dict:
    from rlvla.memory import TreePeak

    t0 = time.perf_counter()
    with TreePeak(interval=0.2) as peak:
        r = subprocess.run([sys.executable, "-m", "rlvla", "train", *overrides, "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"training failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return {"peak_rss_mb": peak.peak_mb, "wall_s": time.perf_counter() - t0}


def bench_offline_main(args) -> int:
    out = Path(args.out)
    big = out / "large_dataset"
    if not (big / "meta" / "info.json").exists() and not args.source:
        raise ValueError("bench offline needs --source DATASET (e.g. one from rlvla collect) to build the large dataset from")
    info = replicate(args.source, str(big), args.copies) if args.source else {}
    from rlvla.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(big)
    res = {"dataset": {"episodes": ds.num_episodes, "frames": len(ds), "files": len(ds.data_files()),
                       "disk_mb": sum(p.stat().st_size for p in big.rglob("*.parquet")) / 2**20, **info}}  # fmt: skip
    common = [f"algo={args.algo}", f"head={args.head or 'flow'}", f"data.path={big}", f"train.steps={args.offline_steps}",
              "train.log_every=10", "train.ckpt_every=100000"]  # fmt: skip
    for name, files in (("streaming", 2), ("in_memory", res["dataset"]["files"])):
        run_dir = out / f"run_{name}"
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        r = _run([*common, f"algo.files_in_memory={files}", f"run_dir={run_dir}"])
        summ = json.loads((run_dir / "train_summary.json").read_text())
        r["samples_per_s"] = summ["samples_per_s"]
        res[name] = r
        print(f"{name:10s} files in memory {files:3d}: peak RSS {r['peak_rss_mb']:.0f} MB, {r['samples_per_s']:.0f} samples/s", flush=True)
    res["rss_ratio_streaming_vs_in_memory"] = res["streaming"]["peak_rss_mb"] / res["in_memory"]["peak_rss_mb"]
    res["speed_ratio_streaming_vs_in_memory"] = res["streaming"]["samples_per_s"] / res["in_memory"]["samples_per_s"]
    print(json.dumps(res, indent=1) if args.json else
          f"dataset {res['dataset']['episodes']} episodes / {res['dataset']['frames']} frames in {res['dataset']['files']} files; "
          f"streaming peak {res['streaming']['peak_rss_mb']:.0f} MB vs in-memory {res['in_memory']['peak_rss_mb']:.0f} MB")  # fmt: skip
    return 0
