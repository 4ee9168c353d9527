"""Named evaluation splits and the seed ranges that keep training and evaluation apart.

Every episode has an integer *layout seed*. The seed alone fixes the episode's object/goal layout, its
instruction and, for the visual and camera splits, its perturbation, so any episode can be replayed
exactly. Seeds in ``TRAIN_SEEDS`` are for training and data collection, seeds in ``EVAL_SEEDS`` for
evaluation; the two ranges are disjoint and every out-of-distribution split refuses training seeds.
``VALIDATION_SEEDS`` is the top slice of the training range that no run trains on (online RL draws below it,
demonstrations are collected from seed 0 upward): recipes are tuned there, never on evaluation seeds. The
out-of-distribution splits accept validation seeds too (no run trains on them or on these seeds), so that a recipe
meant to generalise can be chosen on an OOD validation slice and reported once on the evaluation seeds.

Splits
------
``id``            layouts from the training region: the central ``ID_FRACTION`` of MetaWorld's
                  randomisation box in every randomised coordinate; training instructions.
``ood-position``  layouts from the outer shell of the box: at least one randomised coordinate lies beyond
                  ``OOD_POSITION_INNER`` of the half-width (a gap separates it from the training region).
``ood-visual``    ``id`` layouts; table, object colours and lighting changed.
``ood-camera``    ``id`` layouts; camera position and orientation perturbed.
``ood-language``  ``id`` layouts; held-out paraphrases of the instruction, never used in training.
"""

from __future__ import annotations

import numpy as np

SPLITS: tuple[str, ...] = ("id", "ood-position", "ood-visual", "ood-camera", "ood-language")
EVAL_ONLY_SPLITS: tuple[str, ...] = SPLITS[1:]

TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000, 2_000_000)
VALIDATION_SEEDS = range(900_000, 1_000_000)  # inside TRAIN_SEEDS; never trained on
RL_SEEDS = range(TRAIN_SEEDS.start, VALIDATION_SEEDS.start)  # where online RL draws its layouts

# Training layouts: |u| <= ID_FRACTION in every randomised coordinate, u = (x - centre) / half_width.
ID_FRACTION = 0.6
# ood-position layouts: max |u| >= OOD_POSITION_INNER (and <= 1, inside MetaWorld's valid box).
OOD_POSITION_INNER = 0.8
# Edge-weighted training layouts (``edge`` in sample_layout): one coordinate in the training region's outer band,
# EDGE_INNER <= |u| <= ID_FRACTION. Still inside the training region: no evaluation-only layout is ever drawn.
EDGE_INNER = 0.45


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def seed_role(seed: int) -> str:
    """'train' or 'eval' for a layout seed; an error for a seed in neither range."""
    seed = int(seed)
    if seed in TRAIN_SEEDS:
        return "train"
    if seed in EVAL_SEEDS:
        return "eval"
    raise ValueError(
        f"layout seed {seed} is outside both ranges; use training seeds "
        f"[{TRAIN_SEEDS.start}, {TRAIN_SEEDS.stop}) or evaluation seeds [{EVAL_SEEDS.start}, {EVAL_SEEDS.stop})"
    )


def check_split_seed(split: str, seed: int) -> str:
    """Return the seed's role; refuse a training seed on an evaluation-only split (validation seeds are allowed:
    no run trains on them)."""
    check_split(split)
    role = seed_role(seed)
    if split in EVAL_ONLY_SPLITS and role != "eval" and int(seed) not in VALIDATION_SEEDS:
        raise ValueError(
            f"split {split!r} is for evaluation only but seed {seed} is a training seed; use an evaluation seed in "
            f"[{EVAL_SEEDS.start}, {EVAL_SEEDS.stop}) (rlvla.envs.eval_seeds(n)) or, to tune, a validation seed in "
            f"[{VALIDATION_SEEDS.start}, {VALIDATION_SEEDS.stop}) (rlvla.envs.splits.validation_seeds(n))"
        )
    return role


def train_seeds(n: int, offset: int = 0) -> list[int]:
    """The first ``n`` training layout seeds (after ``offset``)."""
    return [TRAIN_SEEDS.start + offset + i for i in range(n)]


def eval_seeds(n: int, offset: int = 0) -> list[int]:
    """The first ``n`` evaluation layout seeds (after ``offset``)."""
    return [EVAL_SEEDS.start + offset + i for i in range(n)]


def validation_seeds(n: int, offset: int = 0) -> list[int]:
    """The first ``n`` validation layout seeds (after ``offset``): training-range seeds no run trains on."""
    if offset + n > len(VALIDATION_SEEDS):
        raise ValueError(f"only {len(VALIDATION_SEEDS)} validation seeds exist, asked for {offset + n}")
    return [VALIDATION_SEEDS.start + offset + i for i in range(n)]


def normalised(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Coordinates in units of the box half-width, centred; NaN on fixed (zero-width) coordinates."""
    half = (np.asarray(high, float) - np.asarray(low, float)) / 2.0
    centre = (np.asarray(high, float) + np.asarray(low, float)) / 2.0
    out = np.full(half.shape, np.nan)
    free = half > 1e-9
    out[free] = (np.asarray(x, float)[free] - centre[free]) / half[free]
    return out


def sample_layout(rng: np.random.Generator, low: np.ndarray, high: np.ndarray, split: str, edge: float = 0.0) -> np.ndarray:
    """Draw one MetaWorld ``rand_vec`` (object/goal positions) for ``split``.

    ``id`` and the appearance/language splits draw ``u ~ U[-ID_FRACTION, ID_FRACTION]`` per free coordinate;
    ``ood-position`` draws ``u ~ U[-1, 1]`` and keeps the draw only if ``max|u| >= OOD_POSITION_INNER``.
    ``edge`` (``id`` only): with this probability, one free coordinate (chosen uniformly) is redrawn in the
    training region's outer band ``EDGE_INNER <= |u| <= ID_FRACTION`` (training that meets the region's edges
    more often than a uniform draw does). At 0 the stream is untouched: the layouts are those of a plain draw.
    """
    low = np.asarray(low, float)
    high = np.asarray(high, float)
    half = (high - low) / 2.0
    centre = (high + low) / 2.0
    free = half > 1e-9
    if split == "ood-position":
        for _ in range(10_000):
            u = rng.uniform(-1.0, 1.0, size=low.shape)
            if np.max(np.abs(u[free])) >= OOD_POSITION_INNER:
                break
    else:
        u = rng.uniform(-ID_FRACTION, ID_FRACTION, size=low.shape)
        if edge > 0.0 and split == "id" and free.any() and rng.uniform() < edge:
            k = rng.choice(np.flatnonzero(free))
            u[k] = rng.choice((-1.0, 1.0)) * rng.uniform(EDGE_INNER, ID_FRACTION)
    u[~free] = 0.0
    return centre + u * half
