"""run_drift(): Evidently's reports of a run; returns a small typed result of our own.

Evidently's API is still moving (0.7 rewrote it), so only this module and monitoring/workspace.py
(the runs' snapshots in an Evidently workspace) touch it. The HTML
report it writes is one self-contained page (Evidently's script and font inlined, nothing fetched):
data drift, the performance figures and explanation drift beside their noise bands, then, when
the window has labels, Evidently's classification or regression
performance report against the reference's labelled rows, then a data summary of the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from monitoring.bands import Table

TARGET = "target"
PREDICTION = "prediction"

FALSE_ALARM = 0.01
"""Default chance, per run, that healthy traffic flags any column as drifted."""
KS = "ks"
POOLED_CHI2 = "servewatch_chi2"
"""Our stat test registered with Evidently: chi-square on both samples, rare categories pooled."""
ALL_MISSING = "all_missing"
"""The method of a column with no value on one side (not testable; drifted)."""
FEW_VALUES = 10
"""A numeric column with at most this many distinct reference values is tested as categories."""
MIN_EXPECTED = 5
"""Smallest expected count of a chi-square cell; rarer categories are pooled."""


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
    false_alarm: float = FALSE_ALARM,
    html_path: Path | None = None,
    labelled: Labelled | None = None,
    bands: list[Table] | None = None,
) -> DriftResult:
    """Column drift of `current` against `reference`, reported by Evidently's DataDriftPreset.

    By default each column gets a two-sample p-value test chosen for its type (`choose_test`),
    and every column is judged at one Benjamini-Hochberg threshold over all the columns, so that
    on healthy traffic the run flags any column at all with probability at most `false_alarm`.
    `method` (any Evidently stat test name: "psi", "ks", "wasserstein", ...) replaces that for
    every column at the test's own default threshold, with no stated false-alarm rate.

    A column with no value on one side (a feature that arrives 100% missing) cannot be tested:
    it is reported as drifted (`all_missing`, p = 0) and left out of Evidently's preset, which
    refuses an empty column. The HTML report goes to `html_path` if given, with `bands` (the
    figures beside their noise bands), the performance section when `labelled` is given and the
    window's data summary; beside it, the same Evidently sections as one snapshot
    (`monitoring.workspace.SNAPSHOT_FILE`) for the run's workspace.
    """
    from evidently import DataDefinition, Dataset, Report

    _register()
    columns = [*numeric, *categorical]
    empty = {c: _empty(reference[c]) or _empty(current[c]) for c in columns}
    tested = [c for c in columns if not empty[c]]
    result = DriftResult()
    plan = {c: choose_test(reference[c], c in numeric) for c in tested}
    pvalues = {c: p_value(reference[c], current[c], plan[c]) for c in tested}
    for c in columns:
        if empty[c]:  # one side has no value at all; both: nothing moved
            pvalues[c] = 1.0 if _empty(reference[c]) and _empty(current[c]) else 0.0
    cutoff = bh_threshold(list(pvalues.values()), false_alarm)
    for c in columns:
        if empty[c]:
            result.columns[c] = ColumnDrift(c, ALL_MISSING, pvalues[c], cutoff, pvalues[c] == 0.0)
    definition = DataDefinition(
        numerical_columns=[c for c in numeric if c in tested],
        categorical_columns=[c for c in categorical if c in tested],
    )
    ref = Dataset.from_pandas(reference[tested], data_definition=definition)
    cur = Dataset.from_pandas(current[tested], data_definition=definition)
    preset = _preset(tested, plan, cutoff, method)
    data: dict[str, Any] = {}
    snapshot = None
    if tested:
        snapshot = Report([preset], include_tests=True).run(cur, ref)
        data = snapshot.dict()
    result.evidently_json = data
    if html_path is not None:
        sections: list[tuple[str, Any]] = []
        if snapshot is not None:
            sections.append(("Data drift", snapshot))
        sections += [(t.title, t) for t in bands or []]
        if len(tested) < len(columns):
            missing = ", ".join(c for c in columns if empty[c])
            sections.append(
                ("Columns with no value", f"not tested (no value on one side): {missing}")
            )
        if labelled is not None:
            sections.append(_performance_part(labelled, result))
        _write_report(html_path, sections, reference, current, numeric, categorical)
    _read_columns(data, result)
    result.columns = {c: result.columns[c] for c in columns if c in result.columns}
    drifted = [c for c, d in result.columns.items() if d.drifted]
    result.drifted_count = len(drifted)
    result.drifted_share = len(drifted) / max(1, len(columns))
    return result


def _preset(tested: list[str], plan: dict[str, str], cutoff: float, method: str | None) -> Any:
    """Evidently's drift preset: `method` for every column at its own threshold, else each
    column's planned test at the one Benjamini-Hochberg `cutoff`."""
    from evidently.presets import DataDriftPreset

    if method:
        return DataDriftPreset(columns=tested, method=method)
    return DataDriftPreset(
        columns=tested,
        per_column_method=dict(plan),
        per_column_threshold=dict.fromkeys(tested, cutoff),
    )


def _performance_part(labelled: Labelled, result: DriftResult) -> tuple[str, Any]:
    """The report's performance section (its JSON or the reason it has none kept in `result`)."""
    one_class = labelled.task == "classification" and labelled.current[TARGET].nunique() < 2
    if one_class:
        only = labelled.current[TARGET].iloc[0] if len(labelled.current) else None
        result.performance_error = (
            f"The window's {len(labelled.current)} labelled rows all hold one class "
            f"({only!r}): Evidently's classification report needs two. The metrics these "
            "labels define (accuracy among them) are in the run's summary, which names the "
            "ones they do not define (performance.undefined)."
        )
        return ("Performance (labelled rows)", result.performance_error)
    try:
        title, perf = _performance_section(labelled)
        result.performance_json = perf.dict()
        return (title, perf)
    except Exception as exc:  # a window Evidently cannot score keeps its drift report
        result.performance_error = f"{type(exc).__name__}: {exc}"[:300]
        return ("Performance (labelled rows)", result.performance_error)


def _write_report(
    html_path: Path,
    sections: list[tuple[str, Any]],
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> None:
    """The HTML report with the window's data summary last, and its Evidently snapshot beside."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    from monitoring.workspace import SNAPSHOT_FILE, write_parts

    columns = [*numeric, *categorical]
    every = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    summary = Report([DataSummaryPreset(columns=columns)]).run(
        Dataset.from_pandas(current[columns], data_definition=every),
        Dataset.from_pandas(reference[columns], data_definition=every),
    )
    sections.append(("Data summary of the window", summary))
    html_path.write_text(_page(sections), encoding="utf-8")
    # Evidently's own sections only: a note (text) or servewatch's band tables are not
    # snapshots (a table here made the merge fail, and the run's snapshot lost them all)
    parts = [s for _, s in sections if not isinstance(s, (str, Table))]
    write_parts(html_path.with_name(SNAPSHOT_FILE), parts)


def _read_columns(data: dict[str, Any], result: DriftResult) -> None:
    """Each tested column's drift as Evidently's report judged it, into `result.columns`."""
    verdicts = {
        t["metric_config"]["metric_id"]: t["status"] != "SUCCESS"
        for t in data.get("tests", [])
        if t.get("metric_config", {}).get("params", {}).get("type", "").endswith("ValueDrift")
    }
    for m in data.get("metrics", []):
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


def _empty(values: pd.Series) -> bool:
    """No finite value at all (Evidently drops NaN and infinities before testing)."""
    if pd.api.types.is_numeric_dtype(values):
        return not np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)).any()
    return bool(values.isna().all())


def choose_test(reference: pd.Series, numeric: bool) -> str:
    """KS for a numeric column with more than FEW_VALUES distinct values in the reference;
    chi-square with rare categories pooled (`POOLED_CHI2`) for categories and the few-valued
    numerics (hours, months, counts), where KS's ties make it blunt."""
    if numeric and reference.dropna().nunique() > FEW_VALUES:
        return KS
    return POOLED_CHI2


def p_value(reference: pd.Series, current: pd.Series, test: str) -> float:
    """The two-sample p-value of `test` (KS or POOLED_CHI2) on the finite values of both."""
    ref, cur = _finite(reference), _finite(current)
    if test == KS:
        from scipy.stats import ks_2samp

        return float(ks_2samp(ref.to_numpy(float), cur.to_numpy(float))[1])
    return pooled_chi2(ref, cur)


def _finite(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.replace([np.inf, -np.inf], np.nan).dropna()
    return values.dropna()


def pooled_chi2(reference: pd.Series, current: pd.Series) -> float:
    """Chi-square test that both samples come from one categorical distribution (a 2 x k
    contingency table, so the reference's own sampling error counts).

    Categories whose expected count in the smaller sample is under MIN_EXPECTED are pooled into
    one "other" cell (merged into the smallest kept category while it is itself too small): the
    chi-square approximation holds, a long tail of rare levels cannot fire the test, and a
    category absent from the reference counts for its share like any other, not as p = 0.
    """
    from scipy.stats import chi2_contingency

    counts = pd.concat(
        [reference.value_counts(), current.value_counts()], axis=1, keys=["ref", "cur"]
    ).fillna(0.0)
    n_ref, n_cur = float(counts["ref"].sum()), float(counts["cur"].sum())
    if n_ref == 0 or n_cur == 0:
        return 1.0
    total = counts.sum(axis=1).sort_values(ascending=False)
    expected = total * min(n_ref, n_cur) / (n_ref + n_cur)
    kept = list(expected.index[expected >= MIN_EXPECTED])
    table = counts.loc[kept].to_numpy(dtype=float)
    rest = counts.drop(index=kept).sum().to_numpy(dtype=float)
    if rest.sum() > 0:
        if rest.sum() * min(n_ref, n_cur) / (n_ref + n_cur) >= MIN_EXPECTED or not kept:
            table = np.vstack([table, rest]) if kept else rest[None, :]
        else:
            table[-1] += rest
    if table.shape[0] < 2:
        return 1.0
    return float(chi2_contingency(table.T, correction=False)[1])


def bh_threshold(pvalues: list[float], false_alarm: float) -> float:
    """The Benjamini-Hochberg cut-off: the columns with p <= it are the drifted ones.

    With no real drift, the chance that any column is flagged is at most `false_alarm` (BH
    controls the family-wise error under the global null); with several drifted columns it
    flags more of them than a Bonferroni cut-off would.
    """
    p = np.sort(np.asarray(pvalues, dtype=float))
    m = len(p)
    if m == 0:
        return false_alarm
    ranks = np.nonzero(p <= false_alarm * np.arange(1, m + 1) / m)[0]
    return false_alarm * (int(ranks[-1]) + 1) / m if len(ranks) else false_alarm / m


def _pooled_chi2_test(
    reference: pd.Series, current: pd.Series, _feature_type: object, threshold: float
) -> tuple[float, bool]:
    p = pooled_chi2(reference, current)
    return p, p <= threshold


def _register() -> None:
    """Make POOLED_CHI2 an Evidently stat test, so its report shows the same test and p-value."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTest,
        _registered_stat_tests,
        register_stattest,
    )
    from evidently.legacy.core import ColumnType

    if POOLED_CHI2 in _registered_stat_tests:
        return
    test = StatTest(
        name=POOLED_CHI2,
        display_name="chi-square p_value (rare categories pooled)",
        allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical],
        default_threshold=FALSE_ALARM,
    )
    register_stattest(test, default_impl=_pooled_chi2_test)


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
    section given as text instead of a snapshot says why it is missing; a `Table` is
    servewatch's own: its note above its table).

    Evidently's standalone template inlines its script bundle and icon font: the page fetches
    nothing, so it opens without a network (checked in a headless browser by the tests).
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget, table_data, text_widget

    widgets = []
    for title, snapshot in sections:
        if isinstance(snapshot, str):
            widgets.append(group_widget(title=title, widgets=[text_widget(text=snapshot)]))
            continue
        if isinstance(snapshot, Table):
            table = table_data(column_names=snapshot.headers, data=snapshot.rows)
            parts = [text_widget(text=snapshot.note), table]
            widgets.append(group_widget(title=title, widgets=parts))
            continue
        model = snapshot.to_snapshot_model()
        widgets.append(group_widget(title=title, widgets=list(model.widgets)))
        widgets.extend(model.tests_widgets)
    return str(render_widgets(widgets, as_iframe=False))
