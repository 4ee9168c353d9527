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


def save_model_dir(path, state: dict, meta: dict, weights: str = "model.safetensors", config: str = "config.json") -> Path:
    """A model directory (``config.json`` + safetensors weights) written under a temporary name, fsynced and
    renamed into place: a crash leaves the old copy or the new one, never a mix."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp / weights), metadata={"format": str(meta.get("format", ""))})
    (tmp / config).write_text(json.dumps(meta, indent=2))
    fsync_tree(tmp)
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_model_config(path, fmt: str, version: int, what: str, hint: str, config: str = "config.json") -> tuple[Path, dict]:
    """-> (model dir, its metadata) of a ``fmt`` model dir, training run dir or checkpoint; one-line errors for a
    missing, corrupt or foreign config. ``what``: the model's name in messages; ``hint``: how to make one."""
    try:
        path = resolve_checkpoint(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"{e}; {hint}") from None
    f = path / config
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt JSON ({e}); restore the {what} or train it again") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{f}: not a {what} (format {got!r}); {hint}")
    if meta.get("version") != version:
        raise CheckpointError(f"{f}: {what} format version {meta.get('version')} is not supported (expected {version})")
    return path, meta


def load_model_weights(module, path, what: str, map_location: str = "cpu", weights: str = "model.safetensors") -> None:
    """Load safetensors weights into ``module``; one-line errors for missing, corrupt or mismatched weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = Path(path) / weights
    if not f.exists():
        raise CheckpointError(f"{f}: weights file is missing; the {what} is incomplete")
    try:
        state = load_file(str(f), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f}: corrupt weights ({str(e).splitlines()[0]}); restore the file or train again") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{f}: weights do not match the {what}'s config ({str(e).splitlines()[0][:200]})") from None


class ModelDir:
    """Model-directory persistence for an ``nn.Module`` whose ``cfg`` has ``to_dict`` / ``from_dict`` (reward models,
    world models): ``config.json`` ``{"format", "version", "model": cfg}`` + ``model.safetensors``. A subclass sets
    ``FORMAT``, ``FORMAT_VERSION``, ``WHAT`` (its name in messages), ``HINT`` (how to make one) and ``CONFIG``."""

    FORMAT, FORMAT_VERSION, WHAT, HINT, CONFIG = "", 1, "model", "", None

    def save_pretrained(self, path) -> Path:
        return save_model_dir(path, self.state_dict(), {"format": self.FORMAT, "version": self.FORMAT_VERSION, "model": self.cfg.to_dict()})

    @classmethod
    def _read(cls, path):
        path, meta = read_model_config(path, cls.FORMAT, cls.FORMAT_VERSION, cls.WHAT, cls.HINT)
        try:
            return path, cls.CONFIG.from_dict(meta["model"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path / 'config.json'}: invalid {cls.WHAT} config: {e}") from None

    @classmethod
    def read_config(cls, path):
        return cls._read(path)[1]

    @classmethod
    def from_pretrained(cls, path, map_location: str = "cpu"):
        model = cls(cls.read_config(path))
        model.load_weights(path, map_location)
        return model.eval()

    def load_weights(self, path, map_location: str = "cpu") -> None:
        path, other = self._read(path)
        meta_keys = ("tasks", "data_frames")  # what the model was trained on, not its shape
        if {k: v for k, v in other.to_dict().items() if k not in meta_keys} != {k: v for k, v in self.cfg.to_dict().items() if k not in meta_keys}:
            raise CheckpointError(f"{path}: {self.WHAT} was saved with a different config; load it with {type(self).__name__}.from_pretrained")
        load_model_weights(self, path, self.WHAT, map_location)
