"""run_drift(): the one place that imports Evidently; returns a small typed result of our own.

Evidently's API is still moving (0.7 rewrote it), so nothing else in servewatch touches it. The HTML
report it writes is one self-contained page (Evidently's script and font inlined, nothing fetched):
data drift, then, when the window has labels, Evidently's classification or regression
performance report against the reference's labelled rows, then a data summary of the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

TARGET = "target"
PREDICTION = "prediction"


@dataclass(frozen=True)
class Labelled:
    """Labelled rows of the window and of the reference, for Evidently's performance report.

    Both frames hold `target` and `prediction` (class text for classifiers, floats for
    regressors) and, for classifiers with probabilities, one column per class named by its text.
    `prediction` holds the classes as served: decided by the version's threshold when it has
    one (`threshold`, for the class `positive`; the last of `classes` when None).
    """

    task: Literal["classification", "regression"]
    current: pd.DataFrame
    reference: pd.DataFrame
    classes: list[str] | None = None
    probabilities: bool = False
    positive: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    columns: dict[str, ColumnDrift] = field(default_factory=dict)
    drifted_share: float = 0.0
    drifted_count: int = 0
    evidently_json: dict[str, Any] = field(default_factory=dict)
    performance_json: dict[str, Any] | None = None
    """Evidently's JSON of the performance preset, when the report has that section."""
    performance_error: str | None = None
    """Why the performance section is missing although labelled rows were given."""


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    method: str | None = None,
    html_path: Path | None = None,
    labelled: Labelled | None = None,
) -> DriftResult:
    """Column drift of `current` against `reference` with Evidently's DataDriftPreset.

    `method` is any Evidently stat test name (e.g. "psi", "ks", "wasserstein"); None lets
    Evidently pick per column by type and size. The HTML report goes to `html_path` if given,
    with the performance section when `labelled` is given and the window's data summary.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    columns = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    cur = Dataset.from_pandas(current[columns], data_definition=definition)
    preset = DataDriftPreset(method=method) if method else DataDriftPreset()
    snapshot = Report([preset], include_tests=True).run(cur, ref)
    data = snapshot.dict()
    result = DriftResult(evidently_json=data)
    if html_path is not None:
        sections: list[tuple[str, Any]] = [("Data drift", snapshot)]
        if labelled is not None:
            try:
                title, perf = _performance_section(labelled)
                result.performance_json = perf.dict()
                sections.append((title, perf))
            except Exception as exc:  # a window Evidently cannot score keeps its drift report
                result.performance_error = f"{type(exc).__name__}: {exc}"[:300]
                sections.append(("Performance (labelled rows)", result.performance_error))
        summary = Report([DataSummaryPreset(columns=columns)]).run(cur, ref)
        sections.append(("Data summary of the window", summary))
        html_path.write_text(_page(sections), encoding="utf-8")
    verdicts = {
        t["metric_config"]["metric_id"]: t["status"] != "SUCCESS"
        for t in data.get("tests", [])
        if t.get("metric_config", {}).get("params", {}).get("type", "").endswith("ValueDrift")
    }
    for m in data["metrics"]:
        cfg = m.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("ValueDrift"):
            col = cfg["column"]
            result.columns[col] = ColumnDrift(
                column=col,
                method=str(cfg.get("method")),
                score=float(m["value"]),
                threshold=float(cfg.get("threshold") or 0.0),
                drifted=bool(verdicts.get(m["id"], False)),
            )
        elif kind.endswith("DriftedColumnsCount"):
            result.drifted_count = int(m["value"]["count"])
            result.drifted_share = float(m["value"]["share"])
    return result


def _performance_section(labelled: Labelled) -> tuple[str, Any]:
    """Evidently's classification or regression preset on the labelled rows of both sides."""
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
        Report,
    )
    from evidently.presets import ClassificationPreset, RegressionPreset

    task: Any
    if labelled.task == "regression":
        task = Regression(target=TARGET, prediction=PREDICTION)
        definition = DataDefinition(numerical_columns=[TARGET, PREDICTION], regression=[task])
        title, preset = "Regression performance (labelled rows)", RegressionPreset()
    else:
        classes = labelled.classes or []
        positive = labelled.positive or (classes[-1] if classes else None)
        if len(classes) == 2:
            task = BinaryClassification(
                target=TARGET,
                prediction_labels=PREDICTION,
                prediction_probas=positive if labelled.probabilities else None,
                pos_label=positive,
            )
        else:
            task = MulticlassClassification(
                target=TARGET,
                prediction_labels=PREDICTION,
                prediction_probas=list(classes) if labelled.probabilities else None,
            )
        probas = list(classes) if labelled.probabilities else []
        definition = DataDefinition(
            categorical_columns=[TARGET, PREDICTION],
            numerical_columns=probas,
            classification=[task],
        )
        # The served classes are passed as `prediction`; with probabilities Evidently decides
        # labels itself at 0.5 unless told the version's threshold.
        preset = ClassificationPreset(probas_threshold=labelled.threshold)
        title = "Classification performance (labelled rows)"
    cur = Dataset.from_pandas(labelled.current, data_definition=definition)
    ref = Dataset.from_pandas(labelled.reference, data_definition=definition)
    return title, Report([preset]).run(cur, ref)


def _page(sections: list[tuple[str, Any]]) -> str:
    """One standalone page of several snapshots' widgets, each section under its title (a
    section given as text instead of a snapshot says why it is missing).

    Evidently's standalone template inlines its script bundle and icon font: the page fetches
    nothing, so it opens without a network (checked in a headless browser by the tests).
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget, text_widget

    widgets = []
    for title, snapshot in sections:
        if isinstance(snapshot, str):
            widgets.append(group_widget(title=title, widgets=[text_widget(text=snapshot)]))
            continue
        model = snapshot.to_snapshot_model()
        widgets.append(group_widget(title=title, widgets=list(model.widgets)))
        widgets.extend(model.tests_widgets)
    return str(render_widgets(widgets, as_iframe=False))
