"""Noise bands: how much worse than its baseline a healthy window of n rows scores by chance.

A window's metric is a sample statistic: 1,000 rows of a regressor whose test RMSE is 615 give an
RMSE anywhere between 540 and 680. The band is read from rows the version never trained on (its
reference sample, drawn from the test rows at publishing): replicates of the window's size are
drawn from them (a bootstrap, as row weights), every metric is computed on each, and the band is
how far the replicates' worst `1 - confidence` tail lies from the figure on all rows. The baseline
(the test score, or the estimate on the reference) is itself measured on a finite sample, so the
band is widened by sqrt(1 + n / baseline_rows): the spread of the difference of two means.

Versions published before the reference was drawn from unseen rows have only in-sample rows: the
band is then the window's own spread (a bootstrap of its own rows, the standard error of its
figure), and the summary says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from core import metrics as metric_contract
from core.decision import decide
from core.registry import LABEL_COL, PREDICTION_COL, PROBA_PREFIX
from monitoring.estimate import TopClassCalibration, weighted_estimate
from monitoring.summary import NoiseSummary

Floats = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int64]

REPLICATES = 2000
"""Bootstrap replicates per band; the tail is read from their mean, spread and skewness
(Cornish-Fisher), steadier than the few most extreme replicates. With 400 a band's width was
off by up to 6% from one seed to the next (its spread and skewness read from too few replicates):
a 1,000-row accuracy band of 2.21 standard errors fired on 1.2% of healthy windows."""
SOURCE_ROWS = 2000
"""At most this many source rows are resampled (a seeded subsample): the spread of a window's
figure is as well known from 2,000 rows, at a fraction of the cost."""
MIN_SOURCE_ROWS = 30
"""Fewer unseen labelled rows: the band falls back to the window's own spread."""

Source = Literal["unseen", "window"]


def replicate_weights(rows: int, n: int, replicates: int, seed: int = 0) -> Floats:
    """Row weights (replicates x rows): how often each of `rows` rows is drawn in `n` draws."""
    rng = np.random.default_rng(seed)
    out = np.empty((replicates, rows))
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, replicates, chunk):
        b = min(chunk, replicates - start)
        draws = rng.integers(0, rows, size=(b, n)) + rows * np.arange(b)[:, None]
        out[start : start + b] = np.bincount(draws.ravel(), minlength=b * rows).reshape(b, rows)
    return out


def _auc(scores: Floats, positive: npt.NDArray[np.bool_], w: Floats) -> Floats:
    """Weighted ROC AUC (ties count a half) for each row of `w`; NaN without both classes."""
    neg_scores = scores[~positive]
    order = np.argsort(neg_scores, kind="stable")
    neg_sorted = neg_scores[order]
    below = np.zeros((len(w), len(order) + 1))
    np.cumsum(w[:, ~positive][:, order], axis=1, out=below[:, 1:])
    pos_scores = scores[positive]
    lo = np.searchsorted(neg_sorted, pos_scores, side="left")
    hi = np.searchsorted(neg_sorted, pos_scores, side="right")
    w_pos = w[:, positive]
    wins = below[:, lo] + (below[:, hi] - below[:, lo]) / 2
    p_total, n_total = w_pos.sum(axis=1), below[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.sum(w_pos * wins, axis=1) / (p_total * n_total)
    return np.where((p_total > 0) & (n_total > 0), area, np.nan)


def _ratio(num: Floats, den: Floats) -> Floats:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def weighted_classification(
    codes: Codes,
    proba: Floats,
    threshold: float | None = None,
    positive: int = 1,
    weights: Floats | None = None,
) -> dict[str, Floats]:
    """`core.metrics.classification_metrics` for each row of `weights` (replicates x rows), on
    rows whose label is a class (`codes` >= 0)."""
    proba = np.asarray(proba, dtype=float)
    totals = proba.sum(axis=1, keepdims=True)
    proba = proba / np.where(totals > 0, totals, 1.0)
    n, k = proba.shape
    w = np.ones((1, n)) if weights is None else weights
    total = w.sum(axis=1)
    picked = decide(proba, threshold, positive)
    truth = np.eye(k, dtype=bool)[codes]
    decided = np.eye(k, dtype=bool)[picked]
    tp = w @ (decided & truth).astype(float)
    fp = w @ (decided & ~truth).astype(float)
    fn = w @ (~decided & truth).astype(float)
    precision, recall, f1 = (
        _ratio(tp, tp + fp),
        _ratio(tp, tp + fn),
        _ratio(2 * tp, 2 * tp + fp + fn),
    )
    p_true = np.clip(proba[np.arange(n), codes], np.finfo(float).eps, 1.0)
    out: dict[str, Floats] = {
        "accuracy": w @ (picked == codes).astype(float) / total,
        "log_loss": w @ -np.log(p_true) / total,
    }
    if k == 2:
        out["precision"], out["recall"], out["f1"] = (
            precision[:, positive],
            recall[:, positive],
            f1[:, positive],
        )
        out["brier"] = w @ (proba[:, 1] - truth[:, 1].astype(float)) ** 2 / total
        out["roc_auc"] = _auc(proba[:, 1], truth[:, 1], w)
    else:
        out["precision"], out["recall"], out["f1"] = precision.mean(1), recall.mean(1), f1.mean(1)
        out["brier"] = w @ np.sum((proba - truth) ** 2, axis=1) / total
        # one-vs-rest macro AUC is NaN unless every class is among the labels (as realised)
        out["roc_auc"] = np.mean([_auc(proba[:, c], truth[:, c], w) for c in range(k)], axis=0)
    return out


def weighted_regression(
    y: Floats, pred: Floats, weights: Floats | None = None
) -> dict[str, Floats]:
    """`core.metrics.regression_metrics` for each row of `weights` (finite rows only)."""
    w = np.ones((1, len(y))) if weights is None else weights
    total = w.sum(axis=1)
    err = pred - y
    sse = w @ err**2
    sst = w @ y**2 - (w @ y) ** 2 / total
    return {
        "mae": w @ np.abs(err) / total,
        "rmse": np.sqrt(sse / total),
        "r2": np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1.0), np.nan),
    }


@dataclass(frozen=True)
class Spread:
    """Per metric, how much worse than the figure on all rows a window of `rows` rows can score by
    chance at `confidence` (in the metric's units, always >= 0)."""

    widths: dict[str, float]
    rows: int
    source_rows: int


def _widths(
    full: dict[str, Floats], reps: dict[str, Floats], confidence: float, factor: float
) -> dict[str, float]:
    """Per metric, how far the replicates' worse `1 - confidence` tail lies from the figure on
    all rows, times `factor`; metrics undefined on most replicates are left out."""
    from statistics import NormalDist

    out: dict[str, float] = {}
    for name, values in reps.items():
        centre = float(full[name][0])
        finite = values[np.isfinite(values)]
        if not math.isfinite(centre) or len(finite) < max(len(values) / 2, 3):
            continue  # undefined on most windows of this size (e.g. a class often absent)
        judge = metric_contract.get(name)
        z = NormalDist().inv_cdf(1 - confidence if judge.higher_is_better else confidence)
        mean, sd = float(finite.mean()), float(finite.std(ddof=1))
        skew = float(np.mean(((finite - mean) / sd) ** 3)) if sd > 0 else 0.0
        if abs(skew) < 2 * math.sqrt(6 / len(finite)):
            skew = 0.0  # indistinguishable from none: its estimate would only add noise
        skew = min(max(skew, -2.0), 2.0)
        tail = mean + sd * (z + (z * z - 1) * skew / 6)  # Cornish-Fisher
        width = centre - tail if judge.higher_is_better else tail - centre
        out[name] = max(0.0, width) * factor
    return out


def _subsample(rows: int, seed: int = 0) -> npt.NDArray[np.int64] | slice:
    """At most SOURCE_ROWS of `rows` source rows (seeded, so a version's bands are stable)."""
    if rows <= SOURCE_ROWS:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(rows, SOURCE_ROWS, replace=False))


def widening(rows: int, baseline_rows: int | None) -> float:
    """sqrt(1 + n / baseline_rows): the baseline's own sampling error added to the window's."""
    return math.sqrt(1 + rows / baseline_rows) if baseline_rows else 1.0


def classification_spread(
    codes: Codes,
    proba: Floats,
    rows: int,
    confidence: float,
    decision: tuple[float | None, int] = (None, 1),
    baseline_rows: int | None = None,
    replicates: int = REPLICATES,
) -> Spread | None:
    """The realised metrics' spread at `rows` rows, from labelled rows (`codes` >= 0 kept)."""
    known = codes >= 0
    if known.sum() < 2 or rows < 1:
        return None
    codes, proba = codes[known], np.asarray(proba, dtype=float)[known]
    keep = _subsample(len(codes))
    codes, proba = codes[keep], proba[keep]
    full = weighted_classification(codes, proba, *decision)
    w = replicate_weights(len(codes), rows, replicates)
    reps = weighted_classification(codes, proba, *decision, weights=w)
    factor = widening(rows, baseline_rows)
    return Spread(_widths(full, reps, confidence, factor), rows, len(codes))


def regression_spread(
    y: Floats,
    pred: Floats,
    rows: int,
    confidence: float,
    baseline_rows: int | None = None,
    replicates: int = REPLICATES,
) -> Spread | None:
    """The realised metrics' spread at `rows` rows, from rows with a finite label and prediction."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    ok = np.isfinite(y) & np.isfinite(pred)
    if ok.sum() < 2 or rows < 1:
        return None
    keep = _subsample(int(ok.sum()))
    y, pred = y[ok][keep], pred[ok][keep]
    full = weighted_regression(y, pred)
    reps = weighted_regression(y, pred, replicate_weights(len(y), rows, replicates))
    return Spread(_widths(full, reps, confidence, widening(rows, baseline_rows)), rows, len(y))


def estimate_spread(
    proba: Floats,
    rows: int,
    confidence: float,
    decision: tuple[float | None, int] = (None, 1),
    calibration: TopClassCalibration | None = None,
    baseline_rows: int | None = None,
    replicates: int = REPLICATES,
) -> Spread | None:
    """The estimated metrics' spread at `rows` rows, from rows' probabilities."""
    proba = np.asarray(proba, dtype=float)
    if len(proba) < 2 or rows < 1:
        return None
    proba = proba[_subsample(len(proba))]
    full = weighted_estimate(proba, *decision, calibration=calibration)
    w = replicate_weights(len(proba), rows, replicates)
    reps = weighted_estimate(proba, *decision, weights=w, calibration=calibration)
    factor = widening(rows, baseline_rows)
    return Spread(_widths(full, reps, confidence, factor), rows, len(proba))


def mean_spread(values: Floats, other: Floats, confidence: float, tests: int = 1) -> float:
    """How far apart the means of two samples (`values`, `other`) fall by chance at
    `confidence` (two-sided, normal with each sample's own variance, as Welch's test: a heavy tail
    in either widens it), for one of `tests` features judged at once (Bonferroni: any of them
    strays this far only 1 - confidence of the time)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / (2 * max(tests, 1)))
    variance = sum(float(np.var(v, ddof=1)) / len(v) for v in (values, other) if len(v) > 1)
    return z * math.sqrt(variance)


def describe(source: Source, source_rows: int) -> str:
    """Where a band came from, for the summary and messages."""
    if source == "unseen":
        return (
            f"bootstrap of {source_rows:,} rows the version never trained on (a regressor's "
            "realised figures: or of the window's own rows, where their spread is wider)"
        )
    return (
        "the window's own spread (bootstrap of its rows): the version carries no sample of "
        "unseen rows (published before servewatch kept one)"
    )


@dataclass(frozen=True)
class Labelled:
    """Per-row data a realised band is drawn from: class codes and probabilities (classifiers),
    or labels and predictions (regressors)."""

    codes: Codes | None = None
    proba: Floats | None = None
    y: Floats | None = None
    pred: Floats | None = None

    @property
    def rows(self) -> int:
        data = self.codes if self.codes is not None else self.y
        return 0 if data is None else len(data)


def from_reference(reference: pd.DataFrame, classes: list[str] | None) -> Labelled:
    """The reference sample's labelled rows (empty where it has no labels or probabilities)."""
    if LABEL_COL not in reference:
        return Labelled()
    if classes is None:
        return Labelled(
            y=pd.to_numeric(reference[LABEL_COL], errors="coerce").to_numpy(float),
            pred=pd.to_numeric(reference[PREDICTION_COL], errors="coerce").to_numpy(float),
        )
    columns = [f"{PROBA_PREFIX}{c}" for c in classes]
    if not all(c in reference for c in columns):
        return Labelled()
    return Labelled(
        codes=metric_contract.class_codes(reference[LABEL_COL], classes),
        proba=reference[columns].to_numpy(float),
    )


def _realised_spread(
    labelled: Labelled,
    rows: int,
    decision: tuple[float | None, int],
    confidence: float,
    test_rows: int | None,
) -> Spread | None:
    if rows <= 0:
        return None
    if labelled.codes is not None and labelled.proba is not None:
        return classification_spread(
            labelled.codes, labelled.proba, rows, confidence, decision, test_rows
        )
    if labelled.y is not None and labelled.pred is not None:
        return regression_spread(labelled.y, labelled.pred, rows, confidence, test_rows)
    return None


def performance_noise(
    *,
    unseen: bool,
    reference: Labelled,
    reference_proba: Floats | None,
    window: Labelled,
    window_proba: Floats | None,
    realised_rows: int,
    decision: tuple[float | None, int],
    confidence: float,
    test_rows: int | None,
    calibration: TopClassCalibration | None = None,
) -> NoiseSummary:
    """The bands of a run's realised and estimated figures: from the version's unseen reference
    rows when it has them (`unseen`), else from the window's own rows."""
    source: Source = "unseen" if unseen and reference.rows >= MIN_SOURCE_ROWS else "window"
    realised = _realised_spread(
        reference if source == "unseen" else window, realised_rows, decision, confidence, test_rows
    )
    if source == "unseen" and realised is not None and window.y is not None:
        # a regressor's window whose RMSE a few extreme errors decide (heavy tails, rarer in the
        # test rows than in traffic) is judged by its own spread when that is wider
        own = _realised_spread(window, realised_rows, decision, confidence, test_rows)
        if own is not None:
            widths = {k: max(v, own.widths.get(k, 0.0)) for k, v in realised.widths.items()}
            realised = Spread(widths, realised.rows, realised.source_rows)
    estimated: Spread | None = None
    proba = reference_proba if source == "unseen" else window_proba
    if window_proba is not None and proba is not None and len(window_proba):
        ref_rows = len(reference_proba) if reference_proba is not None else None
        estimated = estimate_spread(
            proba, len(window_proba), confidence, decision, calibration, ref_rows
        )
    sizes = [s.source_rows for s in (realised, estimated) if s is not None]
    return {
        "confidence": confidence,
        "source": source,
        "note": describe(source, max(sizes, default=0)),
        "realised": {"rows": realised.rows, "widths": realised.widths} if realised else None,
        "estimated": {"rows": estimated.rows, "widths": estimated.widths} if estimated else None,
    }
