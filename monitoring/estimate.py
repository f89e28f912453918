"""Label-free performance estimates from calibrated probabilities (confidence-based, as CBPE).

If the probabilities are calibrated, a row whose positive-class probability is p is positive with
probability p. Each row's class is decided as the service decides it (`core.decision.decide`: the
version's threshold, or argmax), so the expected accuracy is the mean probability of the decided
class; for a binary classifier the expected true positives are the sum of p over the rows decided
positive, the expected false positives the sum of 1 - p there, and the expected false negatives
the sum of p over the rows decided negative, which give expected precision, recall and F1 at the
version's threshold. Expected ROC AUC integrates the expected true and false positive rates over
the thresholds. Covariate shift moves rows to less confident
regions and the estimate falls with the realised score, before any label arrives.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from core.decision import decide


def expected_accuracy(
    proba: npt.NDArray[np.float64], threshold: float | None = None, positive: int = 1
) -> float:
    """Mean probability of each row's decided class (the mean confidence under argmax)."""
    picked = decide(proba, threshold, positive)
    return float(np.mean(proba[np.arange(len(proba)), picked]))


def expected_binary(
    p_positive: npt.NDArray[np.float64], decided_positive: npt.NDArray[np.bool_]
) -> dict[str, float]:
    """Expected precision, recall and F1 of the positive class (0 where undefined, as the
    realised metrics with zero_division=0)."""
    p = np.asarray(p_positive, dtype=float)
    tp = float(p[decided_positive].sum())
    fp = float((1 - p[decided_positive]).sum())
    fn = float(p[~decided_positive].sum())
    return {
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0,
    }


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


def estimate(
    proba: npt.NDArray[np.float64],
    classes: list[str],
    threshold: float | None = None,
    positive: int = 1,
) -> dict[str, float]:
    """Estimated metrics for a window of probabilities (columns in `classes` order), the classes
    decided by the version's `threshold` (None: argmax) for the class in column `positive`."""
    proba = np.asarray(proba, dtype=float)
    out = {"accuracy": expected_accuracy(proba, threshold, positive)}
    if len(classes) == 2:
        out["roc_auc"] = expected_roc_auc(proba[:, positive])
        decided = decide(proba, threshold, positive) == positive
        out.update(expected_binary(proba[:, positive], decided))
    return out
