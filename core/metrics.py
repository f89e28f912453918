"""The metric contract: each metric's task, direction and computation, and how to compare scores.

Every judgement the project makes on a score (the training gate, champion against challenger, the
retraining gate, the alert rules, the canary) goes through a `Metric` from here; no other module
knows which way a metric points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from core.decision import decide

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Metric:
    """One metric: what it measures, for which task, and which way is better."""

    name: str
    task: Task
    higher_is_better: bool
    needs_probabilities: bool
    description: str
    scorer_binary: str
    """scikit-learn's scoring string (greater is better) for binary or regression."""
    scorer_multiclass: str | None = None
    relative: bool = False
    """In the target's units (rmse, mae): a change is judged as a share of the reference value,
    so an allowed drop of 0.05 means 5% worse whatever the scale of the target."""

    def scorer(self, n_classes: int) -> str:
        """The scikit-learn scoring string for cross-validation."""
        if n_classes > 2 and self.scorer_multiclass is not None:
            return self.scorer_multiclass
        return self.scorer_binary

    def worse_by(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference` (negative when it is better); a share of
        the reference for metrics in the target's units."""
        change = reference - value if self.higher_is_better else value - reference
        if self.relative:
            return change / abs(reference) if reference else math.copysign(math.inf, change)
        return change

    def better(self, a: float, b: float) -> bool:
        """`a` is strictly better than `b`."""
        return self.worse_by(b, a) < 0

    def limit(self, reference: float, max_drop: float) -> float:
        """The worst acceptable value when `reference` may worsen by at most `max_drop` (as
        `worse_by` measures it)."""
        step = max_drop * abs(reference) if self.relative else max_drop
        return reference - step if self.higher_is_better else reference + step

    def meets(self, value: float, bound: float | None) -> bool:
        """`value` is at least as good as `bound` (a floor, or a ceiling for lower-is-better);
        no bound is always met, a NaN value never meets one."""
        if bound is None:
            return True
        if math.isnan(value):
            return False
        return value >= bound if self.higher_is_better else value <= bound

    def strictest(self, bounds: Sequence[float]) -> float | None:
        """The hardest of several bounds to meet (None when there are none)."""
        if not bounds:
            return None
        return max(bounds) if self.higher_is_better else min(bounds)

    @property
    def comparison(self) -> str:
        """How a value is held against its bound, for messages: '>=' or '<='."""
        return ">=" if self.higher_is_better else "<="

    @property
    def shortfall(self) -> str:
        """How a breach reads in a message: 'below' or 'above'."""
        return "below" if self.higher_is_better else "above"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", "classification", True, True, "area under the ROC curve "
               "(one-vs-rest macro for 3+ classes)", "roc_auc", "roc_auc_ovr"),
        Metric("accuracy", "classification", True, False, "share of right answers", "accuracy"),
        Metric("f1", "classification", True, False, "F1 of the positive class (macro for 3+)",
               "f1", "f1_macro"),
        Metric("precision", "classification", True, False, "precision of the positive class "
               "(macro for 3+)", "precision", "precision_macro"),
        Metric("recall", "classification", True, False, "recall of the positive class "
               "(macro for 3+)", "recall", "recall_macro"),
        Metric("log_loss", "classification", False, True, "cross-entropy of the probabilities",
               "neg_log_loss"),
        Metric("brier", "classification", False, True, "mean squared error of the probabilities "
               "(summed over classes for 3+)", "neg_brier_score"),
        Metric("rmse", "regression", False, False, "root mean squared error",
               "neg_root_mean_squared_error", relative=True),
        Metric("mae", "regression", False, False, "mean absolute error",
               "neg_mean_absolute_error", relative=True),
        Metric("r2", "regression", True, False, "coefficient of determination", "r2"),
    )
}  # fmt: skip
CLASSIFICATION_METRICS = tuple(n for n, m in METRICS.items() if m.task == "classification")
REGRESSION_METRICS = tuple(n for n, m in METRICS.items() if m.task == "regression")


def get(name: str) -> Metric:
    """The metric called `name`; a ValueError lists the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def default_metric(task: str, n_classes: int) -> str:
    """The objective when the config names none: ROC AUC, accuracy (3+ classes) or RMSE."""
    if task == "regression":
        return "rmse"
    return "roc_auc" if n_classes == 2 else "accuracy"


def class_codes(y: Any, classes: Sequence[Any]) -> np.ndarray[Any, Any]:
    """Each label's column in `classes` (-1 for a label that is no class), compared as text so
    that 1, np.int64(1) and "1" name the same class."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index.get(str(v), -1) for v in np.asarray(y, dtype=object)], dtype=np.int64)


def classification_metrics(
    y: Any,
    proba: np.ndarray[Any, Any],
    classes: Sequence[Any],
    threshold: float | None = None,
    positive: int = 1,
) -> dict[str, float]:
    """Every classification metric from probabilities (columns in `classes` order).

    The predicted classes (accuracy, precision, recall, F1) are decided by `core.decision.decide`
    with the version's `threshold` (None: argmax); precision, recall and F1 are of the class in
    column `positive` for a binary classifier (macro for 3+). Labels that are no class of the
    model are left out (the caller counts them); with none left every metric is NaN.
    """
    codes = class_codes(y, classes)
    known = codes >= 0
    proba = np.asarray(proba, dtype=float)[known]
    totals = proba.sum(axis=1, keepdims=True)
    proba = proba / np.where(totals > 0, totals, 1.0)  # logged probabilities are rounded
    codes = codes[known]
    k = len(classes)
    if len(codes) == 0 or k < 2:
        return {name: float("nan") for name in CLASSIFICATION_METRICS}
    pred = decide(proba, threshold, positive)
    binary = k == 2
    avg: Literal["binary", "macro"] = "binary" if binary else "macro"
    labels = list(range(k))
    pos = positive if binary else 1
    out = {
        "accuracy": float(accuracy_score(codes, pred)),
        "precision": float(
            precision_score(codes, pred, average=avg, labels=labels, pos_label=pos, zero_division=0)
        ),
        "recall": float(
            recall_score(codes, pred, average=avg, labels=labels, pos_label=pos, zero_division=0)
        ),
        "f1": float(
            f1_score(codes, pred, average=avg, labels=labels, pos_label=pos, zero_division=0)
        ),
        "log_loss": float(log_loss(codes, proba, labels=labels)),
    }
    onehot = np.eye(k)[codes]
    if binary:
        out["brier"] = float(np.mean((proba[:, 1] - onehot[:, 1]) ** 2))
    else:
        out["brier"] = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    present = np.unique(codes)
    if binary:
        out["roc_auc"] = float(roc_auc_score(codes, proba[:, 1])) if len(present) == 2 else math.nan
    elif len(present) == k:
        out["roc_auc"] = float(roc_auc_score(codes, proba, multi_class="ovr", labels=labels))
    else:
        out["roc_auc"] = math.nan  # one-vs-rest AUC needs every class among the labels
    return out


def regression_metrics(y: Any, pred: Any) -> dict[str, float]:
    """MAE, RMSE and R² over the rows where both the label and the prediction are finite."""
    yv = np.asarray(y, dtype=float)
    pv = np.asarray(pred, dtype=float)
    ok = np.isfinite(yv) & np.isfinite(pv)
    yv, pv = yv[ok], pv[ok]
    if len(yv) == 0:
        return {name: float("nan") for name in REGRESSION_METRICS}
    return {
        "mae": float(mean_absolute_error(yv, pv)),
        "rmse": float(root_mean_squared_error(yv, pv)),
        "r2": float(r2_score(yv, pv)) if len(yv) >= 2 else math.nan,
    }
