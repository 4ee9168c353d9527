"""Metrics to ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files.

On resume from step N, JSONL records after N are dropped and TensorBoard purges events after N, so a resumed
run's logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rlvla.io import atomic_write_bytes


class RunLogger:
    def __init__(self, run_dir, start_step: int = 0, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if rec.get("step", 0) <= start_step:
                    keep.append(line)
            atomic_write_bytes(self.path, ("\n".join(keep) + ("\n" if keep else "")).encode())
        self._fh = open(self.path, "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, metrics: dict, prefix: str = "train") -> None:
        rec = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in rec.items():
                if k != "step" and math.isfinite(float(v)):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
