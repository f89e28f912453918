"""Fairness mitigation beyond re-weighting (resample, reductions, adversarial, postprocess), and the
side-by-side comparison with the unmitigated model for the manifest and model card."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from importlib.util import find_spec
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import has_fit_parameter

from core import labels
from core.fair import AdversarialClassifier, ReductionClassifier, ThresholdedClassifier
from core.registry import Manifest
from training import evaluate, fairness
from training.assessment import Assessment
from training.candidates import make_estimator
from training.errors import TrainingError
from training.fitting import Fitted
from training.pipeline import build_pipeline
from training.prepare import Prepared, Progress
from training.selection import Selection

BINARY_ONLY = {"reductions", "adversarial", "postprocess"}
"""fairlearn's reductions, adversarial debiasing and threshold optimizer take two classes."""


@dataclass(frozen=True)
class Mitigation:
    """What was done, and the same candidate without it (for the comparison)."""

    method: str
    constraint: str | None  # None for reweight and resample
    attribute: str  # the sensitive column mitigated for
    family: str  # the estimator the mitigation was applied to
    unmitigated: Any  # fitted on the same rows, without mitigation


def check(prepared: Prepared) -> None:
    """Refuse a mitigation the run cannot apply, before any fitting, naming the key and rule."""
    fair = prepared.config.fairness
    method = fair.mitigation
    if method == "none":
        return
    key = f"fairness.mitigation {method}"
    if not fair.sensitive:
        raise TrainingError(f"{key} needs fairness.sensitive columns")
    if method == "resample" and prepared.task != "classification":
        raise TrainingError(
            f"{key} needs a classification target (it balances (group, label) cells); "
            f"{prepared.target!r} is a regression target"
        )
    if method in BINARY_ONLY and prepared.n_classes != 2:
        shape = "regression" if prepared.task == "regression" else f"{prepared.n_classes} classes"
        raise TrainingError(
            f"{key} needs a binary classification target (fairlearn's method takes two "
            f"classes); {prepared.target!r} has {shape}: use reweight or resample"
        )
    if method == "postprocess" and fair.sensitive[0] not in prepared.features:
        raise TrainingError(
            f"{key} needs the sensitive attribute {fair.sensitive[0]!r} at prediction time: "
            "set fairness.include_in_model true (and keep the column in the features)"
        )
    if method == "adversarial":
        if find_spec("torch") is None:
            raise TrainingError(
                f"{key} needs PyTorch: pip install torch==2.13.0 'servewatch[deep]'"
            )
        if fair.constraint == "true_positive_rate_parity":
            raise TrainingError(
                f"{key} supports fairness.constraint demographic_parity or equalized_odds, "
                "not true_positive_rate_parity (use reductions or postprocess for it)"
            )


def resample_index(groups: pd.Series, y: pd.Series, seed: int) -> np.ndarray[Any, Any]:
    """Row positions drawn so that each (group, label) cell has the size it would have if group
    and label were independent (Kamiran-Calders uniform sampling; with replacement when a cell
    grows)."""
    g = groups.astype(str).to_numpy()
    yv = y.astype(str).to_numpy()
    n = len(yv)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray[Any, Any]] = []
    for gv in np.unique(g):
        for lv in np.unique(yv):
            cell = np.flatnonzero((g == gv) & (yv == lv))
            if not len(cell):
                continue
            want = int(round(np.mean(g == gv) * np.mean(yv == lv) * n))
            out.append(rng.choice(cell, size=max(1, want), replace=want > len(cell)))
    return np.sort(np.concatenate(out))


def apply(
    prepared: Prepared, selection: Selection, fitted: Fitted, say: Progress
) -> tuple[Fitted, Mitigation | None]:
    """The model with `fairness.mitigation` applied (fitted on train + validation), and what
    the comparison needs; `fitted` unchanged (and None) for `none`."""
    config, splits = prepared.config, prepared.splits
    fair = config.fairness
    method = fair.mitigation
    if method == "none":
        return fitted, None
    attribute = fair.sensitive[0]
    groups = pd.concat([splits.x_train[attribute], splits.x_val[attribute]])
    calibrate = fitted.calibration if fitted.calibration in ("sigmoid", "isotonic") else None

    def chosen() -> Any:
        return selection.pipeline(prepared, calibrate)

    say(f"fairness mitigation: {method} for {attribute!r}")
    with warnings.catch_warnings():  # reductions refit the estimator many times
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _apply(prepared, selection, fitted, chosen, attribute, groups)


def _apply(
    prepared: Prepared,
    selection: Selection,
    fitted: Fitted,
    chosen: Any,
    attribute: str,
    groups: pd.Series,
) -> tuple[Fitted, Mitigation]:
    config, task = prepared.config, prepared.task
    fair = config.fairness
    method = fair.mitigation
    x_full, y_full = fitted.x_full, fitted.y_full
    constraint: str | None = fair.constraint
    family = selection.family
    if method == "reweight":  # already applied by search and fit: refit without, to compare
        unmitigated = chosen().fit(x_full, y_full)
        return fitted, Mitigation(method, None, attribute, family, unmitigated)
    if method == "resample":
        idx = resample_index(groups, y_full, config.seed)
        model = chosen().fit(x_full.iloc[idx], y_full.iloc[idx])
        constraint = None
    elif method == "postprocess":
        model = _postprocess(prepared, fitted, chosen, attribute)
    elif method == "reductions":
        family, params = _weighted_family(selection, task)
        pre = {k[4:]: v for k, v in params.items() if k.startswith("pre_")}
        est = make_estimator(
            family,
            task,
            {k: v for k, v in params.items() if not k.startswith("pre_")},
            config.seed,
            selection.size,
        )
        model = build_pipeline(
            prepared.kinds,
            ReductionClassifier(est, fair.constraint),
            family=family,
            prep=config.preprocessing,
            scaler=str(pre.get("scaler", "standard")),
            interactions=bool(pre.get("interactions", False)),
            pca=pre.get("pca"),
            categories=str(pre.get("categories") or "ordinal"),
        )
        model.fit(x_full, y_full, model__sensitive_features=groups.to_numpy())
    else:  # adversarial: fairlearn's predictor network on the deep family's preprocessing
        family = "deep"
        model = build_pipeline(
            prepared.kinds,
            AdversarialClassifier(constraint=fair.constraint, random_state=config.seed),
            family="deep",
            prep=config.preprocessing,
        )
        model.fit(x_full, y_full, model__sensitive_features=groups.to_numpy())
    mitigated = replace(fitted, model=model, calibration=f"{fitted.calibration} ({method})")
    return mitigated, Mitigation(method, constraint, attribute, family, fitted.model)


def _postprocess(
    prepared: Prepared, fitted: Fitted, chosen: Any, attribute: str
) -> ThresholdedClassifier:
    """The chosen model fitted on the training rows, its thresholds per group fitted on the
    validation rows: thresholds fitted on rows the model learnt from (where its probabilities
    are near certain) barely move its test gap."""
    splits, features = prepared.splits, prepared.features
    base = fitted.on_train
    if base is None:
        base = chosen().fit(splits.x_train[features], splits.y_train)
    held_out = ThresholdedClassifier(base, attribute, prepared.config.fairness.constraint)
    return held_out.fit(splits.x_val[features], splits.y_val)


def _weighted_family(selection: Selection, task: str) -> tuple[str, dict[str, Any]]:
    """The best family whose estimator takes sample weights (ExponentiatedGradient refits it on
    weighted rows), with its best parameters; the chosen family when it does."""
    ranked = sorted(
        (r for r in selection.results if r.best is not None),
        key=lambda r: -(r.best.score if r.best else 0.0),
    )
    for result in ranked:
        if result.best and has_fit_parameter(
            make_estimator(result.family, task, {}, 0), "sample_weight"
        ):
            return result.family, result.best.params
    return "linear", {}


def _gaps(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {attr: {k: v for k, v in rep.items() if k != "by_group"} for attr, rep in report.items()}


def record(
    manifest: Manifest,
    prepared: Prepared,
    assessment: Assessment,
    mitigation: Mitigation,
    positive: int = 1,
) -> None:
    """Add `mitigation` to the manifest: the test score and fairness gaps of the model with the
    mitigation and without it, on the same test rows, of the same positive class (column
    `positive`, the decision's). A post-processed model's schema marks its sensitive attribute
    as required (it is read at prediction time)."""
    config, task, metric = prepared.config, prepared.task, prepared.metric
    x_test, y_test = assessment.x_test, assessment.y_test
    sens = config.fairness.sensitive
    classes = prepared.classes
    pos_class = classes[positive] if classes and len(classes) == 2 else None
    plain = mitigation.unmitigated
    plain_metrics = evaluate.score_model(plain, x_test, y_test, task, None, positive)
    plain_fair = fairness.fairness_report(
        prepared.splits.x_test[sens], y_test, plain.predict(x_test), task, pos_class
    )
    manifest.mitigation = {
        "method": mitigation.method,
        "constraint": mitigation.constraint,
        "attribute": mitigation.attribute,
        "family": mitigation.family,
        "metric": metric,
        "positive_class": (
            None if pos_class is None else labels.to_native(pos_class, prepared.label_type)
        ),
        "none": {"test_score": plain_metrics[metric], "fairness": _gaps(plain_fair)},
        mitigation.method: {
            "test_score": assessment.score,
            "fairness": _gaps(assessment.fairness),
        },
    }
    if mitigation.method == "postprocess":
        for feature in manifest.features:
            if feature.name == mitigation.attribute:
                feature.nullable = False
                feature.required_for = "postprocess"
