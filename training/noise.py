"""The noise rule: one configuration beats another only beyond one standard error of their paired
per-fold difference; within noise the default, or the simpler family, is kept."""

from __future__ import annotations

import math
from collections.abc import Sequence

SIMPLICITY = ("linear", "tree", "hgb", "lightgbm", "xgboost", "forest", "mlp", "svm", "deep")
"""Families from the simplest (cheapest to fit and to serve, fewest moving parts) to the most
complex: within noise of the best, the first of them is chosen. Unknown families come last."""


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the per-fold difference a - b (same folds, same rows); the
    standard error is inf when there are fewer than two folds or they do not pair."""
    if len(a) != len(b) or not a:
        return float("nan"), float("inf")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, float("inf")
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(var / len(diffs))


def beats(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether fold scores `a` beat `b` (greater is better) beyond the noise: the mean paired
    difference is above one standard error of it (a tie, or unpaired scores, never beats)."""
    mean, se = paired_difference(a, b)
    return math.isfinite(mean) and mean > 0 and mean > se


def simplicity(family: str) -> int:
    """The family's rank in SIMPLICITY (unknown families last)."""
    return SIMPLICITY.index(family) if family in SIMPLICITY else len(SIMPLICITY)
