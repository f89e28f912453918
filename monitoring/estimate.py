"""Label-free performance estimates from calibrated probabilities (confidence-based, as CBPE).

If the probabilities are calibrated, a row predicted with confidence p is right with probability
p, so the expected accuracy is the mean confidence; expected ROC AUC integrates the expected
true and false positive rates over the thresholds. Covariate shift moves rows to less confident
regions and the estimate falls with the realised score, before any label arrives.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def expected_accuracy(proba: npt.NDArray[np.float64]) -> float:
    return float(np.mean(np.max(proba, axis=1)))


def expected_roc_auc(p_positive: npt.NDArray[np.float64]) -> float:
    """Expected binary ROC AUC when each row is positive with its own probability."""
    p = np.asarray(p_positive, dtype=float)
    if len(p) < 2 or p.sum() == 0 or (1 - p).sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    tpr = np.concatenate([[0.0], np.cumsum(ps) / ps.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(1 - ps) / (1 - ps).sum()])
    return float(np.trapezoid(tpr, fpr))


def estimate(proba: npt.NDArray[np.float64], classes: list[str]) -> dict[str, float]:
    """Estimated metrics for a window of probabilities (columns in `classes` order)."""
    out = {"accuracy": expected_accuracy(proba)}
    if len(classes) == 2:
        out["roc_auc"] = expected_roc_auc(proba[:, 1])
    return out
