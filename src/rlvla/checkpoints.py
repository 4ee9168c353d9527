"""Training checkpoints: deployable weights apart from training state.

Layout of ``<run_dir>/checkpoints/step_<N>/`` (N = optimiser steps completed)::

    policy/                  config.json + model.safetensors  (what `rlvla eval` and deployment load)
    trainer.safetensors      optimiser tensors (and other training tensors)
    trainer.json             step, optimiser param groups, anything else JSON

A checkpoint directory is written under a temporary name, every file and directory in it is fsynced, it is
renamed into place and the rename is fsynced; ``checkpoints/latest`` names the newest complete one. A crash or a
power cut mid-write leaves the previous checkpoint as latest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from rlvla.errors import CheckpointError
from rlvla.io import atomic_write_bytes, atomic_write_json, fsync_dir, fsync_tree

_STEP_DIR = re.compile(r"^step_(\d{8})$")


class Checkpoints:
    def __init__(self, run_dir, keep: int = 3) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def save(self, step: int, policy, tensors: dict, meta: dict) -> Path:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"step_{step:08d}"
        tmp = self.dir / f".step_{step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        policy.save_pretrained(tmp / "policy")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "trainer.safetensors"))
        atomic_write_json(tmp / "trainer.json", {"step": step, **meta})
        fsync_tree(tmp)  # the files' contents reach the disk before the rename that publishes them
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.dir)
        atomic_write_bytes(self.dir / "latest", final.name.encode())
        self._prune()
        return final

    def _complete(self) -> list[Path]:
        out = []
        for p in self.dir.glob("step_*"):
            if _STEP_DIR.match(p.name) and (p / "trainer.json").exists() and (p / "policy" / "config.json").exists():
                out.append(p)
        return sorted(out)

    def _prune(self) -> None:
        for p in self._complete()[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        if not self.dir.exists():
            return None
        name = (self.dir / "latest").read_text().strip() if (self.dir / "latest").exists() else ""
        if name and (self.dir / name / "trainer.json").exists():
            return self.dir / name
        done = self._complete()
        return done[-1] if done else None

    @staticmethod
    def load(path: Path) -> tuple[int, dict, dict]:
        """-> (step, trainer tensors, trainer meta). The policy weights are loaded from ``path / 'policy'``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            meta = json.loads((path / "trainer.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path / 'trainer.json'}: unreadable ({e}); delete this checkpoint to resume from an earlier one") from None
        try:
            tensors = load_file(str(path / "trainer.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path / 'trainer.safetensors'}: corrupt ({e}); delete this checkpoint to resume from an earlier one") from None
        return int(meta["step"]), tensors, meta


def resolve_checkpoint(path) -> Path:
    """A policy directory from a policy dir, a training step dir, or a run dir (its final policy, else latest)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if (p / "config.json").exists():
        return p
    if (p / "policy" / "config.json").exists():
        return p / "policy"
    latest = Checkpoints(p).latest()
    if latest is not None:
        return latest / "policy"
    raise FileNotFoundError(f"{p} holds no policy (config.json + model.safetensors), training run, or checkpoint")
