"""Fit and calibrate: the chosen candidate fitted on train, calibrated on validation, refitted."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from core import metrics as metric_contract
from training import evaluate, fairness
from training.prepare import Prepared, Progress
from training.selection import Selection, candidate_pipeline


@dataclass(frozen=True)
class Fitted:
    """The final model, fitted on train + validation, and how it was calibrated."""

    model: Pipeline
    calibration: str  # none, sigmoid, isotonic, or the svm's built-in sigmoid
    validation: dict[str, float]  # every metric of the task on the validation rows
    x_full: pd.DataFrame  # train + validation: the rows the final model learnt from
    y_full: pd.Series
    validation_proba: npt.NDArray[np.float64] | None = None
    """Classifiers: the validation rows' probabilities of the chosen calibration fitted on train
    (the decision threshold is chosen on them, training/threshold.py)."""


def fit_and_calibrate(prepared: Prepared, selection: Selection, say: Progress) -> Fitted:
    """Fit on train, keep the calibration with the lowest validation Brier score (`auto`), then
    refit on train + validation."""
    config, task, splits = prepared.config, prepared.task, prepared.splits
    family, params, size = selection.family, selection.best.params, selection.size
    features = prepared.features
    sens = config.fairness.sensitive
    reweight = config.fairness.mitigation == "reweight"
    x_tr, y_tr = splits.x_train[features], splits.y_train
    x_val, y_val = splits.x_val[features], splits.y_val
    weights_tr = fairness.reweighting(splits.x_train[sens[0]], y_tr) if reweight else None

    def pipeline(calibrate: str | None = None) -> Pipeline:
        return candidate_pipeline(
            prepared.kinds, family, params, task, config, calibrate, size=size
        )

    calibration = "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = {"none": _fit(pipeline(), x_tr, y_tr, weights_tr)}
        if family == "svm" and task == "classification":
            calibration = "sigmoid (built into the svm family)"
            fitted[calibration] = fitted["none"]
        elif task == "classification" and config.calibration != "none":
            options = (
                ["sigmoid", "isotonic"] if config.calibration == "auto" else [config.calibration]
            )
            briers = {"none": _brier(fitted["none"], x_val, y_val)}
            for method in options:
                fitted[method] = _fit(pipeline(method), x_tr, y_tr, weights_tr)
                briers[method] = _brier(fitted[method], x_val, y_val)
            if config.calibration == "auto":
                calibration = min(briers, key=lambda k: (briers[k], k != "none"))
            else:
                calibration = config.calibration
            say(f"calibration: {calibration} (validation Brier {briers})")
        val_metrics = evaluate.score_model(fitted[calibration], x_val, y_val, task)
        val_proba = (
            np.asarray(fitted[calibration].predict_proba(x_val), dtype=float)
            if task == "classification"
            else None
        )
        x_full = pd.concat([x_tr, x_val])
        y_full = pd.concat([y_tr, y_val])
        w_full = None
        if reweight:
            w_full = fairness.reweighting(
                pd.concat([splits.x_train, splits.x_val])[sens[0]], y_full
            )
        say("final fit on train + validation")
        model = _fit(
            pipeline(calibration if calibration in ("sigmoid", "isotonic") else None),
            x_full,
            y_full,
            w_full,
        )
    return Fitted(model, calibration, val_metrics, x_full, y_full, val_proba)


def _fit(
    pipe: Pipeline, x: pd.DataFrame, y: pd.Series, weights: npt.NDArray[np.float64] | None
) -> Pipeline:
    est = pipe.named_steps["model"]
    inner = getattr(est, "estimator", est)
    if weights is not None and has_fit_parameter(inner, "sample_weight"):
        return pipe.fit(x, y, model__sample_weight=weights)
    return pipe.fit(x, y)


def _brier(model: Pipeline, x: pd.DataFrame, y: pd.Series) -> float:
    proba = model.predict_proba(x)
    return metric_contract.classification_metrics(y, proba, list(model.classes_))["brier"]
