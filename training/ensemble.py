"""Ensembles: soft voting or stacking of the best candidates, published only when it beats the
best single model on validation beyond noise (a bootstrap over the validation rows) and its
one-row prediction fits `ensemble.max_row_ms` (ensembles serve on scikit-learn)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import (
    StackingClassifier,
    StackingRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from core import metrics as metric_contract
from training.fitting import Fitted, TrainFit, fit_on_train
from training.prepare import Prepared, Progress
from training.search import FamilyResult, make_cv
from training.selection import Selection

Outputs = np.ndarray[Any, Any]  # class probabilities (classification) or values (regression)
Gains = np.ndarray[Any, Any]


def metric_value(
    metric: str, task: str, y: pd.Series, out: Outputs, classes: list[Any] | None
) -> float:
    """The objective metric of outputs `out` on labels `y`: the same figure as core.metrics
    computes, only that one (the bootstrap computes it hundreds of times)."""
    if task == "regression":
        err = np.asarray(y, dtype=float) - out
        if metric == "r2":
            yv = np.asarray(y, dtype=float)
            total = float(np.sum((yv - yv.mean()) ** 2))
            return 1.0 - float(np.sum(err**2)) / total if total else float("nan")
        return float(np.sqrt(np.mean(err**2)) if metric == "rmse" else np.mean(np.abs(err)))
    codes = metric_contract.class_codes(y, classes or [])
    known = codes >= 0
    codes, proba = codes[known], out[known]
    k = proba.shape[1]
    if metric == "accuracy":
        return float(np.mean(proba.argmax(axis=1) == codes))
    if metric == "brier":
        onehot = np.eye(k)[codes]
        if k == 2:
            return float(np.mean((proba[:, 1] - onehot[:, 1]) ** 2))
        return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    if metric == "log_loss":
        picked = np.clip(proba[np.arange(len(codes)), codes], 1e-15, 1.0)
        return float(-np.mean(np.log(picked)))
    if metric == "roc_auc":
        present = np.unique(codes)
        if len(present) < k:
            return float("nan")
        if k == 2:
            return float(roc_auc_score(codes, proba[:, 1]))
        return float(roc_auc_score(codes, proba, multi_class="ovr", labels=list(range(k))))
    return metric_contract.classification_metrics(y, out, classes or [])[metric]


def bootstrap_gain(
    metric: str,
    task: str,
    y: pd.Series,
    single: Outputs,
    ensemble: Outputs,
    classes: list[Any] | None,
    *,
    resamples: int,
    seed: int,
) -> Gains:
    """How much better the ensemble scores than the single model (positive: better; a share of
    the single model's score for rmse and mae) on each bootstrap resample of the rows."""
    judge = metric_contract.get(metric)
    rng = np.random.default_rng(seed)
    yv = y.reset_index(drop=True)
    gains = []
    for _ in range(resamples):
        idx = rng.integers(0, len(yv), len(yv))
        a = metric_value(metric, task, yv.iloc[idx], single[idx], classes)
        b = metric_value(metric, task, yv.iloc[idx], ensemble[idx], classes)
        gains.append(-judge.worse_by(a, b))
    return np.asarray(gains, dtype=float)


def decide(gains: Gains, confidence: float) -> tuple[bool, float]:
    """(wins, lower bound): the ensemble wins when the (1 - confidence) quantile of its gains
    over the bootstrap resamples is above zero."""
    finite = gains[np.isfinite(gains)]
    if len(finite) == 0:
        return False, float("nan")
    lower = float(np.quantile(finite, 1.0 - confidence))
    return lower > 0.0, lower


def _outputs(model: Any, x: pd.DataFrame, task: str) -> Outputs:
    if task == "classification":
        return np.asarray(model.predict_proba(x), dtype=float)
    return np.asarray(model.predict(x), dtype=float)


def one_row_ms(members: list[Any], x: pd.DataFrame, task: str, calls: int = 5) -> float:
    """Milliseconds a one-row prediction of every member takes, added up (median of `calls`
    after a first call): what serving an ensemble of them costs per single-row request."""
    row = x.iloc[:1]
    total = 0.0
    for model in members:
        _outputs(model, row, task)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            _outputs(model, row, task)
            times.append(time.perf_counter() - start)
        total += float(np.median(times))
    return total * 1000


def _combiner(method: str, task: str, members: list[tuple[str, Any]], cv: Any) -> Any:
    clf = task == "classification"
    if method == "voting":
        return VotingClassifier(members, voting="soft") if clf else VotingRegressor(members)
    if clf:
        return StackingClassifier(members, final_estimator=LogisticRegression(max_iter=1000), cv=cv)
    return StackingRegressor(members, final_estimator=RidgeCV(), cv=cv)


def consider(prepared: Prepared, selection: Selection, fitted: Fitted, say: Progress) -> Fitted:
    """`fitted` (the best single model), or an ensemble of the best families refitted on train +
    validation when one beats it on validation beyond noise. The outcome, either way, is in
    the returned Fitted's `ensemble` (the manifest's `model.ensemble`)."""
    config, task = prepared.config, prepared.task
    cfg = config.ensemble
    if not cfg.enabled:
        return fitted
    if config.fairness.mitigation != "none" or fitted.on_train is None:
        return _with(fitted, {"published": False, "reason": "not tried with a fairness mitigation"})
    ranked = sorted(
        (r for r in selection.results if r.best is not None),
        key=lambda r: -r.best.score,  # type: ignore[union-attr]
    )[: cfg.size]
    if len(ranked) < 2:
        return _with(fitted, {"published": False, "reason": "fewer than two families fitted"})
    fits = _member_fits(prepared, selection, fitted, ranked, say)
    x_val = prepared.splits.x_val[prepared.features]
    single = _outputs(fitted.on_train, x_val, task)
    candidates = _candidate_outputs(prepared, fits)
    classes = list(fitted.on_train.classes_) if task == "classification" else None
    info, best = _judged(prepared, fits, single, candidates, classes)
    say(f"ensemble of {info['members']} on validation {prepared.metric}: {info['validation']}")
    if not candidates:
        info.update(published=False, reason="stacking alone was asked for, on time-ordered data")
        return _with(fitted, info)
    if best is None:
        info.update(published=False, reason="no ensemble beat the best single model beyond noise")
        return _with(fitted, info)
    row_ms = one_row_ms([t.model for _, t in fits], x_val, task)
    info["row_ms"] = round(row_ms, 2)
    if cfg.max_row_ms is not None and row_ms > cfg.max_row_ms:
        info.update(
            published=False,
            reason=f"{best} beat the best single model, but a one-row prediction of its members "
            f"takes {row_ms:.1f} ms on scikit-learn, over ensemble.max_row_ms {cfg.max_row_ms:g} "
            "(ensemble.max_row_ms: null publishes it)",
        )
        say(f"ensemble not published: {info['reason']}")
        return _with(fitted, info)
    info.update(published=True, method=best, reason=f"{best} beat the best single model")
    info["params"] = {f: selection_params(selection, f) for f, _ in fits}
    return _final(prepared, fitted, fits, best, (candidates[best], classes), info, say)


def _member_fits(
    prepared: Prepared,
    selection: Selection,
    fitted: Fitted,
    ranked: list[FamilyResult],
    say: Progress,
) -> list[tuple[str, TrainFit]]:
    """Each ranked family fitted on the training rows (the chosen family's fit reused)."""

    def chosen_pipeline(calibrate: str | None) -> Pipeline:
        return selection.pipeline(prepared, calibrate)

    fits: list[tuple[str, TrainFit]] = []
    for r in ranked:
        if r.family == selection.family:
            fits.append((r.family, TrainFit(fitted.on_train, fitted.calibration, chosen_pipeline)))
        else:
            assert r.best is not None
            fits.append(
                (r.family, fit_on_train(prepared, r.family, r.best.params, selection.size, say))
            )
    return fits


def _candidate_outputs(prepared: Prepared, fits: list[tuple[str, TrainFit]]) -> dict[str, Outputs]:
    """Each configured ensemble method's outputs on the validation rows (stacking only on data
    that is not time-ordered)."""
    config, task = prepared.config, prepared.task
    splits, features = prepared.splits, prepared.features
    x_val = splits.x_val[features]
    candidates: dict[str, Outputs] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if "voting" in config.ensemble.methods:
            candidates["voting"] = np.mean(
                [_outputs(t.model, x_val, task) for _, t in fits], axis=0
            )
        if "stacking" in config.ensemble.methods and not config.time_column:
            # a stack learns its weights on out-of-fold outputs, which needs unordered folds
            cv = make_cv(
                task, config.split.cv_folds, False, config.seed, config.split.keep_copies_together
            )
            stack = _combiner("stacking", task, [(f, t.pipeline(None)) for f, t in fits], cv)
            fit = stack.fit(splits.x_train[features], splits.y_train)
            candidates["stacking"] = _outputs(fit, x_val, task)
    return candidates


def _judged(
    prepared: Prepared,
    fits: list[tuple[str, TrainFit]],
    single: Outputs,
    candidates: dict[str, Outputs],
    classes: list[Any] | None,
) -> tuple[dict[str, Any], str | None]:
    """The ensemble record's validation scores and bootstrap lower gains, and the best method
    that beats the single model beyond noise (None: none does)."""
    config, task, metric = prepared.config, prepared.task, prepared.metric
    cfg, y_val = config.ensemble, prepared.splits.y_val
    scores = {"single": metric_value(metric, task, y_val, single, classes)}
    info: dict[str, Any] = {
        "members": [f for f, _ in fits],
        "metric": metric,
        "confidence": cfg.confidence,
        "validation": scores,
        "lower_gain": {},
    }
    winners: list[str] = []
    for method, out in candidates.items():
        scores[method] = metric_value(metric, task, y_val, out, classes)
        gains = bootstrap_gain(
            metric, task, y_val, single, out, classes, resamples=cfg.bootstrap, seed=config.seed
        )
        wins, lower = decide(gains, cfg.confidence)
        info["lower_gain"][method] = lower
        if wins:
            winners.append(method)
    if not winners:
        return info, None
    judge, best = metric_contract.get(metric), winners[0]
    for method in winners[1:]:
        if judge.better(scores[method], scores[best]):
            best = method
    return info, best


def _final(
    prepared: Prepared,
    fitted: Fitted,
    fits: list[tuple[str, TrainFit]],
    best: str,
    judged: tuple[Outputs, list[Any] | None],
    info: dict[str, Any],
    say: Progress,
) -> Fitted:
    """The `best` ensemble fitted on train + validation, with its validation figures (from
    `judged`: its validation outputs and the classes) and calibration."""
    out, classes = judged
    config, task = prepared.config, prepared.task
    members = [(f, t.pipeline(t.final_calibration if best == "voting" else None)) for f, t in fits]
    cv = make_cv(task, config.split.cv_folds, False, config.seed, config.split.keep_copies_together)
    say(f"final fit of the {best} ensemble on train + validation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = Pipeline([("model", _combiner(best, task, members, cv))])
        model.fit(fitted.x_full, fitted.y_full)
    y_val = prepared.splits.y_val
    validation = (
        metric_contract.classification_metrics(y_val, out, classes or [])
        if task == "classification"
        else metric_contract.regression_metrics(y_val, out)
    )
    calibration = (
        "each member calibrated on validation ("
        + ", ".join(f"{f}: {t.calibration}" for f, t in fits)
        + ")"
        if best == "voting"
        else "stacking: a logistic regression over the members' out-of-fold probabilities"
        if task == "classification"
        else "none"
    )
    return Fitted(
        model,
        calibration,
        validation,
        fitted.x_full,
        fitted.y_full,
        np.asarray(out, dtype=float) if task == "classification" else None,
        on_train=None,
        ensemble=info,
    )


def skipped(fitted: Fitted, reason: str) -> Fitted:
    """`fitted` with the ensemble step's record when it did not run (`reason`)."""
    return _with(fitted, {"published": False, "reason": reason})


def selection_params(selection: Selection, family: str) -> dict[str, Any]:
    """The best hyperparameters the search found for `family`."""
    for r in selection.results:
        if r.family == family and r.best is not None:
            return r.best.params
    return {}


def _with(fitted: Fitted, info: dict[str, Any]) -> Fitted:
    return Fitted(
        fitted.model,
        fitted.calibration,
        fitted.validation,
        fitted.x_full,
        fitted.y_full,
        fitted.validation_proba,
        on_train=fitted.on_train,
        ensemble=info,
    )
