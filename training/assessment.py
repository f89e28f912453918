"""Evaluate: the held-out test set, touched once, for the new model and the champion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd

from core import explain
from core import metrics as metric_contract
from core.ecosystem import load_model
from core.registry import MODEL_FILE, Manifest, Registry
from training import data, evaluate, fairness, fingerprints
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


MIN_UNSEEN_ROWS = 100
"""The fewest test rows the champion never learnt from that a comparison is made on, when some of
the test rows were left out as seen (a smaller test set none of whose rows it saw is used whole)."""

Comparison = Literal["unseen_rows", "may_include_seen_rows", "too_few_unseen_rows"]


class Champion(TypedDict, total=False):
    """The production version scored on the challenger's test rows that it did not learn from
    (or why it could not be)."""

    version: int
    error: str  # set instead of the scores when the champion could not be scored
    metrics: dict[str, float]
    champion_score: float
    metric: str
    challenger_score: float  # on the same rows as champion_score
    comparison: Comparison
    rows: int  # the test rows both were scored on (or, too few: the unseen ones)
    seen_rows_left_out: int  # test rows the champion trained or validated on
    note: str


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
    registry: Registry,
    prepared: Prepared,
    assessment: Assessment,
    model: Any,
    chosen: Chosen | None,
    raw: pd.DataFrame,
) -> Champion | None:
    """The production version and `model` scored on the test rows the production version did
    not learn from (its row fingerprints say which; `raw` is the run's data as read), each with
    its own feature schema and decision; None when there is no production version. Too few such
    rows: no scores, the note says why (promotion then leaves the new version in staging)."""
    name = prepared.config.name
    version = registry.alias_version(name, "production") if registry.versions(name) else None
    if version is None:
        return None
    test = assessment.x_test.index
    seen = _seen_by(registry, name, version, raw.loc[test])
    comparison: Comparison
    if seen is None:
        rows, comparison = test, "may_include_seen_rows"
        note = f"v{version} has no row fingerprints for these rows (it was published before "
        note += "they were recorded, or imported): both scores may include rows it trained on"
    else:
        rows, comparison = test[~seen], "unseen_rows"
        note = f"{int(seen.sum())} test rows v{version} trained or validated on were left out"
        if seen.any() and len(rows) < MIN_UNSEEN_ROWS:
            return {
                "version": version,
                "metric": prepared.metric,
                "comparison": "too_few_unseen_rows",
                "rows": len(rows),
                "seen_rows_left_out": int(seen.sum()),
                "note": f"only {len(rows)} of the {len(test)} test rows are unseen by v{version} "
                f"(at least {MIN_UNSEEN_ROWS} are needed): not compared; judge it on labelled "
                "traffic (staging canary, servewatch retrain's recent window)",
            }
    x = prepared.frame.loc[rows]
    y = assessment.y_test.loc[rows]
    champion = _score_version(registry, name, version, x, y, prepared.task, prepared.metric)
    champion["comparison"] = comparison
    champion["rows"] = len(rows)
    champion["seen_rows_left_out"] = len(test) - len(rows)
    champion["note"] = note
    if len(rows) == len(test):
        champion["challenger_score"] = assessment.score
    else:
        decision = (chosen.threshold, chosen.positive) if chosen is not None else (None, 1)
        mine = evaluate.score_model(model, assessment.x_test.loc[rows], y, prepared.task, *decision)
        champion["challenger_score"] = mine[prepared.metric]
    return champion


def _seen_by(
    registry: Registry, name: str, version: int, raw_test: pd.DataFrame
) -> npt.NDArray[np.bool_] | None:
    """Which of the test rows (as read) `version` trained or validated on; None when it records
    no fingerprints or they are over columns these rows lack."""
    manifest = registry.manifest(name, version)
    prints = fingerprints.load(registry.path(name, version), manifest)
    if prints is None or any(c not in raw_test.columns for c in prints.columns):
        return None
    learned = prints.of(*fingerprints.learned(manifest))
    return np.isin(fingerprints.hashes(raw_test, prints.columns), learned)


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
    folder: Path, manifest: Manifest, prepared: Prepared, assessment: Assessment
) -> None:
    """The data-quality report, the plots (listed in the manifest's `plots`) into `folder`."""
    a = assessment
    (folder / "data_quality.json").write_text(json.dumps(prepared.report.to_dict(), indent=2))
    plots = evaluate.save_plots(
        folder, prepared.task, a.y_test, a.predicted, prepared.classes, a.importances
    )
    c = a.contributions
    plots.append(evaluate.save_contribution_plot(folder, c.features, c.contributions, c.method))
    manifest.plots = plots
