"""Action heads. The folder is the registry: ``heads/<name>.py`` defines ``Config`` (a dataclass with
``name = "<name>"``) and ``Head`` (an :class:`~rlvla.policies.heads.base.ActionHead`)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def available_heads() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "base")


def _module(name: str):
    if name not in available_heads():
        raise ValueError(f"unknown action head {name!r}; available heads: {', '.join(available_heads())}")
    return importlib.import_module(f"rlvla.policies.heads.{name}")


def head_config_class(name: str) -> type:
    """The config dataclass of head ``name``."""
    return _module(name).Config


def head_config(name: str, **kwargs):
    cls = head_config_class(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"invalid config for the {name!r} head: {e}") from None


def make_head(cfg, cond_dim: int, chunk: int, action_dim: int):
    return _module(cfg.name).Head(cfg, cond_dim, chunk, action_dim)
