"""The monitoring summary's shape: what a run returns, stores as JSON and serves over HTTP.

TypedDicts rather than classes because the summary *is* JSON: a row of `sw_monitor_runs`,
`summary.json` in the report folder and the body of `GET /v1/models/{name}/monitoring`. The
types describe that JSON; they add no key and drop none, and building a summary from them gives
the same bytes as before they existed.

Read-back is tolerant by construction: a summary read from the store is the stored JSON as it
is. Keys marked `NotRequired` can be missing there, and every reader of stored runs (gauges,
routes, the next run's window) uses `.get` for them:

- a run that failed part-way is stored with `status: "failed"`, its `error` and `finished_at`,
  and only the parts computed before it failed (often none after `test_score`);
- a run with fewer rows than `min_rows` has no `drift`, `prediction_drift` or `explanation_drift`;
- summaries stored by older releases lack `status`, `window.until`, `canary`, `shadow`,
  `explanation_drift`, `performance.unusable_labels` and `performance.estimate_note`.

Metric values are floats, NaN included, in a fresh summary (e.g. ROC AUC of a single-class
window). JSON has no NaN: the store writes it as null, so a summary read back may hold None where
these types say float; the gauges skip such values.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

REPORT_FILE = "report.html"
"""A run's Evidently page in its report folder (runs of older releases stored `drift.html`)."""

Metrics = dict[str, float]
"""Metric name -> value (the metric contract's names: accuracy, roc_auc, rmse, ...)."""

Severity = Literal["info", "warning", "critical"]
AlertStatus = Literal["firing", "resolved"]
RunStatus = Literal["ok", "failed"]


class WindowSpan(TypedDict):
    """The window a run looked at: prediction times of its rows, and the ingest-time bounds."""

    start: float | None
    """Earliest prediction time (`created_at`) among the rows."""
    end: float | None
    """Latest prediction time among the rows."""
    since: float | None
    """Ingest-time lower bound (exclusive); None: from the start of the log (or `--last`)."""
    until: NotRequired[float]
    """Ingest-time upper bound (inclusive). Older releases: absent."""
    labels_since: NotRequired[float | None]
    """Labels judged are those that met their prediction after this (exclusive) and up to
    `labels_until`, whenever the prediction was made; None: from the first. Manual runs: None
    (they judge their own rows' labels). Older releases: absent."""
    labels_until: NotRequired[float | None]
    """Where the next scheduled run's labels start (stays at `labels_since` when fewer than
    `min_labelled_rows` labels came: they are carried)."""
    carried: NotRequired[bool]
    """Fewer than `min_rows` rows: not judged, carried into the next scheduled window."""


class ColumnDriftSummary(TypedDict):
    """One column's drift verdict (monitoring.drift.ColumnDrift as JSON)."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftSummary(TypedDict):
    drifted_share: float
    drifted_count: int
    columns: dict[str, ColumnDriftSummary]
    """Per input feature; the prediction column is in `prediction_drift` instead."""


class PredictionDrift(TypedDict, total=False):
    """Drift of the prediction column; empty when Evidently returned no verdict for it.

    Classifiers also carry the class shares (class text -> share) on both samples.
    """

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    reference_shares: dict[str, float]
    current_shares: dict[str, float]


class QualitySummary(TypedDict):
    """Feature name -> share of the window's rows."""

    missing_share: dict[str, float]
    missing_increase: dict[str, float]
    """Missing share above the reference's (never negative)."""
    unseen_category_share: dict[str, float]
    """Categorical features with known categories only."""
    out_of_range_share: dict[str, float]
    """Numeric features with a training range only."""


class NoiseBand(TypedDict):
    """How much worse than its baseline a healthy window of `rows` rows scores by chance."""

    rows: int
    widths: Metrics
    """Metric -> the band's width, in the metric's units (a worsening, always >= 0)."""


class NoiseSummary(TypedDict):
    """The noise bands of a run's performance figures (`monitoring.noise`)."""

    confidence: float
    """A healthy window stays inside its band this often."""
    source: Literal["unseen", "window"]
    """unseen: bootstrap of the version's reference rows it never trained on; window: the
    window's own spread (versions whose reference is in-sample)."""
    note: str
    realised: NoiseBand | None
    estimated: NoiseBand | None


class ReferenceNote(TypedDict):
    """What the version's reference sample was drawn from (the manifest's `reference`)."""

    drawn_from: str
    unseen: bool
    """False: rows the model was fitted on (versions published before issue 33, imports)."""
    note: str


class Baseline(TypedDict):
    """What realised performance is judged against when the version carries it (manifest
    `reference.baseline`): the watched metric on its test rows and its train and validation rows
    predicted out of fold, more unseen rows than the test score alone."""

    score: float
    rows: int
    drawn_from: str


class PerformanceSummary(TypedDict):
    realised: Metrics | None
    """On the labelled rows; None with fewer usable labels than a metric needs (or none)."""
    estimated: Metrics | None
    """Label-free estimate from the calibrated probabilities (classifiers only)."""
    reference_estimated: Metrics | None
    """The same estimate on the reference sample, for comparison."""
    estimate_note: NotRequired[str]
    """Why there is no estimate (regressors, or no logged probabilities)."""
    unusable_labels: NotRequired[int]
    """Labels that are no class of the version (or not finite): counted, left out. Always
    present in fresh summaries; absent in older releases'."""
    realised_rows: NotRequired[int]
    """Labelled rows the realised figures were computed on; present when `realised` is."""
    undefined: NotRequired[dict[str, str]]
    """Realised metrics the labels cannot define (NaN in `realised`), with why: e.g. ROC AUC
    when the labels hold one class."""
    noise: NotRequired[NoiseSummary]
    """The noise bands of the figures above; absent in older releases' summaries."""


class CanaryReport(TypedDict):
    """The staging version's realised performance beside production's (canary traffic)."""

    version: int
    rows: int
    """The canary's predictions in the run's rows window."""
    labelled_rows: int
    """Its usable labels that met their prediction since it was last judged (its labels cursor,
    `labels_since`), whenever the prediction was made."""
    labels_since: float | None
    carried: NotRequired[bool]
    """Too few labels on either side: not judged, the canary's labels carried to the next run."""
    realised: NotRequired[float]
    """The judged figures are present only when both sides have the metric on enough labels."""
    production: NotRequired[float]
    worse_by: NotRequired[float]
    limit: NotRequired[float]
    """`alerts.drop_bound` from production's figure: beyond the band and possibly `max_drop`."""
    band: NotRequired[float]
    """The noise band of the difference (the canary's rows against production's)."""
    worse: NotRequired[bool]
    withdrawn: NotRequired[bool]
    """Present when `worse`: whether the staging alias was cleared."""
    error: NotRequired[str]
    """Why the alias could not be cleared (a read-only registry)."""


class ShadowReport(TypedDict):
    """How often the shadow (staging) version agrees with production, and both scores."""

    shadow_version: int
    production_version: int
    rows: int
    agreement: float
    production_realised: NotRequired[Metrics]
    """The realised figures and `labelled_rows` are present when some shadowed rows have labels."""
    shadow_realised: NotRequired[Metrics]
    labelled_rows: NotRequired[int]


class LateLabels(TypedDict):
    """Labels that met predictions of another, no longer monitored version of the model since its
    last scheduled run: that version's realised figures on them (reported, not alerted on)."""

    version: int
    labelled_rows: int
    unusable_labels: int
    realised: Metrics | None


class FeatureContribution(TypedDict):
    """Mean |contribution| of one feature on the reference sample and on the window."""

    reference: float
    current: float
    change: float
    band: NotRequired[float]
    """How far `change` strays by chance (at the rules' confidence); absent in older summaries."""


class ExplanationDrift(TypedDict):
    method: str
    features: dict[str, FeatureContribution]
    rows: NotRequired[dict[str, int]]
    """Rows explained on each side: {"reference": n, "current": m}."""


class AlertDict(TypedDict):
    """monitoring.alerts.Alert as JSON: in `alerts`, `transitions` and notifier payloads."""

    model: str
    version: int
    rule: str
    status: AlertStatus
    severity: Severity
    value: float | None
    threshold: float | None
    message: str
    since: float | None


class AlertState(TypedDict):
    """Hysteresis state of one rule for one model version (a row of `sw_monitor_alerts`)."""

    active: bool
    streak: int
    """Consecutive runs disagreeing with `active` so far."""
    since: float | None
    """When the alert started firing; None while it is not active."""


class WorkspaceRecord(TypedDict, total=False):
    """What became of a run's snapshot in the Evidently workspace."""

    workspace: str
    project_id: str
    snapshot_id: str
    saved: bool
    """This run's snapshot is in the workspace."""
    sent: int
    """Snapshots this run sent (its own and earlier runs' pending ones)."""
    pending: int
    """The model's snapshots still waiting for the workspace after this run."""
    removed: int
    """Snapshots removed by retention in this run."""
    error: str


class MonitorSummary(TypedDict):
    """One monitoring run. Keys are listed in the order a run writes them."""

    model: str
    version: int
    status: NotRequired[RunStatus]
    """Always written since runs can fail and be recorded; absent in older releases' (ok)."""
    manual: NotRequired[bool]
    """A `--since`/`--last` run: moves no scheduled window, changes no alert state, notifies
    no one; its `alerts` are what its window breaches. Older releases: absent."""
    started_at: float
    window: WindowSpan
    rows: int
    """Rows the run looked at (after sampling down to the cap)."""
    rows_in_window: int
    """Rows in the window before sampling."""
    labelled_rows: int
    metric: str | None
    """The version's objective metric, if its manifest names one."""
    test_score: float | None
    baseline: NotRequired[Baseline]
    """The realised rules' baseline in place of `test_score`; absent for versions without one."""
    reference: NotRequired[ReferenceNote]
    """What the reference sample was drawn from; absent in older releases' summaries."""
    drift: NotRequired[DriftSummary]
    prediction_drift: NotRequired[PredictionDrift]
    quality: NotRequired[QualitySummary]
    performance: NotRequired[PerformanceSummary]
    canary: NotRequired[CanaryReport | None]
    """None when no other version is at the staging alias."""
    shadow: NotRequired[ShadowReport]
    explanation_drift: NotRequired[ExplanationDrift]
    late_labels: NotRequired[list[LateLabels]]
    """Scheduled runs: late labels of the model's other versions, when some came."""
    alerts: NotRequired[list[AlertDict]]
    """Alerts firing after this run."""
    transitions: NotRequired[list[AlertDict]]
    """Alerts that fired or resolved with this run (what was notified)."""
    notifier_errors: NotRequired[list[str]]
    error: NotRequired[str]
    """Failed runs: the reason."""
    finished_at: NotRequired[float]
    seconds: NotRequired[float]
    report_dir: NotRequired[str]
    """Only in the stored row and the returned summary, not in summary.json itself."""
    evidently: NotRequired[WorkspaceRecord]
    """What became of the run's Evidently snapshot (see monitoring.workspace), added after the
    run is stored: absent when the workspace is off, in failed runs and older releases' runs."""


class StoredRun(TypedDict):
    """A row of `sw_monitor_runs` as MonitorStore.latest returns it."""

    id: int
    model: str
    version: int
    finished_at: float
    window_end: float
    """Where the next run's window starts (`window.until` of the run)."""
    rows: int
    summary: MonitorSummary
    report_dir: str | None


class RunHistoryEntry(TypedDict):
    """One stored run in the history of `GET /v1/models/{name}/monitoring`."""

    finished_at: float
    version: int
    rows: int
    drifted_share: float | None
    """None when the run judged no drift (too few rows, failed, or drift not computed)."""
    alerts: list[str]
    """Rules firing after the run."""


class MonitoringResponse(TypedDict):
    """The body of `GET /v1/models/{name}/monitoring`."""

    latest: MonitorSummary
    """The newest stored summary, as stored."""
    history: list[RunHistoryEntry]
    """The newest runs first, the latest included."""
