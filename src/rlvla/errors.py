"""The error types that cross layers (algorithms, policies, runners, the CLI).

Each carries a one-line message that says what is wrong and how to fix it; the CLI prints it and exits non-zero.
Errors that belong to one layer stay there (``DatasetError`` in :mod:`rlvla.data.lerobot`, ``EnvWorkerError`` in
:mod:`rlvla.envs.pool`).
"""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf: the update was not applied."""


class TrainingError(RuntimeError):
    """Training stopped on a non-finite loss; the message names the last good checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (missing, corrupt, or made for another config)."""
