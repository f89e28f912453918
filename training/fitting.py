"""Fit and calibrate: the chosen candidate fitted on train, calibrated on validation, refitted."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    on_train: Pipeline | None = None  # the same model fitted on train only (validation checks)
    ensemble: dict[str, Any] | None = None  # the manifest's `model.ensemble` (training.ensemble)


@dataclass(frozen=True)
class TrainFit:
    """A candidate fitted on the training rows, with the calibration validation chose."""

    model: Pipeline
    calibration: str
    pipeline: Callable[[str | None], Pipeline]  # the unfitted candidate, calibrated or not

    @property
    def final_calibration(self) -> str | None:
        """What the final fit wraps the estimator in (the svm's sigmoid is built in)."""
        return self.calibration if self.calibration in ("sigmoid", "isotonic") else None


def fit_on_train(
    prepared: Prepared,
    family: str,
    params: dict[str, Any],
    size: Any,
    say: Progress,
    calibrate: bool = True,
) -> TrainFit:
    """Fit a candidate on train and keep the calibration with the lowest validation Brier
    score (`auto`), as every published model is calibrated; not `calibrate`: no calibration
    tried (a budgeted run's shortfall, training/shortfall.py)."""
    config, task, splits = prepared.config, prepared.task, prepared.splits
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
        fitted = {"none": fit_rows(pipeline(), x_tr, y_tr, weights_tr)}
        if family == "svm" and task == "classification":
            calibration = "sigmoid (built into the svm family)"
            fitted[calibration] = fitted["none"]
        elif task == "classification" and config.calibration != "none" and calibrate:
            options = (
                ["sigmoid", "isotonic"] if config.calibration == "auto" else [config.calibration]
            )
            briers = {"none": _brier(fitted["none"], x_val, y_val)}
            for method in options:
                fitted[method] = fit_rows(pipeline(method), x_tr, y_tr, weights_tr)
                briers[method] = _brier(fitted[method], x_val, y_val)
            if config.calibration == "auto":
                calibration = min(briers, key=lambda k: (briers[k], k != "none"))
            else:
                calibration = config.calibration
            say(f"calibration of {family}: {calibration} (validation Brier {briers})")
    return TrainFit(fitted[calibration], calibration, pipeline)


def fit_and_calibrate(
    prepared: Prepared, selection: Selection, say: Progress, calibrate: bool = True
) -> Fitted:
    """Fit on train, keep the calibration with the lowest validation Brier score (`auto`; none
    tried unless `calibrate`), then refit on train + validation."""
    config, task, splits = prepared.config, prepared.task, prepared.splits
    features = prepared.features
    sens = config.fairness.sensitive
    chosen = fit_on_train(
        prepared, selection.family, selection.best.params, selection.size, say, calibrate
    )
    x_tr, y_tr = splits.x_train[features], splits.y_train
    x_val, y_val = splits.x_val[features], splits.y_val
    val_metrics = evaluate.score_model(chosen.model, x_val, y_val, task)
    val_proba = (
        np.asarray(chosen.model.predict_proba(x_val), dtype=float)
        if task == "classification"
        else None
    )
    x_full = pd.concat([x_tr, x_val])
    y_full = pd.concat([y_tr, y_val])
    w_full = None
    if config.fairness.mitigation == "reweight":
        w_full = fairness.reweighting(pd.concat([splits.x_train, splits.x_val])[sens[0]], y_full)
    say("final fit on train + validation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = fit_rows(chosen.pipeline(chosen.final_calibration), x_full, y_full, w_full)
    return Fitted(
        model, chosen.calibration, val_metrics, x_full, y_full, val_proba, on_train=chosen.model
    )


def fit_rows(
    pipe: Pipeline, x: pd.DataFrame, y: pd.Series, weights: npt.NDArray[np.float64] | None
) -> Pipeline:
    """`pipe` fitted on (x, y), with `weights` as its estimator's sample weights where it takes
    them."""
    est = pipe.named_steps["model"]
    inner = getattr(est, "estimator", est)
    if weights is not None and has_fit_parameter(inner, "sample_weight"):
        return pipe.fit(x, y, model__sample_weight=weights)
    return pipe.fit(x, y)


def _brier(model: Pipeline, x: pd.DataFrame, y: pd.Series) -> float:
    proba = model.predict_proba(x)
    return metric_contract.classification_metrics(y, proba, list(model.classes_))["brier"]
