"""Decisions: the one place class probabilities become predicted classes.

Every serving path (scikit-learn, the numpy replay, the compiled trees), the load-time check that
compares them, training's test figures and reference sample, and monitoring's realised and
estimated metrics call `decide`. A binary classifier may carry a decision threshold (chosen on
validation data by training, or given on import): the positive class is predicted when its
probability is at least the threshold. Without one, and for three or more classes, the most
probable class is predicted, the first on a tie (as scikit-learn's `predict`).
Light on purpose (numpy only): the service imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def decide(
    proba: np.ndarray[Any, Any], threshold: float | None = None, positive: int = 1
) -> np.ndarray[Any, Any]:
    """Each row's predicted class as its column index in `proba`.

    `threshold` applies to binary probabilities only: column `positive` (the positive class's
    index) is chosen when its probability is >= `threshold`, else the other column. None, or
    more than two columns: argmax, the first column on a tie."""
    proba = np.asarray(proba, dtype=float)
    if threshold is None or proba.ndim != 2 or proba.shape[1] != 2:
        return proba.argmax(axis=1)  # type: ignore[no-any-return]
    hit = proba[:, positive] >= threshold
    return np.where(hit, positive, 1 - positive)


def check_threshold(value: float | None, field: str = "threshold") -> float | None:
    """`value` when it is a usable threshold (a finite number strictly between 0 and 1), else
    ValueError naming `field` and the rule."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field}: a threshold is a number between 0 and 1, got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{field}: a threshold is strictly between 0 and 1, got {value!r}")
    return float(value)


Decision = tuple[float | None, int]
"""A version's decision: its threshold (None: argmax) and its positive class's column."""


def of(decision: Mapping[str, Any] | None, classes: Sequence[Any] | None) -> Decision:
    """The (threshold, positive column) a manifest's `decision` section describes; argmax and the
    last class for manifests without one (older releases, regressors)."""
    keys = [str(c) for c in classes or []]
    last = max(len(keys) - 1, 0)
    if not decision:
        return None, last if len(keys) == 2 else 1
    want = decision.get("positive_class")
    positive = keys.index(str(want)) if want is not None and str(want) in keys else last
    threshold = decision.get("threshold")
    return (float(threshold) if threshold is not None else None), positive
