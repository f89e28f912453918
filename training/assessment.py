"""Evaluate: the held-out test set, touched once, for the new model and the champion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd

from core import explain
from core import metrics as metric_contract
from core.ecosystem import load_model
from core.registry import MODEL_FILE, Registry
from training import data, evaluate, fairness
from training.errors import TrainingError
from training.fitting import Fitted
from training.prepare import Prepared, Progress
from training.selection import Selection
from training.threshold import Chosen


@dataclass(frozen=True)
class Assessment:
    """The test-set figures of a model that met its objective."""

    x_test: pd.DataFrame
    y_test: pd.Series
    predicted: npt.NDArray[np.generic]  # the model's predictions on x_test (labels or values)
    metrics: dict[str, float]
    baseline: dict[str, float]  # a trivial model on the same rows
    score: float  # metrics[objective metric]
    worst_slices: list[dict[str, Any]]
    importances: dict[str, float]  # permutation importance per input feature
    shap: dict[str, Any]  # mean |contribution| summary for the manifest
    contributions: explain.Explanation
    fairness: dict[str, Any]  # per sensitive attribute


class Champion(TypedDict, total=False):
    """The production version scored on the challenger's test rows (or why it could not be)."""

    version: int
    error: str  # set instead of the scores when the champion could not be scored
    metrics: dict[str, float]
    champion_score: float
    metric: str
    challenger_score: float


def assess(
    prepared: Prepared,
    fitted: Fitted,
    selection: Selection,
    say: Progress,
    chosen: Chosen | None = None,
) -> Assessment:
    """Score the model on the test set, its classes decided by `chosen` (None: argmax); raise
    TrainingError when the objective is not met."""
    config, task, metric = prepared.config, prepared.task, prepared.metric
    model, features = fitted.model, prepared.features
    say("evaluating on the held-out test set")
    x_test, y_test = prepared.splits.x_test[features], prepared.splits.y_test
    threshold = chosen.threshold if chosen is not None else None
    positive = chosen.positive if chosen is not None else 1
    test_metrics = evaluate.score_model(model, x_test, y_test, task, threshold, positive)
    baseline = evaluate.baseline_metrics(fitted.x_full, fitted.y_full, x_test, y_test, task)
    test_score = test_metrics[metric]
    judge = metric_contract.get(metric)
    if not judge.meets(test_score, config.objective.min_test_score):
        raise TrainingError(
            f"objective not met: test {metric} = {test_score:.4f}, required "
            f"{judge.comparison} {config.objective.min_test_score}; "
            "nothing was published"
        )
    predicted = evaluate.predict(model, x_test, task, threshold, positive)
    slices = evaluate.worst_slices(x_test, y_test, predicted, task, features)
    importances = evaluate.importance(model, x_test, y_test, selection.scoring, config.seed)
    say("explaining the model (contributions on the test set)")
    shap_summary, contributions = explain.global_summary(
        model, x_test, fitted.x_full, task=task, seed=config.seed
    )
    fair: dict[str, Any] = {}
    sens = config.fairness.sensitive
    if sens:
        classes = prepared.classes
        pos_class = classes[positive] if classes and len(classes) == 2 else None
        fair = fairness.fairness_report(
            prepared.splits.x_test[sens], y_test, predicted, task, pos_class
        )
    return Assessment(
        x_test=x_test,
        y_test=y_test,
        predicted=predicted,
        metrics=test_metrics,
        baseline=baseline,
        score=test_score,
        worst_slices=slices,
        importances=importances,
        shap=shap_summary,
        contributions=contributions,
        fairness=fair,
    )


def score_champion(
    registry: Registry, prepared: Prepared, assessment: Assessment
) -> Champion | None:
    """The production version scored on the same test rows, with its own feature schema; None
    when there is no production version."""
    name = prepared.config.name
    version = registry.alias_version(name, "production") if registry.versions(name) else None
    if version is None:
        return None
    x = prepared.frame.loc[assessment.x_test.index]
    champion = _score_version(
        registry, name, version, x, assessment.y_test, prepared.task, prepared.metric
    )
    champion["challenger_score"] = assessment.score
    return champion


def _score_version(
    registry: Registry,
    name: str,
    version: int,
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    metric: str,
) -> Champion:
    try:
        champ = registry.manifest(name, version)
        cols = {f.name: f.kind for f in champ.features}
        data.require_columns(x, list(cols), "champion feature")
        x = x[list(cols)].copy()
        for col, kind in cols.items():
            if kind == "numeric":
                x[col] = pd.to_numeric(x[col], errors="coerce")
            elif kind == "categorical":
                x[col] = data.as_text(x[col])
        old = load_model(registry.path(name, version) / MODEL_FILE)
        metrics = evaluate.score_model(old, x, y, task, champ.threshold, champ.positive_index)
    except Exception as exc:  # an incompatible champion is reported, never fatal
        return {"version": version, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "version": version,
        "metrics": metrics,
        "champion_score": metrics[metric],
        "metric": metric,
    }


def save_reports(
    folder: Path, manifest: dict[str, Any], prepared: Prepared, assessment: Assessment
) -> None:
    """The data-quality report, the plots (listed in the manifest's `plots`) into `folder`."""
    a = assessment
    (folder / "data_quality.json").write_text(json.dumps(prepared.report.to_dict(), indent=2))
    plots = evaluate.save_plots(
        folder, prepared.task, a.y_test, a.predicted, prepared.classes, a.importances
    )
    c = a.contributions
    plots.append(evaluate.save_contribution_plot(folder, c.features, c.contributions, c.method))
    manifest["plots"] = plots
