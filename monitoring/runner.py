"""run_monitoring(): one monitoring run for one model, from the log window to stored alerts."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from core import labels as label_types
from core import metrics as metric_contract
from core.errors import ServewatchError
from core.features import category, names_of, typed
from core.metrics import classification_metrics, regression_metrics
from core.registry import (
    LABEL_COL,
    PREDICTION_COL,
    PROBA_PREFIX,
    REFERENCE_FILE,
    Manifest,
    Registry,
)
from monitoring import alerts as alerting
from monitoring import bands, noise
from monitoring.config import MonitorSettings
from monitoring.drift import PREDICTION, TARGET, Labelled
from monitoring.estimate import estimate, fit_top_class
from monitoring.notifiers import AlertmanagerNotifier, WebhookNotifier
from monitoring.store import Cursor, MonitorStore
from monitoring.summary import (
    REPORT_FILE,
    AlertState,
    Baseline,
    CanaryReport,
    ColumnDriftSummary,
    DriftSummary,
    ExplanationDrift,
    LateLabels,
    Metrics,
    MonitorSummary,
    PerformanceSummary,
    PredictionDrift,
    QualitySummary,
    ReferenceNote,
    Severity,
    ShadowReport,
)
from monitoring.window import (
    JsonScalar,
    ShadowRow,
    Window,
    count,
    read_labels,
    read_shadow,
    read_window,
    settling,
)
from predlog.store import PredictionStore

DecisionOf = tuple[float | None, int]
"""A version's decision: its threshold (None: argmax) and its positive class's column."""

log = logging.getLogger("servewatch.monitor")


class MonitorError(ServewatchError):
    """The run itself cannot happen (unknown model, no data); worded for the user."""


class Settling(MonitorError):
    """Rows are logged, but all of them within `SERVEWATCH_MONITOR_SETTLE_S` of the run: not a
    failed run (the command exits 0); a run from `ready_at` includes them."""

    def __init__(self, model: str, version: int, rows: int, ready_at: float) -> None:
        when = datetime.fromtimestamp(ready_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"{rows} logged prediction(s) for {model} v{version} wait for the settle window "
            f"(SERVEWATCH_MONITOR_SETTLE_S); a run from {when} includes them"
        )
        self.rows = rows
        self.ready_at = ready_at


def notifiers_from(settings: MonitorSettings) -> list[alerting.Notifier]:
    out: list[alerting.Notifier] = []
    if settings.alert_webhook_url:
        out.append(WebhookNotifier(settings.alert_webhook_url))
    if settings.alertmanager_url:
        out.append(AlertmanagerNotifier(settings.alertmanager_url))
    return out


def _class_keys(manifest: Manifest) -> list[str] | None:
    """A classifier's classes as the log's label keys (None for a regressor)."""
    if manifest.task != "classification":
        return None
    return [label_types.key(c) for c in manifest.classes or []]


@dataclass
class Run:
    """One run's plan: what it judges (the window, its labels, the reference), where it writes
    (the summary, the report folder), and the cursors it moves once committed. Every section of
    the run reads the plan and adds its part to `summary`."""

    settings: MonitorSettings
    registry: Registry
    store: PredictionStore
    mstore: MonitorStore
    rules: alerting.AlertRules
    manifest: Manifest
    manual: bool
    cursor: Cursor
    until: float
    window: Window
    labels: Window
    summary: MonitorSummary
    tmp: Path
    labels_until: float | None = None
    other_cursors: dict[int, Cursor] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.summary["model"]

    @property
    def version(self) -> int:
        return self.summary["version"]

    @property
    def enough(self) -> bool:
        return self.window.rows >= self.rules.min_rows

    @property
    def rows_until(self) -> float | None:
        """Too few rows to judge: carried to the next scheduled run, never judged twice."""
        return self.until if self.enough else self.cursor.rows_until

    @cached_property
    def classes(self) -> list[str] | None:
        return _class_keys(self.manifest)

    @cached_property
    def reference(self) -> pd.DataFrame:
        return _reference(self.registry, self.model, self.version)

    @cached_property
    def current(self) -> pd.DataFrame:
        return _current_frame(self.window, self.manifest)

    @cached_property
    def staging(self) -> int | None:
        return self.registry.alias_version(self.model, "staging")


Section = Callable[[Run], None]
"""One section of a run: reads the plan, adds its part to the run's summary (and the cursors
it moves); it acts on nothing outside the run (`_act` does, after the commit)."""


def run_monitoring(
    *,
    settings: MonitorSettings,
    store: PredictionStore,
    model: str,
    version: int | None = None,
    since: float | None = None,
    ago: float | None = None,
    last: int | None = None,
    notifiers: list[alerting.Notifier] | None = None,
    rules: alerting.AlertRules | None = None,
) -> MonitorSummary:
    """Drift, data quality, realised and estimated performance, alerts; stored and returned.

    A scheduled run (no `since`, `ago` or `last`) judges the version's rows ingested since its
    previous scheduled run, and the labels that met their prediction since then; fewer than
    `min_rows` rows (or `min_labelled_rows` labels) are carried to the next run instead of being
    judged, so every row and label is judged once. A manual run (`since`: an ingest time, `ago`:
    seconds before the database's clock, `last`: the newest N), or a run of a version production
    does not serve, reports on its window and its rows' labels but moves no cursor, changes no
    alert state and notifies no one. The run plans, computes its sections, evaluates its alerts,
    commits (report folder, run record, alert states, cursors), and only then acts: it
    notifies and withdraws a worse canary (`_act`).
    """
    run = _plan(settings, store, model, version, since, ago, last, rules)
    summary, report_dir = run.summary, run.tmp.parent
    try:
        for section in SECTIONS:
            section(run)
        changed, new_states, retired = _judge(run)
        summary["notifier_errors"] = []  # filled by the notifications, after the commit
        summary["finished_at"] = time.time()
        summary["seconds"] = round(summary["finished_at"] - summary["started_at"], 3)
        (run.tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        final = report_dir / f"{int(summary['started_at'] * 1000)}-{uuid.uuid4().hex[:6]}"
        os.rename(run.tmp, final)
    except OSError as exc:  # report store full or read-only: no half-written run
        shutil.rmtree(run.tmp, ignore_errors=True)
        raise MonitorError(f"report store {report_dir}: {exc.strerror or exc}") from None
    except Exception as exc:  # recorded with its reason; the next run starts after this window
        shutil.rmtree(run.tmp, ignore_errors=True)
        raise _failed(run, exc) from None
    except BaseException:
        shutil.rmtree(run.tmp, ignore_errors=True)
        raise
    summary["report_dir"] = str(final)
    try:
        run_id = run.mstore.save_run(
            model=model,
            version=run.version,
            window_end=run.until,
            rows=run.window.rows,
            summary=summary,
            report_dir=str(final),
            alert_states=None if run.manual else new_states,
            cursor=None if run.manual else Cursor(run.rows_until, run.labels_until),
            retired=list(retired),
            other_cursors=run.other_cursors,
        )
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)  # no run row: no report either
        raise
    for old in run.mstore.prune(model, settings.monitor_keep_runs):
        shutil.rmtree(old, ignore_errors=True)
    sent = notifiers if notifiers is not None else notifiers_from(settings)
    _act(run.registry, run.mstore, run_id, summary, changed, _context(run), sent)
    from monitoring.workspace import record  # the run's Evidently snapshot; never fails the run

    record(settings, run.mstore, run_id, summary, final, [f.name for f in run.manifest.features])
    return summary


def _version(
    registry: Registry, model: str, version: int | None
) -> tuple[int, int | None, Manifest]:
    """The version to judge (production's unless named), production's, and its manifest."""
    try:
        serving: int | None = registry.resolve(model)
    except Exception as exc:
        if version is None:
            raise MonitorError(str(exc)) from None
        serving = None
    try:
        version = version if version is not None else serving
        assert version is not None
        return version, serving, registry.manifest(model, version)
    except Exception as exc:
        raise MonitorError(str(exc)) from None


def _plan(
    settings: MonitorSettings,
    store: PredictionStore,
    model: str,
    asked: int | None,
    since: float | None,
    ago: float | None,
    last: int | None,
    rules: alerting.AlertRules | None,
) -> Run:
    """The run's windows, cursors and summary head, and its (empty) report folder."""
    started = time.time()
    registry = Registry(settings.registry)
    version, serving, manifest = _version(registry, model, asked)
    rules = rules or alerting.load_rules(settings.alert_rules)
    store.stamp_unstamped(model)
    now = store.now()
    until = now - settings.monitor_settle_s
    if ago is not None:
        since = now - ago
    # a run of another version than production's (--version) reports on it like a manual run:
    # production's windows, alert states and labels are the scheduled runs' alone
    manual = since is not None or last is not None or version != serving
    mstore = MonitorStore(store)
    mstore.create_schema()
    cursor = Cursor(since, None) if manual else mstore.cursor(model, version)
    classes, cap = _class_keys(manifest), settings.monitor_max_rows
    window = read_window(
        store,
        model=model,
        version=version,
        since=cursor.rows_until,
        last=last,
        cap=cap,
        classes=classes,
        until=until,
    )
    if window.rows == 0 and count(store, model, version, None, until) == 0:
        waiting, newest = settling(store, model, version, until)
        if waiting and newest is not None:
            raise Settling(model, version, waiting, newest + settings.monitor_settle_s)
        raise MonitorError(f"no logged predictions for {model} v{version}; nothing to monitor")
    labels = window
    if not manual:
        labels = read_labels(
            store,
            model=model,
            version=version,
            since=cursor.labels_until,
            until=until,
            cap=cap,
            classes=classes,
        )
    summary = _head(model, version, manifest, rules, manual, started, cursor, until, window, labels)
    report_dir = settings.monitor_reports_dir / model
    tmp = report_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MonitorError(f"report store {report_dir} is not writable ({exc.strerror})") from None
    return Run(
        settings, registry, store, mstore, rules, manifest, manual, cursor, until, window, labels,
        summary, tmp, labels_until=until,
    )  # fmt: skip


def _head(
    model: str,
    version: int,
    manifest: Manifest,
    rules: alerting.AlertRules,
    manual: bool,
    started: float,
    cursor: Cursor,
    until: float,
    window: Window,
    labels: Window,
) -> MonitorSummary:
    """The summary's first keys: what the run judges and over which window."""
    enough = window.rows >= rules.min_rows
    metric, test_score = _watched(manifest, rules)
    summary: MonitorSummary = {
        "model": model,
        "version": version,
        "status": "ok",
        "manual": manual,
        "started_at": started,
        "window": {
            "start": window.start,
            "end": window.end,
            "since": cursor.rows_until,
            "until": until,
            "carried": not enough and not manual,
            "labels_since": None if manual else cursor.labels_until,
            "labels_until": None if manual else until,
        },
        "rows": window.rows,
        "rows_in_window": window.total_rows,
        "labelled_rows": sum(lab is not None for lab in labels.labels),
        "metric": metric,
        "test_score": test_score,
        "reference": _reference_note(manifest),
    }
    baseline = _baseline(manifest, metric)
    if baseline is not None:
        summary["baseline"] = baseline
    return summary


def _quality_section(run: Run) -> None:
    if run.window.rows:
        run.summary["quality"] = _quality(run.reference, run.current, run.manifest)


def _performance_section(run: Run) -> None:
    """Realised performance on the labels, estimated performance on the window (when enough
    rows), their noise bands; too few labels are carried (judged once, later)."""
    rules, classes, decision = run.rules, run.classes, _decision(run.manifest)
    performance = run.summary["performance"] = _performance(
        run.window,
        run.reference,
        classes,
        decision,
        run.manifest,
        rules.confidence,
        labelled=run.labels,
        with_estimate=run.enough,
    )
    if not run.enough:
        performance["estimate_note"] = (
            f"not estimated: {run.window.rows} rows in the window, fewer than min_rows "
            f"({rules.min_rows}); they are judged with the next window"
        )
    undefined = _undefined(run.labels, classes, decision[1])
    realised = performance["realised"]
    if undefined and realised is not None:
        performance["undefined"] = undefined
        for name in undefined:
            realised[name] = float("nan")
    if performance.get("realised_rows", 0) < rules.min_labelled_rows:
        run.labels_until = run.cursor.labels_until  # too few labels: carried, judged once later


def _late_labels_section(run: Run) -> None:
    if run.manual:
        return
    run.summary["window"]["labels_until"] = run.labels_until
    late, run.other_cursors = _late_labels(
        run.registry,
        run.store,
        run.mstore,
        run.model,
        {run.version, run.staging},
        run.until,
        run.settings.monitor_max_rows,
    )
    if late:
        run.summary["late_labels"] = late


def _canary_section(run: Run) -> None:
    if run.staging is None or run.staging == run.version:
        run.summary["canary"] = None
        return
    run.summary["canary"], moved = _canary(
        run.registry,
        run.store,
        run.mstore,
        run.model,
        run.staging,
        run.cursor.rows_until,
        run.classes,
        run.rules,
        run.summary,
        run.settings.monitor_max_rows,
    )
    if not run.manual:
        run.other_cursors.update(moved)


def _shadow_section(run: Run) -> None:
    since, cap = run.cursor.rows_until, run.settings.monitor_max_rows
    rows = read_shadow(run.store, model=run.model, since=since, until=run.until, cap=cap)
    labelled = (
        rows
        if run.manual
        else read_shadow(
            run.store,
            model=run.model,
            since=run.cursor.labels_until,
            until=run.until,
            cap=cap,
            labels_met=True,
        )
    )
    if rows or labelled:
        run.summary["shadow"] = _shadow_report(
            rows,
            run.classes,
            partial(_version_decision, run.registry, run.model),
            labelled_rows=labelled,
        )


def _explanation_section(run: Run) -> None:
    if run.enough:
        run.summary["explanation_drift"] = _explanation_drift(
            run.registry,
            run.model,
            run.version,
            run.reference,
            run.current,
            run.manifest,
            run.rules.confidence,
        )


def _drift_section(run: Run) -> None:
    if run.enough:
        labelled = _labelled(
            run.labels, run.reference, run.classes, run.rules.min_labelled_rows, run.manifest
        )
        run.summary["drift"], run.summary["prediction_drift"] = _drift(
            run.reference,
            run.current,
            run.manifest,
            run.settings,
            run.tmp / REPORT_FILE,
            labelled,
            bands.tables(run.summary, run.rules),
        )


SECTIONS: tuple[Section, ...] = (
    _quality_section,
    _performance_section,
    _late_labels_section,
    _canary_section,
    _shadow_section,
    _explanation_section,
    _drift_section,
)
"""A run's sections, in the order their parts appear in the summary."""


def _judge(
    run: Run,
) -> tuple[list[alerting.Alert], dict[str, AlertState], dict[int, dict[str, Severity]]]:
    """The run's alerts (into its summary): the transitions to notify, the new alert states,
    and the alerts of versions production no longer serves (resolved)."""
    model, version, summary = run.model, run.version, run.summary
    states = run.mstore.alert_states(model, version)
    retired = {} if run.manual else run.mstore.other_versions_active(model, version)
    active, changed, new_states = alerting.evaluate(summary, run.rules, states)
    if run.manual:  # what this window breaches; the schedule's alert state is not touched
        active = [
            alerting.Alert(
                model, version, c.rule, "firing", c.severity, c.value, c.threshold, c.message, None
            )
            for c in alerting.conditions(summary, run.rules)
            if c.breached
        ]
        changed = []
    changed += [
        alerting.Alert(
            model,
            old,
            rule,
            "resolved",
            severity,
            None,
            None,
            f"v{old} is no longer monitored: {model} serves v{version}",
            None,
        )
        for old, fired in retired.items()
        for rule, severity in fired.items()
    ]
    summary["alerts"] = [a.as_dict() for a in active]
    summary["transitions"] = [a.as_dict() for a in changed]
    return changed, new_states, retired


def _context(run: Run) -> alerting.AlertContext:
    """What notifiers get beside the alerts."""
    model = run.model
    context: alerting.AlertContext = {
        "model": model,
        "version": run.version,
        "retrain": f"servewatch monitor export --model {model} --labelled --out "
        f"{model}-labelled.csv && servewatch train --data {model}-labelled.csv "
        f"--target {run.manifest.target} --name {model}",
    }
    if run.settings.public_url:
        context["report_url"] = (
            f"{run.settings.public_url.rstrip('/')}/v1/models/{model}/monitoring/report"
        )
    return context


def _failed(run: Run, exc: Exception) -> MonitorError:
    """A run that failed part-way, recorded with its reason (the next run starts after its
    window); the error to raise."""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    log.exception("monitoring run for %s v%s failed", run.model, run.version)
    failed = run.summary.copy()  # the keys so far, in their order; then why and when it ended
    failed["status"] = "failed"
    failed["error"] = reason
    failed["finished_at"] = time.time()
    run.mstore.save_run(
        model=run.model,
        version=run.version,
        window_end=run.until,
        rows=run.window.rows,
        summary=failed,
        report_dir=None,
        alert_states=None,
        cursor=None if run.manual else Cursor(run.until, run.until),
    )
    return MonitorError(
        f"monitoring run for {run.model} v{run.version} failed ({reason}); recorded, and the "
        "next run starts after this window"
    )


def _act(
    registry: Registry,
    mstore: MonitorStore,
    run_id: int,
    summary: MonitorSummary,
    changed: list[alerting.Alert],
    context: alerting.AlertContext,
    notifiers: list[alerting.Notifier],
) -> None:
    """What a committed run does: withdraw a worse canary, send the alert transitions (their
    states are stored, so a run whose commit failed sent nothing and the next one sends them
    once); a failed withdrawal or notifier is added to the stored run and its summary.json."""
    model, version = summary["model"], summary["version"]
    amended = False
    canary = summary.get("canary")
    if canary and canary.get("withdrawn"):
        try:
            registry.clear_alias(model, "staging")
            log.warning(
                "canary %s v%s withdrawn: %s %.3f vs production %.3f",
                model,
                canary["version"],
                summary.get("metric"),
                canary.get("realised"),
                canary.get("production"),
            )
        except OSError as exc:  # a read-only registry: the alert still fires
            canary["withdrawn"] = False
            canary["error"] = str(exc)
            amended = True
    summary["notifier_errors"] = alerting.notify_all(notifiers, changed, context)
    for a in changed:
        log.warning("alert %s %s on %s v%s: %s", a.rule, a.status, model, version, a.message)
    if not (amended or summary["notifier_errors"]):
        return
    on_disk = {k: v for k, v in summary.items() if k != "report_dir"}
    try:
        (Path(summary["report_dir"]) / "summary.json").write_text(
            json.dumps(on_disk, indent=2, default=_json_default)
        )
        mstore.update_summary(run_id, summary)
    except Exception:  # the run and its alert states are committed: logged, not raised
        log.exception("monitoring run %s of %s: its notes could not be stored", run_id, model)


def _watched(manifest: Manifest, rules: alerting.AlertRules) -> tuple[str | None, float | None]:
    """The metric the performance rules watch and the version's own score on it: the objective's
    test score, or, when the rules name another metric, that metric's test (or sample) score."""
    objective = manifest.objective
    metric = rules.metric or (objective.metric if objective else None)
    if metric is None:
        return None, None
    if objective is not None and metric == objective.metric:
        return metric, objective.test_score
    scores = manifest.metrics.get("test") or manifest.metrics.get("sample") or {}
    value = scores.get(metric)
    return metric, float(value) if isinstance(value, int | float) else None


def _baseline(manifest: Manifest, metric: str | None) -> Baseline | None:
    """The realised rules' baseline from the manifest's `reference.baseline` (the watched metric
    on the test rows and the fitted rows predicted out of fold) when its rows were all unseen
    (`_unseen_baseline`); None for versions published without one (they are judged against the
    test score)."""
    record = _unseen_baseline(manifest)
    if record is None or metric is None:
        return None
    score, rows = (record.get("metrics") or {}).get(metric), _baseline_rows(manifest)
    if not isinstance(score, int | float) or not math.isfinite(score) or not rows:
        return None
    return {"score": float(score), "rows": rows, "drawn_from": "+".join(record.get("rows") or {})}


def _unseen_baseline(manifest: Manifest) -> dict[str, Any] | None:
    """The manifest's `reference.baseline` when every row it counts was unseen by the model that
    predicted it: one that says how its folds were split (`copies_together`: as the search's,
    a row's duplicates in its fold, forward in time or the test rows alone with a time column),
    or an older one (plain shuffled folds) of data without copies or a time column. An older
    one's out-of-fold rows of data with copies were predicted by copies fitted on their
    duplicates, and with a time column on later rows (0.957 and 0.783 where the test rows read
    0.630 and 0.721): such a version is judged against its test score, on its test rows."""
    record = (manifest.reference.model_extra or {}).get("baseline")
    if not isinstance(record, dict):
        return None
    if "copies_together" in record:
        return record
    split = (manifest.data.model_extra or {}).get("split") if manifest.data else None
    if not isinstance(split, dict):
        return None
    plain = not split.get("copies_kept_together") and not split.get("ordered_by")
    return record if plain else None


def _baseline_rows(manifest: Manifest | None) -> int | None:
    """How many unseen rows the realised baseline was measured on: the rows of the manifest's
    `reference.baseline` when they were all unseen (`_unseen_baseline`), else the test rows
    (`data.split.test`), None when unknown."""
    if manifest is None:
        return None
    record = _unseen_baseline(manifest)
    counts = record.get("rows") if record is not None else None
    if isinstance(counts, dict) and counts:
        total = sum(v for v in counts.values() if isinstance(v, int))
        return total or None
    split = (manifest.data.model_extra or {}).get("split") if manifest.data else None
    test_rows = split.get("test") if isinstance(split, dict) else None
    return test_rows if isinstance(test_rows, int) else None


def _reference(registry: Registry, model: str, version: int) -> pd.DataFrame:
    """The version's reference sample; a damaged one fails the run (recorded), not the store."""
    try:
        return pd.read_parquet(registry.path(model, version) / REFERENCE_FILE)
    except Exception as exc:
        raise RuntimeError(f"reference sample unreadable: {type(exc).__name__}: {exc}") from None


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _current_frame(window: Window, manifest: Manifest) -> pd.DataFrame:
    frame = window.inputs.reindex(columns=[f.name for f in manifest.features])
    for f in manifest.features:
        frame[f.name] = typed(frame[f.name], f.kind)
    if manifest.task == "classification":
        frame[PREDICTION_COL] = [str(p) for p in window.predictions]
    else:
        frame[PREDICTION_COL] = pd.to_numeric(pd.Series(window.predictions), errors="coerce")
    return frame


def _drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    manifest: Manifest,
    settings: MonitorSettings,
    html: Path,
    labelled: Labelled | None = None,
    band_tables: list[bands.Table] | None = None,
) -> tuple[DriftSummary, PredictionDrift]:
    from monitoring.drift import ColumnDrift, run_drift

    numeric = names_of(manifest.features, "numeric")
    categorical = names_of(manifest.features, "categorical")
    pred_numeric = manifest.task == "regression"
    ref = reference.copy()
    if not pred_numeric:
        ref[PREDICTION_COL] = ref[PREDICTION_COL].astype(str)
    for col in categorical:
        ref[col] = ref[col].map(category)
    result = run_drift(
        ref,
        current,
        numeric=numeric + ([PREDICTION_COL] if pred_numeric else []),
        categorical=categorical + ([] if pred_numeric else [PREDICTION_COL]),
        method=settings.monitor_drift_method,
        false_alarm=settings.monitor_drift_false_alarm,
        html_path=html,
        labelled=labelled,
        bands=band_tables,
    )
    (html.parent / "evidently.json").write_text(json.dumps(result.evidently_json, default=str))
    if result.performance_json is not None:
        (html.parent / "evidently-performance.json").write_text(
            json.dumps(result.performance_json, default=str)
        )
    if result.performance_error is not None:
        log.warning("report without its performance section: %s", result.performance_error)

    def column(d: ColumnDrift) -> ColumnDriftSummary:
        return {
            "column": d.column,
            "method": d.method,
            "score": d.score,
            "threshold": d.threshold,
            "drifted": d.drifted,
        }

    def shares(values: pd.Series[str]) -> dict[str, float]:
        return {str(k): float(v) for k, v in values.value_counts(normalize=True).items()}

    features = {c: column(d) for c, d in result.columns.items() if c != PREDICTION_COL}
    drifted = [c for c, d in features.items() if d["drifted"]]
    drift: DriftSummary = {
        "drifted_share": len(drifted) / max(1, len(features)),
        "drifted_count": len(drifted),
        "columns": features,
    }
    pred = result.columns.get(PREDICTION_COL)
    pred_drift: PredictionDrift = {}
    if pred:
        pred_drift = {
            "column": pred.column,
            "method": pred.method,
            "score": pred.score,
            "threshold": pred.threshold,
            "drifted": pred.drifted,
        }
    if not pred_numeric:
        pred_drift["reference_shares"] = shares(ref[PREDICTION_COL])
        pred_drift["current_shares"] = shares(current[PREDICTION_COL])
    return drift, pred_drift


def _late_labels(
    registry: Registry,
    store: PredictionStore,
    mstore: MonitorStore,
    model: str,
    judged: set[int | None],
    until: float,
    cap: int,
) -> tuple[list[LateLabels], dict[int, Cursor]]:
    """Labels that met predictions of the model's other monitored versions since those versions'
    last scheduled runs (a retired version's late feedback): each version's realised figures on
    them, by its own decision, and its labels cursor moved on. Reported, not alerted on: the
    version no longer serves. Versions in `judged` (production's, the canary's) are left to
    their own judgement."""
    out: list[LateLabels] = []
    moved: dict[int, Cursor] = {}
    for other, cur in mstore.cursors(model).items():
        if other in judged:
            continue
        try:
            manifest = registry.manifest(model, other)
        except Exception:
            continue
        classes = _class_keys(manifest)
        labels = read_labels(
            store,
            model=model,
            version=other,
            since=cur.labels_until,
            until=until,
            cap=cap,
            classes=classes,
        )
        if labels.rows == 0:
            continue
        realised, used, unusable = _realised(labels, classes, _decision(manifest))
        out.append(
            {
                "version": other,
                "labelled_rows": used,
                "unusable_labels": unusable,
                "realised": realised,
            }
        )
        moved[other] = Cursor(cur.rows_until, until)
    return out, moved


def _canary(
    registry: Registry,
    store: PredictionStore,
    mstore: MonitorStore,
    model: str,
    staging: int,
    since: float | None,
    classes: list[str] | None,
    rules: alerting.AlertRules,
    summary: MonitorSummary,
    cap: int,
) -> tuple[CanaryReport, dict[int, Cursor]]:
    """The canary's realised performance against production's; a worse canary is marked to be
    withdrawn (`_act` clears the staging alias, which every replica follows, after the commit).

    The canary's labels are read by its own labels cursor, as production's are: the labels that
    met a canary prediction since the canary was last judged, whenever the prediction was made,
    so a label that arrives after its window ran is judged by the run that sees it, against the
    canary's version. Too few (or too few on production's side) are carried, never judged
    twice. Worse means beyond `alerts.drop_bound`: a drop from production's figure beyond the
    noise band of the canary's labelled rows (widened by production's) that may reach
    `max_drop`. A manual run reports and moves nothing: no cursor, no withdrawal.
    Returns the report and the canary's moved cursor (empty when carried)."""
    window = summary["window"]
    until = window["until"]
    cur = mstore.cursor(model, staging)
    labels = read_labels(
        store,
        model=model,
        version=staging,
        since=cur.labels_until,
        until=until,
        cap=cap,
        classes=classes,
    )
    decision = _version_decision(registry, model, staging)
    realised, used, _unusable = _realised(labels, classes, decision)
    out: CanaryReport = {
        "version": staging,
        "rows": count(store, model, staging, since, until),
        "labelled_rows": used,
        "labels_since": cur.labels_until,
    }
    metric = summary.get("metric")
    performance = summary.get("performance")
    production = performance.get("realised") if performance else None
    prod = production.get(metric) if production and metric else None
    prod_rows = performance.get("realised_rows", 0) if performance else 0
    value = realised.get(metric) if realised and metric else None
    if (
        metric is None
        or prod is None
        or prod != prod
        or value is None
        or value != value
        or used < rules.min_labelled_rows
        or prod_rows < rules.min_labelled_rows
    ):
        out["carried"] = True
        return out, {}
    judge = metric_contract.get(metric)
    rows = (used, prod_rows)
    width = _canary_band(registry, model, staging, classes, labels, rows, metric, rules)
    out["realised"] = value
    out["production"] = prod
    out["worse_by"] = judge.worse_by(prod, value)
    out["limit"] = alerting.drop_bound(judge, prod, rules.max_drop, width)
    if width is not None:
        out["band"] = width
    out["worse"] = not judge.meets(value, out["limit"])
    if summary.get("manual"):
        return out, {}
    if out["worse"]:
        out["withdrawn"] = True  # decided here; done after the run is committed (`_act`)
    return out, {staging: Cursor(cur.rows_until, until)}


def _canary_band(
    registry: Registry,
    model: str,
    staging: int,
    classes: list[str] | None,
    labels: Window,
    rows: tuple[int, int],
    metric: str,
    rules: alerting.AlertRules,
) -> float | None:
    """The noise band of the canary's `metric` on its labelled rows against production's
    (`rows`: the two counts), from the canary version's unseen reference rows, else its labels
    window's own; None when it cannot be measured."""
    try:
        manifest = registry.manifest(model, staging)
        reference = _reference(registry, model, staging)
    except Exception:
        return None
    band = noise.performance_noise(
        unseen=manifest.reference.unseen,
        reference=noise.from_reference(reference, classes),
        reference_proba=None,
        window=_window_rows(labels, classes),
        window_proba=None,
        realised_rows=rows[0],
        decision=_decision(manifest),
        confidence=rules.confidence,
        test_rows=rows[1],
    )["realised"]
    return band["widths"].get(metric) if band else None


def _shadow_report(
    rows: list[ShadowRow],
    classes: list[str] | None,
    decision_of: Callable[[int], DecisionOf] = lambda _v: (None, 1),
    labelled_rows: list[ShadowRow] | None = None,
) -> ShadowReport:
    """How often the shadow (staging) version agrees with production on `rows` (the rows
    window), and both scores on `labelled_rows` (the labels window: labels that met their
    production prediction since production's labels were last judged, whenever the rows came;
    default: the labels `rows` carry). Each side's classes are decided by its own version's
    threshold, `decision_of(version)`."""
    import orjson

    labels_from = rows if labelled_rows is None else labelled_rows
    first = (rows or labels_from)[0]

    prod = [orjson.loads(r["production_prediction"]) for r in rows]
    shad = [orjson.loads(r["shadow_prediction"]) for r in rows]
    if not rows:
        agreement = float("nan")
    elif classes is not None:
        agreement = float(np.mean([a == b for a, b in zip(prod, shad, strict=True)]))
    else:
        diffs = np.abs(np.asarray(prod, dtype=float) - np.asarray(shad, dtype=float))
        agreement = float(np.mean(diffs <= 1e-9))
    out: ShadowReport = {
        "shadow_version": first["shadow_version"],
        "production_version": first["production_version"],
        "rows": len(rows),
        "agreement": agreement,
    }
    labelled: list[ShadowRow] = []
    labels: list[str] = []
    for r in labels_from:
        if r["label"] is not None:
            labelled.append(r)
            labels.append(r["label"])
    if labelled:
        y = [
            label_types.key(orjson.loads(lab)) if classes else _finite(orjson.loads(lab))
            for lab in labels
        ]

        def realised(side: Literal["production", "shadow"]) -> Metrics:
            if classes is not None:
                probabilities = [
                    r[
                        "production_probabilities"
                        if side == "production"
                        else "shadow_probabilities"
                    ]
                    for r in labelled
                ]
                # a classifier's rows always carry probabilities (None fails the run as before)
                proba = np.array(
                    [[orjson.loads(p).get(c, 0.0) for c in classes] for p in probabilities]  # type: ignore[arg-type]
                )
                version = first["production_version" if side == "production" else "shadow_version"]
                return classification_metrics(y, proba, classes, *decision_of(version))
            predictions = [
                r["production_prediction" if side == "production" else "shadow_prediction"]
                for r in labelled
            ]
            pred = np.array([float(orjson.loads(p)) for p in predictions])
            return regression_metrics(np.asarray(y, dtype=float), pred)

        out["production_realised"] = realised("production")
        out["shadow_realised"] = realised("shadow")
        out["labelled_rows"] = len(labelled)
    return out


def _explanation_drift(
    registry: Registry,
    model: str,
    version: int,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    manifest: Manifest,
    confidence: float = 0.99,
    rows: int = 300,
) -> ExplanationDrift:
    """Mean |contribution| per feature on the reference sample and on the window, side by side,
    with the band their difference strays by chance (`monitoring.noise.mean_spread`): a feature
    that starts to matter more or less shows here even when its values look stable."""
    from service.inference.model import LoadedModel

    loaded = LoadedModel.load(registry, model, version)
    explainer = loaded.explainer()
    names = [f.name for f in manifest.features]

    def per_row(frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        sample = frame[names].sample(min(rows, len(frame)), random_state=0)
        typed = loaded.frame({c: sample[c].tolist() for c in names})
        explained = explainer.explain(typed)
        order = [explained.features.index(f) for f in names]
        values: npt.NDArray[np.float64] = np.abs(np.asarray(explained.contributions, dtype=float))
        return values[:, order]

    ref, cur = per_row(reference), per_row(current)
    ref_mean, cur_mean = ref.mean(axis=0), cur.mean(axis=0)
    return {
        "method": explainer.method,
        "features": {
            f: {
                "reference": float(ref_mean[i]),
                "current": float(cur_mean[i]),
                "change": float(cur_mean[i] - ref_mean[i]),
                "band": noise.mean_spread(ref[:, i], cur[:, i], confidence, len(names)),
            }
            for i, f in enumerate(names)
        },
        "rows": {"reference": len(ref), "current": len(cur)},
    }


def _quality(reference: pd.DataFrame, current: pd.DataFrame, manifest: Manifest) -> QualitySummary:
    missing: dict[str, float] = {}
    increase: dict[str, float] = {}
    unseen: dict[str, float] = {}
    oor: dict[str, float] = {}
    for f in manifest.features:
        cur = current[f.name]
        missing[f.name] = float(cur.isna().mean())
        ref_missing = float(reference[f.name].isna().mean()) if f.name in reference else 0.0
        increase[f.name] = max(0.0, missing[f.name] - ref_missing)
        if f.kind == "categorical" and f.categories is not None:
            known = set(f.categories)
            present = cur.dropna()
            unseen[f.name] = float((~present.isin(known)).mean()) if len(present) else 0.0
        if f.kind == "numeric" and f.min is not None and f.max is not None:
            vals = cur.dropna()
            oor[f.name] = float(((vals < f.min) | (vals > f.max)).mean()) if len(vals) else 0.0
    return {
        "missing_share": missing,
        "missing_increase": increase,
        "unseen_category_share": unseen,
        "out_of_range_share": oor,
    }


def _realised(
    window: Window, classes: list[str] | None, decision: DecisionOf = (None, 1)
) -> tuple[Metrics | None, int, int]:
    """Realised metrics on the labelled rows of a window: (metrics, rows used, unusable labels);
    a classifier's classes decided by the version's `decision` (threshold, positive column).

    A label that is no class of the model, or not a finite number for a regressor, is counted and
    left out: what is in the log never stops a run.
    """
    labelled = [i for i, lab in enumerate(window.labels) if lab is not None]
    if classes is not None:
        known = set(classes)
        usable = [i for i in labelled if label_types.key(window.labels[i]) in known]
        if not usable or window.probabilities is None:
            return None, 0, len(labelled) - len(usable)
        y = [label_types.key(window.labels[i]) for i in usable]
        return (
            classification_metrics(y, window.probabilities[usable], classes, *decision),
            len(usable),
            (len(labelled) - len(usable)),
        )
    y_true = np.array([_finite(window.labels[i]) for i in labelled], dtype=float)
    pred = np.array([_finite(window.predictions[i]) for i in labelled], dtype=float)
    ok = np.isfinite(y_true) & np.isfinite(pred)
    if not ok.any():
        return None, 0, len(labelled)
    return regression_metrics(y_true[ok], pred[ok]), int(ok.sum()), int((~ok).sum())


def _labelled(
    window: Window,
    reference: pd.DataFrame,
    classes: list[str] | None,
    min_rows: int,
    manifest: Manifest | None = None,
) -> Labelled | None:
    """The window's and the reference's labelled rows for the report's performance section, or
    None when the window has fewer than `min_rows` usable labels (as for realised performance)."""
    if LABEL_COL not in reference:
        return None
    ref = reference[reference[LABEL_COL].notna()]
    labelled = [i for i, lab in enumerate(window.labels) if lab is not None]
    if classes is None:
        y = np.array([_finite(window.labels[i]) for i in labelled], dtype=float)
        pred = np.array([_finite(window.predictions[i]) for i in labelled], dtype=float)
        ok = np.isfinite(y) & np.isfinite(pred)
        if ok.sum() < min_rows:
            return None
        cur = pd.DataFrame({TARGET: y[ok], PREDICTION: pred[ok]})
        ref_frame = pd.DataFrame(
            {
                TARGET: pd.to_numeric(ref[LABEL_COL], errors="coerce"),
                PREDICTION: pd.to_numeric(ref[PREDICTION_COL], errors="coerce"),
            }
        ).dropna()
        return Labelled("regression", cur, ref_frame)
    known = set(classes)
    usable = [i for i in labelled if label_types.key(window.labels[i]) in known]
    if len(usable) < min_rows:
        return None
    ref_cols = [f"{PROBA_PREFIX}{c}" for c in classes]
    probas = (
        window.probabilities is not None
        and all(c in ref for c in ref_cols)
        and not known & {TARGET, PREDICTION}  # probability columns are named by class
    )
    cur = pd.DataFrame(
        {
            TARGET: [label_types.key(window.labels[i]) for i in usable],
            PREDICTION: [label_types.key(window.predictions[i]) for i in usable],
        }
    )
    ref_frame = pd.DataFrame(
        {
            TARGET: [label_types.key(v) for v in ref[LABEL_COL]],
            PREDICTION: [label_types.key(v) for v in ref[PREDICTION_COL]],
        }
    )
    if probas and window.probabilities is not None:
        for k, c in enumerate(classes):
            cur[c] = window.probabilities[usable, k]
            ref_frame[c] = ref[f"{PROBA_PREFIX}{c}"].to_numpy(float)
    ref_frame = ref_frame[ref_frame[TARGET].isin(known)]
    threshold, positive = _decision(manifest) if manifest is not None else (None, len(classes) - 1)
    return Labelled(
        "classification",
        cur,
        ref_frame,
        list(classes),
        probas,
        positive=classes[positive] if len(classes) == 2 else None,
        threshold=threshold,
    )


def _undefined(labels: Window, classes: list[str] | None, positive: int) -> dict[str, str]:
    """Realised metrics the window's labels leave undefined, and why: ROC AUC without every
    class among the labels; a binary model's recall without a positive label, F1 without a
    positive label or prediction, precision without a positive prediction."""
    if classes is None:
        return {}
    present = {label_types.key(v) for v in labels.labels if v is not None} & set(classes)
    if not present:
        return {}
    out: dict[str, str] = {}
    if len(present) < len(classes):
        out["roc_auc"] = f"needs every class among the labels; they hold only {sorted(present)}"
    if len(classes) == 2:
        pos = classes[positive]
        predicted = {
            label_types.key(p) for p, v in zip(labels.predictions, labels.labels, strict=True)
            if v is not None
        }  # fmt: skip
        if pos not in predicted:
            out["precision"] = f"no labelled row was predicted the positive class {pos!r}"
        if pos not in present:
            out["recall"] = f"no label is the positive class {pos!r}"
            if pos not in predicted:
                out["f1"] = f"neither a label nor a prediction is the positive class {pos!r}"
    return out


def _finite(value: JsonScalar) -> float:
    """A logged value as a float (NaN when it is none)."""
    if value is None or isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _decision(manifest: Manifest) -> DecisionOf:
    """A version's decision: its threshold (None: argmax) and its positive class's column."""
    if manifest.task != "classification":
        return None, 1
    return manifest.threshold, manifest.positive_index


def _version_decision(registry: Registry, model: str, version: int) -> DecisionOf:
    """The decision of another version (canary, shadow); argmax when its manifest is unreadable."""
    try:
        return _decision(registry.manifest(model, version))
    except Exception:
        return None, 1


def _own_rows(manifest: Manifest | None, rows: int) -> int:
    """How many of the reference's first rows the tested model itself predicted (its test rows):
    the label-free estimate's baseline, calibration and band are read from those only. The
    top-up rows (validation rows by the train-only fit, out-of-fold rows by fold models) come
    from models fitted on fewer rows, whose sharper probabilities put the estimate on the
    reference 0.03-0.05 above the served model's on healthy traffic (every healthy window then
    fired estimated_performance on a 400-row data set). Realised bands keep every row."""
    if manifest is None or not manifest.reference.unseen:
        return rows
    counts = manifest.reference.rows
    test = counts.get("test") or counts.get("import_sample")
    return min(test, rows) if test and len(counts) > 1 else rows


def _performance(
    window: Window,
    reference: pd.DataFrame,
    classes: list[str] | None,
    decision: DecisionOf = (None, 1),
    manifest: Manifest | None = None,
    confidence: float = 0.99,
    *,
    labelled: Window | None = None,
    with_estimate: bool = True,
) -> PerformanceSummary:
    """Estimated performance on `window` (unless `with_estimate` is False: too few rows) and
    realised performance on `labelled` (the run's labels window; default: the window's labels)."""
    out: PerformanceSummary = {"realised": None, "estimated": None, "reference_estimated": None}
    unseen = manifest is not None and manifest.reference.unseen
    ref_rows = noise.from_reference(reference, classes)
    own = _own_rows(manifest, len(reference))
    ref_proba = ref_rows.proba[:own] if ref_rows.proba is not None else None
    own_codes = ref_rows.codes[:own] if ref_rows.codes is not None else None
    calibration = (
        fit_top_class(ref_proba, own_codes, *decision)
        if unseen and ref_proba is not None and own_codes is not None
        else None
    )
    if not with_estimate:
        pass
    elif classes is None:
        out["estimate_note"] = (
            "no label-free estimate for regression: it is read from class probabilities"
        )
    elif window.probabilities is None:
        out["estimate_note"] = "no label-free estimate: the log holds no class probabilities"
    else:
        out["estimated"] = estimate(window.probabilities, classes, *decision, calibration)
        if ref_proba is not None:
            out["reference_estimated"] = estimate(ref_proba, classes, *decision, calibration)
    labels = labelled if labelled is not None else window
    realised, used, unusable = _realised(labels, classes, decision)
    out["unusable_labels"] = unusable
    if realised is not None:
        out["realised"] = realised
        out["realised_rows"] = used
    out["noise"] = noise.performance_noise(
        unseen=unseen,
        reference=ref_rows,
        reference_proba=ref_proba,
        window=_window_rows(labels, classes),
        window_proba=window.probabilities if classes is not None and with_estimate else None,
        realised_rows=used,
        decision=decision,
        confidence=confidence,
        test_rows=_baseline_rows(manifest),
        calibration=calibration,
    )
    return out


def _window_rows(window: Window, classes: list[str] | None) -> noise.Labelled:
    """The window's usable labelled rows, as the realised figures use them."""
    labelled = [i for i, lab in enumerate(window.labels) if lab is not None]
    if classes is not None:
        if window.probabilities is None:
            return noise.Labelled()
        codes = metric_contract.class_codes([window.labels[i] for i in labelled], classes)
        return noise.Labelled(codes=codes, proba=window.probabilities[labelled])
    y = np.array([_finite(window.labels[i]) for i in labelled], dtype=float)
    pred = np.array([_finite(window.predictions[i]) for i in labelled], dtype=float)
    return noise.Labelled(y=y, pred=pred)


def _reference_note(manifest: Manifest) -> ReferenceNote:
    """What the version's reference sample was drawn from, for the run record."""
    ref = manifest.reference
    if ref.unseen:
        note = "drawn from rows the model never trained on"
    elif ref.drawn_from == "train+validation":
        note = (
            "in-sample: drawn from the rows the model was fitted on (a version published before "
            "servewatch drew it from unseen rows); its figures look better than fresh traffic"
        )
    else:
        note = (
            "may hold rows the model was fitted on: its figures may look better than fresh traffic"
        )
    return {"drawn_from": ref.drawn_from, "unseen": ref.unseen, "note": note}
