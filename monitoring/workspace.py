"""Every monitoring run as a snapshot in an Evidently workspace (a folder, or an Evidently UI).

One project per model, named after it, with a dashboard of panels over time; each run's snapshot
holds Evidently's drift, data summary and (with labels) performance results of that run, plus
servewatch's own figures (rows, the watched metric realised and estimated, its alert threshold) as
`ServewatchValue` results, and the version, window, alert states and run id as tags and metadata.

A snapshot is first written to the pending folder, then sent: a workspace that cannot be reached
leaves it there, and the next run of the model sends it first. Nothing here fails a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import first_line
from monitoring import alerts as alerting
from monitoring.config import MonitorSettings
from monitoring.summary import MonitorSummary, WorkspaceRecord

if TYPE_CHECKING:
    from evidently.core.serialization import SnapshotModel
    from evidently.sdk.models import DashboardModel, DashboardPanelPlot
    from evidently.ui.workspace import WorkspaceBase

    from monitoring.store import MonitorStore

log = logging.getLogger("servewatch.monitor")

SNAPSHOT_FILE = "evidently-snapshot.json"
"""Evidently's sections of a run (drift, performance, data summary) merged, in its report folder."""
PENDING_DIR = ".evidently-pending"
# a pending snapshot claimed (renamed .sending) by a run that died is released after this long
STALE_CLAIM_S = 3600.0
"""Under the reports folder: `<model>/<run id>.json`, snapshots not yet in the workspace."""
VALUE_TYPE = "evidently:metric_v2:ServewatchValue"
"""The metric type of servewatch's own figures in a snapshot (`name` says which)."""
TOP_FEATURES = 8
"""Features on the drift-score panel: the ones that matter most to the model (mean |contribution|
on its reference sample), else the first in its schema."""
PANELS = ("drift-share", "drift-score", "rows", "metric")
"""servewatch's panels, in order; the metric panel only when the rules watch a metric."""
NAMESPACE = uuid.UUID("5e7a1c4e-3b0d-4f1e-9a55-0b7c2d9e8f10")
"""Panel ids are uuid5(NAMESPACE, model/panel): the same panel keeps its id across updates."""


def enabled(settings: MonitorSettings) -> bool:
    return bool(settings.evidently_workspace.strip())


def remote(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def open_workspace(settings: MonitorSettings) -> WorkspaceBase:
    """The configured workspace: a local folder (created), or an Evidently UI by URL."""
    from evidently.ui.workspace import RemoteWorkspace

    location = settings.evidently_workspace.strip()
    if remote(location):
        token = settings.evidently_token.get_secret_value() if settings.evidently_token else None
        return RemoteWorkspace(location.rstrip("/"), secret=token)
    Path(location).mkdir(parents=True, exist_ok=True)
    return local_workspace(location)


def local_workspace(location: str) -> WorkspaceBase:
    """Evidently's local `Workspace` on `location`, opened without reading its snapshots.

    Evidently 0.7's `Workspace(path)` also builds the datasets API, whose project manager loads
    the folder whole: it parses every snapshot of every project (about 40 ms of CPU for each of
    ours, ~480 KB), and a run opens the workspace once. So each run cost more the more runs the
    workspace held, for every model (a fleet's 50 models every 10 minutes add 7,200 a day), and
    one corrupt snapshot anywhere failed every model's. A run only needs the folder's project,
    dashboard and snapshot files, which `Workspace`'s own methods read and write one at a time
    through `state`: this opens those and builds the rest (datasets, artifacts, prompts,
    configs: servewatch uses none) only if something asks for it."""
    from monitoring.localspace import FileWorkspace

    return FileWorkspace(location)


def write_parts(path: Path, snapshots: Iterable[Any]) -> None:
    """Evidently's snapshots of one run (drift, performance, summary) merged into one file; a
    failure is logged (the run's snapshot then holds servewatch's figures only), never raised."""
    try:
        models = [s.to_snapshot_model() for s in snapshots]
        if not models:
            return
        merged = models[0].copy(deep=True)
        for m in models[1:]:
            merged.metric_results.update(m.metric_results)
            merged.top_level_metrics.extend(m.top_level_metrics)
            merged.widgets.extend(m.widgets)
            merged.tests_widgets.extend(m.tests_widgets)
        path.write_text(_dumps(merged), encoding="utf-8")
    except Exception as exc:
        log.warning("evidently sections of the run not kept for its snapshot: %s", exc)


def _dumps(snapshot: SnapshotModel) -> str:
    """A snapshot as JSON the way Evidently's workspace writes it (numpy values included)."""
    from evidently.legacy.utils import NumpyEncoder

    return json.dumps(snapshot.dict(), cls=NumpyEncoder)


def run_snapshot(
    summary: MonitorSummary, run_id: int, report_dir: Path | None, rules: alerting.AlertRules
) -> SnapshotModel:
    """The run's snapshot: Evidently's sections from its report folder (none when the window was
    too small to judge), servewatch's figures, and the run's tags and metadata."""
    from evidently.core.metric_types import MetricConfig, SingleValue, get_default_render
    from evidently.core.serialization import SnapshotModel

    parts = report_dir / SNAPSHOT_FILE if report_dir is not None else None
    if parts is not None and parts.is_file():
        snap = SnapshotModel.parse_raw(parts.read_text(encoding="utf-8"))
    else:
        snap = empty_snapshot()
    for name, value, labels, title in _figures(summary, rules):
        params = {"type": VALUE_TYPE, "name": name, **labels}
        metric_id = ":".join(["servewatch", name, *labels.values()])
        result = SingleValue(display_name=title, value=value)
        result.set_metric_location(MetricConfig(metric_id=metric_id, params=params))
        result.widget = get_default_render(title, result)
        snap.metric_results[metric_id] = result
        snap.top_level_metrics.append(metric_id)
        snap.widgets.extend(result.widget)
    model, version = summary["model"], summary["version"]
    window = summary["window"]
    firing = sorted(a["rule"] for a in summary.get("alerts", []))
    states = {a["rule"]: a["status"] for a in summary.get("transitions", [])}
    for rule in firing:
        states.setdefault(rule, "firing")
    snap.name = f"{model} v{version} run {run_id}"
    snap.timestamp = datetime.fromtimestamp(summary["started_at"], UTC).replace(tzinfo=None)
    snap.tags = [
        f"v{version}",
        "manual" if summary.get("manual") else "scheduled",
        *(f"alert:{rule}" for rule in firing),
    ]
    snap.metadata = {
        "model": model,
        "version": str(version),
        "servewatch_run_id": str(run_id),
        "window_start": _iso(window["start"]),
        "window_end": _iso(window["end"]),
        "rows": str(summary["rows"]),
        "alerts": ",".join(f"{r}={s}" for r, s in sorted(states.items())) or "none",
    }
    return snap


def empty_snapshot() -> SnapshotModel:
    """A snapshot with no result yet (a window too small for Evidently's sections)."""
    from evidently.core.serialization import ReportModel, SnapshotModel

    return SnapshotModel(
        report=ReportModel(items=[]),
        name=None,
        timestamp=datetime.now(),
        metadata={},
        tags=[],
        metric_results={},
        top_level_metrics=[],
        widgets=[],
        tests_widgets=[],
    )


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


Figure = tuple[str, float, dict[str, str], str]
"""One of servewatch's figures of a run: its name, value, other labels, and title."""


def _figures(summary: MonitorSummary, rules: alerting.AlertRules) -> list[Figure]:
    """servewatch's figures of a run (NaN and None left out). Their labels stay the same from
    run to run, so each is one series over time (Evidently's own drift metrics carry the run's
    test thresholds among their parameters: a new series at every run)."""
    out: list[Figure] = [
        ("rows", float(summary["rows"]), {}, "Rows in the window"),
        ("labelled_rows", float(summary["labelled_rows"]), {}, "Labelled rows"),
    ]
    drift = summary.get("drift")
    if drift:
        out.append(("drifted_share", float(drift["drifted_share"]), {}, "Share of drifted columns"))
        for column, d in drift["columns"].items():
            score = float(d["score"])
            if score == score:
                out.append(("drift_score", score, {"column": column}, f"Drift score of {column}"))
    metric = summary.get("metric")
    perf = summary.get("performance")
    if metric:
        realised, estimated = (perf["realised"], perf["estimated"]) if perf else (None, None)
        for kind, scores in (("realised", realised), ("estimated", estimated)):
            value = (scores or {}).get(metric)
            if isinstance(value, int | float) and value == value:
                out.append((kind, float(value), {"metric": metric}, f"{metric} ({kind})"))
        for c in alerting.conditions(summary, rules):
            if c.rule == "realised_performance" and c.threshold is not None:
                title = f"{metric} alert threshold"
                out.append(("threshold", float(c.threshold), {"metric": metric}, title))
    return out


def panels(model: str, features: list[str], metric: str | None) -> list[DashboardPanelPlot]:
    """The project's panels over time, with ids that stay the same for the same model."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    def value(name: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric=VALUE_TYPE, metric_labels={"name": name, **labels})

    out = [
        line_plot_panel(
            "Share of drifted columns",
            [value("drifted_share", "share drifted")],
            description="features and the prediction, judged at one false-alarm rate per run",
            size="half",
        ),
        line_plot_panel(
            "Drift score of the top features",
            [value("drift_score", f, column=f) for f in features],
            description="p-value of each column's test (lower: drift), or the method's distance",
            size="half",
        ),
        line_plot_panel(
            "Rows",
            [value("rows", "rows in the window"), value("labelled_rows", "labelled rows")],
            size="half",
        ),
    ]
    if metric:
        out.append(
            line_plot_panel(
                f"{metric}: realised, estimated, alert threshold",
                [
                    value("realised", "realised (labelled rows)", metric=metric),
                    value("estimated", "estimated (label-free)", metric=metric),
                    value("threshold", "alert threshold", metric=metric),
                ],
                size="half",
            )
        )
    for p, key in zip(out, PANELS, strict=False):
        p.id = panel_id(model, key)
    return out


def panel_id(model: str, key: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{model}/{key}")


def dashboard(
    current: DashboardModel, model: str, ours: list[DashboardPanelPlot]
) -> DashboardModel | None:
    """`current` with servewatch's panels replaced by `ours` (panels people added are kept), or
    None when it already holds them as they are."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    mine = {panel_id(model, key) for key in PANELS}
    kept = [p for p in current.panels if p.id not in mine]
    panels_ = [*ours, *kept]
    if [p.dict() for p in current.panels] == [p.dict() for p in panels_]:
        return None
    tabs = [
        DashboardTabModel(id=t.id, title=t.title, panels=[i for i in t.panels if i not in mine])
        for t in current.tabs
    ]
    return DashboardModel(tabs=tabs, panels=panels_)


def features_of(summary: MonitorSummary, manifest_features: list[str]) -> list[str]:
    """The features the drift-score panel shows (see TOP_FEATURES)."""
    explanation = summary.get("explanation_drift")
    weights = {f: c["reference"] for f, c in explanation["features"].items()} if explanation else {}
    order = sorted(manifest_features, key=lambda f: -weights.get(f, 0.0))
    return order[:TOP_FEATURES]


def project_for(
    ws: WorkspaceBase, model: str, features: list[str], metric: str | None
) -> uuid.UUID:
    """The model's project (created with its dashboard the first time), its dashboard brought up
    to date. A new project's id is derived from the model's name, so two runs that create it at
    once (sharded CronJobs) write the same project, never two."""
    from evidently.sdk.models import ProjectModel

    project_id = _existing_project(ws, model)
    if project_id is None:
        description = f"servewatch monitoring runs of the model {model}"
        project_id = ws.add_project(
            ProjectModel(id=project_uuid(model), name=model, description=description)
        ).id
    updated = dashboard(ws.get_dashboard(project_id), model, panels(model, features, metric))
    if updated is not None:
        ws.save_dashboard(project_id, updated)
    return uuid.UUID(str(project_id))


def _existing_project(ws: WorkspaceBase, model: str) -> Any:
    """The model's project id if it has one: first by its derived id, which reads that project's
    file alone (a search reads every project's, and another run may be writing one: Evidently
    writes them in place), then by name for projects made before ids were derived."""
    own = project_uuid(model)
    try:
        if ws.get_project(own) is not None:
            return own
    except ValueError:  # its file half-written by a run creating it now: the id is ours
        return own
    except Exception:  # noqa: BLE001 - a remote UI answers an unknown id with an error
        pass
    for attempt in range(3):
        try:
            found = sorted(ws.search_project(model), key=lambda p: str(p.id))
            return found[0].id if found else None
        except ValueError as exc:  # another model's project file being written: read again
            if attempt == 2:
                log.warning("%s: a project file of the workspace is unreadable (%s)", model, exc)
            else:
                time.sleep(0.2)
    return None


def project_uuid(model: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"project/{model}")


def pending_dir(settings: MonitorSettings, model: str) -> Path:
    return settings.monitor_reports_dir / PENDING_DIR / model


def prune(ws: WorkspaceBase, project_id: uuid.UUID, days: float | None, now: float) -> int:
    """Remove the project's snapshots added more than `days` ago (by the time in their id, a
    UUIDv7 in Evidently 0.7; other ids are left alone)."""
    if days is None:
        return 0
    cutoff_ms = (now - days * 86400) * 1000
    removed = 0
    for sid in ws.list_runs(project_id):
        u = uuid.UUID(str(sid))
        if u.version == 7 and (u.int >> 80) < cutoff_ms:
            ws.delete_run(project_id, sid)
            removed += 1
    return removed


def record(
    settings: MonitorSettings,
    mstore: MonitorStore,
    run_id: int,
    summary: MonitorSummary,
    report_dir: Path | None,
    features: list[str],
) -> WorkspaceRecord | None:
    """Save a committed run's snapshot (and the model's pending ones) to the workspace, apply the
    retention, and note the outcome in the run's record. Never raises: a run is never failed by
    its snapshot."""
    if not enabled(settings):
        return None
    location = settings.evidently_workspace.strip()
    out: WorkspaceRecord = {"workspace": location if remote(location) else str(Path(location))}
    model = summary["model"]
    waiting = pending_dir(settings, model)
    try:
        rules = alerting.load_rules(settings.alert_rules)
        snap = run_snapshot(summary, run_id, report_dir, rules)
        waiting.mkdir(parents=True, exist_ok=True)
        tmp = waiting / f".{run_id}.json.tmp"
        tmp.write_text(_dumps(snap), encoding="utf-8")
        tmp.rename(waiting / f"{run_id:012d}.json")
    except Exception as exc:
        out["saved"] = False
        out["error"] = f"snapshot not built: {type(exc).__name__}: {exc}"[:500]
        log.warning("evidently snapshot of %s run %s not built: %s", model, run_id, exc)
        return _note(mstore, run_id, summary, out)
    out["saved"] = False
    try:
        ws = open_workspace(settings)
        metric = summary.get("metric")
        project_id = project_for(ws, model, features_of(summary, features), metric)
        out["project_id"] = str(project_id)
        sent = send_pending(ws, project_id, waiting)
        mine = sent.get(f"{run_id:012d}")
        if mine is not None:
            out["snapshot_id"] = mine
            out["saved"] = True
        out["sent"] = len(sent)
        out["removed"] = prune(ws, project_id, _retention_days(settings), time.time())
    except Exception as exc:
        reason = f"{type(exc).__name__}: {first_line(exc, None)}"[:300]
        out["error"] = f"workspace unreachable or refused the snapshot ({reason}); retried next run"
        log.warning("evidently workspace %s: %s", location, reason)
    out["pending"] = len(list(waiting.glob("*.json"))) - expire(waiting, _retention_days(settings))
    return _note(mstore, run_id, summary, out)


def send_pending(ws: WorkspaceBase, project_id: uuid.UUID, waiting: Path) -> dict[str, str]:
    """Send the pending snapshots, oldest first: file stem -> snapshot id. Each file is claimed
    by renaming it `.sending` first, so two runs of one model at once (a manual run beside the
    schedule) never send one twice; a claim older than `STALE_CLAIM_S` (its run died) is
    released. A file that is not a snapshot (cut short by a full disk) is renamed `.bad` and
    skipped, never blocking the rest; a refused or failed send raises and leaves it (released)
    and the newer ones waiting."""
    from evidently.core.report import Snapshot
    from evidently.core.serialization import SnapshotModel

    now = time.time()
    for claimed in waiting.glob("*.sending"):
        with contextlib.suppress(OSError):
            if claimed.stat().st_mtime < now - STALE_CLAIM_S:
                claimed.rename(claimed.with_suffix(".json"))
    sent: dict[str, str] = {}
    for path in sorted(waiting.glob("*.json")):
        claim = path.with_suffix(".sending")
        try:
            path.rename(claim)
        except FileNotFoundError:
            continue  # another run claimed it
        try:
            snapshot = SnapshotModel.parse_raw(claim.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            log.warning("pending evidently snapshot %s unreadable, set aside: %s", path, exc)
            claim.rename(path.with_suffix(".bad"))
            continue
        try:
            ref = ws.add_run(project_id, Snapshot.load_model(snapshot))
        except BaseException:
            claim.rename(path)
            raise
        claim.unlink()
        sent[path.stem] = str(ref.id)
    return sent


def expire(waiting: Path, days: float | None, now: float | None = None) -> int:
    """Drop pending snapshots older than the retention (a workspace down for longer than that
    would only have them removed on arrival): the pending folder is bounded too."""
    if days is None:
        return 0
    cutoff = (now if now is not None else time.time()) - days * 86400
    dropped = 0
    for path in waiting.glob("*.json"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            dropped += 1
    if dropped:
        log.warning(
            "%d pending evidently snapshot(s) in %s dropped: past retention", dropped, waiting
        )
    return dropped


def _retention_days(settings: MonitorSettings) -> float | None:
    return settings.evidently_retention_days or settings.log_retention_days


def _note(
    mstore: MonitorStore, run_id: int, summary: MonitorSummary, out: WorkspaceRecord
) -> WorkspaceRecord:
    summary["evidently"] = out
    try:
        mstore.update_summary(run_id, summary)
    except Exception as exc:  # the run is stored; only this note is missing from it
        log.warning("run %s: workspace outcome not recorded: %s", run_id, exc)
    return out
