"""Success-rate statistics."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default). (0, 1) for n == 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always contains p; at 0 or n successes the bound is exactly 0 or 1 (not 1e-17 off)
    lo = 0.0 if successes == 0 else min(p, max(0.0, centre - half))
    hi = 1.0 if successes == n else max(p, min(1.0, centre + half))
    return (lo, hi)


def mcnemar_exact(a: list[bool], b: list[bool]) -> dict:
    """Exact McNemar test for two policies evaluated on the same episodes (same task and layout seed, in order).

    Only discordant pairs carry information: ``a_only`` episodes that ``a`` solved and ``b`` did not, and ``b_only``.
    Under the null (equal success), ``a_only ~ Binomial(a_only + b_only, 1/2)``; the two-sided p-value doubles
    the smaller tail (capped at 1).
    """
    if len(a) != len(b):
        raise ValueError(f"paired results must have equal length, got {len(a)} and {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}


def _average_ranks(x) -> "list[float]":
    """1-based ranks with ties given their average rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties counting 1/2
    (the Mann-Whitney U statistic over n_pos x n_neg). NaN when either class is absent."""
    scores, labels = [float(s) for s in scores], [bool(v) for v in labels]
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson on average ranks). NaN when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    rx, ry = _average_ranks([float(v) for v in x]), _average_ranks([float(v) for v in y])
    n = len(rx)
    if n < 2:
        return float("nan")
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")
