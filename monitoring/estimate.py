"""Label-free performance estimates from calibrated probabilities (confidence-based, as CBPE).

If the probabilities are calibrated, a row whose class-c probability is p is of class c with
probability p. Each row's class is decided as the service decides it (`core.decision.decide`: the
version's threshold, or argmax), so the expected accuracy is the mean probability of the decided
class; the expected true positives of class c are the sum of p_c over the rows decided c, the
expected false positives the sum of 1 - p_c there, and the expected false negatives the sum of
p_c over the rows decided otherwise, which give expected precision, recall and F1 (of the positive
class for a binary classifier at its threshold, macro over classes for 3+). Expected ROC AUC
integrates the expected true and false positive rates over the thresholds (one-vs-rest macro for
3+), expected log loss is the mean entropy of the rows' distributions and expected Brier score
their mean 1 - sum(p^2) (p(1 - p) of the positive class for a binary classifier). Covariate shift
moves rows to less confident regions and the estimate falls with the realised score, before any
label arrives.

A multi-class model calibrated one class against the rest and then normalised is under-confident
in its top class (its estimated accuracy reads 0.03-0.05 low): with held-out rows (the version's
reference sample, drawn from rows it never trained on) the top-class probability is recalibrated
to the chance of being right (`TopClassCalibration`, isotonic), and the expected accuracy is the
mean recalibrated confidence.

Every figure is computed for a matrix of row weights at once (one row of weights per replicate),
so the noise bands (`monitoring.noise`) bootstrap exactly the figures shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.decision import decide

Floats = npt.NDArray[np.float64]

MIN_CALIBRATION_ROWS = 100
"""Fewer held-out labelled rows: no top-class recalibration (the raw mean confidence)."""


@dataclass(frozen=True)
class TopClassCalibration:
    """P(the decided class is right | its probability), isotonic, fitted on held-out rows."""

    knots: Floats
    values: Floats
    rows: int

    def __call__(self, confidence: Floats) -> Floats:
        return np.interp(confidence, self.knots, self.values)


def fit_top_class(
    proba: Floats, codes: npt.NDArray[np.int64], threshold: float | None = None, positive: int = 1
) -> TopClassCalibration | None:
    """The top-class recalibration of a multi-class model from held-out rows (`codes`: each row's
    true class column, -1 for none); None for binary models, too few rows, or a top class whose
    mean probability is within two standard errors of its accuracy on those rows (recalibrating
    would only carry their sampling error over)."""
    proba = np.asarray(proba, dtype=float)
    known = codes >= 0
    if proba.ndim != 2 or proba.shape[1] < 3 or known.sum() < MIN_CALIBRATION_ROWS:
        return None
    from sklearn.isotonic import IsotonicRegression

    proba, codes = proba[known], codes[known]
    picked = decide(proba, threshold, positive)
    confidence = proba[np.arange(len(proba)), picked]
    gap = (picked == codes) - confidence
    if abs(gap.mean()) < 2 * gap.std(ddof=1) / np.sqrt(len(gap)):
        return None  # calibrated within the held-out rows' own sampling error: nothing to fix
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(confidence, (picked == codes).astype(float))
    return TopClassCalibration(
        np.asarray(iso.X_thresholds_, dtype=float),
        np.asarray(iso.y_thresholds_, dtype=float),
        int(known.sum()),
    )


def expected_roc_auc(p_positive: Floats) -> float:
    """Expected binary ROC AUC when each row is positive with its own probability."""
    p = np.asarray(p_positive, dtype=float)
    if len(p) < 2:
        return float("nan")
    return float(_expected_auc(p, np.ones((1, len(p))))[0])


def _expected_auc(p: Floats, weights: Floats) -> Floats:
    """Expected ROC AUC for each row of `weights` (replicates x rows); NaN where undefined."""
    order = np.argsort(-p, kind="stable")
    ps, w = p[order], weights[:, order]
    tp, fp = np.cumsum(w * ps, axis=1), np.cumsum(w * (1 - ps), axis=1)
    pos, neg = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([np.zeros_like(pos), tp], axis=1) / pos
        fpr = np.concatenate([np.zeros_like(neg), fp], axis=1) / neg
        area = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
    return np.where((pos[:, 0] > 0) & (neg[:, 0] > 0), area, np.nan)


def _ratio(num: Floats, den: Floats) -> Floats:
    """num / den, 0 where den is 0 (zero_division=0, as the realised metrics)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def weighted_estimate(
    proba: Floats,
    threshold: float | None = None,
    positive: int = 1,
    weights: Floats | None = None,
    calibration: TopClassCalibration | None = None,
) -> dict[str, Floats]:
    """Every estimated metric for each row of `weights` (replicates x rows; None: one replicate,
    every row once)."""
    proba = np.asarray(proba, dtype=float)
    n, k = proba.shape
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=float)
    total = w.sum(axis=1)
    picked = decide(proba, threshold, positive)
    confidence = proba[np.arange(n), picked]
    if calibration is not None and k > 2:
        confidence = calibration(confidence)
    out: dict[str, Floats] = {"accuracy": w @ confidence / total}
    decided = np.eye(k, dtype=bool)[picked]
    tp = w @ np.where(decided, proba, 0.0)
    fp = w @ np.where(decided, 1 - proba, 0.0)
    fn = w @ np.where(decided, 0.0, proba)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    entropy = -np.sum(proba * np.log(np.clip(proba, np.finfo(float).eps, 1.0)), axis=1)
    if k == 2:
        out["precision"], out["recall"], out["f1"] = (
            precision[:, positive],
            recall[:, positive],
            f1[:, positive],
        )
        out["roc_auc"] = _expected_auc(proba[:, positive], w)
        brier = proba[:, 1] * (1 - proba[:, 1])
    else:
        out["precision"], out["recall"], out["f1"] = precision.mean(1), recall.mean(1), f1.mean(1)
        out["roc_auc"] = np.mean([_expected_auc(proba[:, c], w) for c in range(k)], axis=0)
        brier = 1 - np.sum(proba**2, axis=1)
    out["log_loss"] = w @ entropy / total
    out["brier"] = w @ brier / total
    return out


def estimate(
    proba: Floats,
    classes: list[Any],
    threshold: float | None = None,
    positive: int = 1,
    calibration: TopClassCalibration | None = None,
) -> dict[str, float]:
    """Estimated metrics for a window of probabilities (columns in `classes` order), the classes
    decided by the version's `threshold` (None: argmax) for the class in column `positive`; a
    multi-class model's accuracy from its top-class `calibration` when there is one."""
    proba = np.asarray(proba, dtype=float)
    if len(proba) == 0 or proba.ndim != 2 or proba.shape[1] != len(classes):
        return {}
    figures = weighted_estimate(proba, threshold, positive, calibration=calibration)
    return {name: float(values[0]) for name, values in figures.items()}
