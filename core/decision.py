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
