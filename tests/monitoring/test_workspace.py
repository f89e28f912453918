"""Each monitoring run as a snapshot in Evidently's own UI: a real `evidently ui` on a free port
(started as `servewatch monitor ui` would, ended by its pid), checked through its HTTP API and in
the headless Chromium the suite uses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from monitoring.store import MonitorStore
from monitoring.summary import MonitorSummary
from monitoring.workspace import PENDING_DIR, VALUE_TYPE
from predlog.store import PredictionStore
from tests.monitoring.conftest import log_traffic, traffic
from tests.service.conftest import free_port


class EvidentlyUI:
    """`evidently ui` in a subprocess on 127.0.0.1, telemetry off, ended by its pid."""

    def __init__(self, workspace: Path, *, via_servewatch: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd = (
            [sys.executable, "-m", "servewatch", "monitor", "ui", *args]
            if via_servewatch
            else [sys.executable, "-m", "evidently.cli", "ui", *args]
        )
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, "DO_NOT_TRACK": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise RuntimeError(f"evidently ui exited: {out}")
            try:
                if httpx.get(self.url + "/api/version", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("evidently ui did not answer in 90 s")

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def series(self, project: str, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {
            "series_filter": [
                {
                    "tags": [],
                    "metadata": {},
                    "metric": v["metric"],
                    "metric_labels": v["metric_labels"],
                }
                for v in values
            ]
        }
        r = httpx.post(
            f"{self.url}/api/v2/snapshots/{project}/data_series_batch", json=body, timeout=30
        )
        r.raise_for_status()
        series: list[dict[str, Any]] = r.json()["series"]
        return series

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()


@pytest.fixture
def evidently_ui(tmp_path: Path) -> Iterator[EvidentlyUI]:
    ui = EvidentlyUI(tmp_path / "ui-workspace")
    try:
        yield ui
    finally:
        ui.stop()


def three_runs(settings: MonitorSettings, store: PredictionStore) -> list[MonitorSummary]:
    """Three scheduled runs over traffic shifted further each time."""
    out = []
    for i, shift in enumerate((0.0, 1.0, 2.5)):
        log_traffic(
            store, settings.registry, traffic(400, seed=40 + i, shift=shift), at=time.time() - 60
        )
        out.append(run_monitoring(settings=settings, store=store, model="demo", notifiers=[]))
    return out


def test_three_runs_are_three_snapshots_with_tags_and_a_dashboard_over_time(
    msettings: MonitorSettings, store: PredictionStore, evidently_ui: EvidentlyUI
) -> None:
    settings = msettings.model_copy(
        update={"evidently_workspace": evidently_ui.url, "monitor_settle_s": 0.0}
    )
    runs = three_runs(settings, store)
    for s in runs:
        assert s["evidently"]["saved"] is True and s["evidently"]["pending"] == 0, s["evidently"]
    # the run record holds the outcome too
    stored = MonitorStore(store).latest("demo", 3)
    assert {r["summary"]["evidently"]["snapshot_id"] for r in stored} == {
        s["evidently"]["snapshot_id"] for s in runs
    }
    projects = evidently_ui.get("/api/projects")
    assert [p["name"] for p in projects] == ["demo"]  # one project, not one per run
    pid = projects[0]["id"]
    snaps = sorted(evidently_ui.get(f"/api/projects/{pid}/snapshots"), key=lambda s: s["timestamp"])
    assert len(snaps) == 3
    for snap, (stored_run, s) in zip(snaps, zip(reversed(stored), runs, strict=True), strict=True):
        assert snap["id"] == s["evidently"]["snapshot_id"]
        assert {"v1", "scheduled"} <= set(snap["tags"])
        meta = snap["metadata"]
        assert meta["model"] == "demo" and meta["version"] == "1"
        assert meta["servewatch_run_id"] == str(stored_run["id"])
        assert meta["window_end"] and meta["rows"] == "400"
        fired = {a["rule"] for a in s["alerts"]}
        assert {t[len("alert:") :] for t in snap["tags"] if t.startswith("alert:")} == fired
    # the last window drifted: its alert is a tag the UI can filter by
    assert "alert:dataset_drift" in snaps[-1]["tags"] or "alert:out_of_range" in snaps[-1]["tags"]
    # the dashboard: created once with the project, each panel returns a point per run
    dash = evidently_ui.get(f"/api/v2/dashboards/{pid}")
    titles = [p["title"] for p in dash["panels"]]
    assert titles[:3] == ["Share of drifted columns", "Drift score of the top features", "Rows"]
    assert titles[3].startswith(f"{runs[0]['metric']}: realised, estimated, alert threshold")
    for panel in dash["panels"]:
        series = evidently_ui.series(pid, panel["values"])
        assert series, panel["title"]
        for line in series:
            assert len(line["values"]) == 3 and all(v is not None for v in line["values"]), (
                panel["title"],
                line,
            )
    share = evidently_ui.series(pid, dash["panels"][0]["values"])[0]["values"]
    assert share == pytest.approx([s["drift"]["drifted_share"] for s in runs])
    assert share[2] > share[0]
    scores = {
        line["params"]["column"]: line["values"]
        for line in evidently_ui.series(pid, dash["panels"][1]["values"])
    }
    assert scores["x1"] == pytest.approx([s["drift"]["columns"]["x1"]["score"] for s in runs])
    metric = evidently_ui.series(pid, dash["panels"][3]["values"])
    names = {line["params"]["name"] for line in metric}
    assert names == {"realised", "estimated", "threshold"}
    realised = next(line for line in metric if line["params"]["name"] == "realised")["values"]
    assert realised == pytest.approx([s["performance"]["realised"][s["metric"]] for s in runs])
    # each snapshot opens as a report in the UI: Evidently's sections and servewatch's figures
    page = httpx.get(f"{evidently_ui.url}/api/projects/{pid}/{snaps[-1]['id']}/data", timeout=60)
    assert page.status_code == 200
    assert "Data Drift Summary" in page.text and "Rows in the window" in page.text
    assert "Accuracy" in page.text  # the performance section of a labelled window
    # a fourth run neither duplicates the project nor its panels
    log_traffic(store, settings.registry, traffic(300, seed=50), at=time.time() - 60)
    run_monitoring(settings=settings, store=store, model="demo", notifiers=[])
    assert len(evidently_ui.get("/api/projects")) == 1
    assert evidently_ui.get(f"/api/v2/dashboards/{pid}")["panels"] == dash["panels"]


def test_the_project_page_renders_offline_in_a_browser(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    """Runs into a local folder, then `servewatch monitor ui` over it: the dashboard renders in
    Chromium with no console error and nothing fetched beyond the machine."""
    from tests.browser import chromium

    workspace = tmp_path / "evidently"
    settings = msettings.model_copy(
        update={"evidently_workspace": str(workspace), "monitor_settle_s": 0.0}
    )
    runs = three_runs(settings, store)
    assert all(s["evidently"]["saved"] for s in runs)
    ui = EvidentlyUI(workspace, via_servewatch=True)
    try:
        (project,) = ui.get("/api/projects")
        with chromium() as browser:
            from selenium.webdriver.support.ui import WebDriverWait

            browser.set_window_size(1400, 1800)
            browser.get(f"{ui.url}/projects/{project['id']}")
            WebDriverWait(browser, 90).until(
                lambda d: (
                    "Drift score of the top features" in d.find_element("tag name", "body").text
                )
            )
            time.sleep(2)  # the panels' data arrive after their titles
            text = browser.find_element("tag name", "body").text
            console = browser.get_log("browser")
            fetched = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            shot = os.environ.get("SERVEWATCH_SCREENSHOT")
            if shot:  # how docs/evidently-dashboard.png is made
                browser.save_screenshot(shot)
    finally:
        ui.stop()
    errors = [m for m in console if m["level"] == "SEVERE" and "/favicon.ico" not in m["message"]]
    assert errors == [], console
    assert [u for u in fetched if not u.startswith(ui.url)] == []
    for title in ("Share of drifted columns", "Rows"):
        assert title in text


def test_an_unreachable_workspace_keeps_the_snapshots_and_sends_them_later(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here
    down = msettings.model_copy(
        update={"evidently_workspace": f"http://127.0.0.1:{port}", "monitor_settle_s": 0.0}
    )
    log_traffic(store, down.registry, traffic(300, seed=60), at=time.time() - 60)
    first = run_monitoring(settings=down, store=store, model="demo", notifiers=[])
    assert first["status"] == "ok"  # the run itself is fine
    note = first["evidently"]
    assert note["saved"] is False and note["pending"] == 1
    assert "unreachable" in note["error"] and "retried next run" in note["error"]
    assert MonitorStore(store).latest("demo")[0]["summary"]["evidently"] == note
    pending = list((down.monitor_reports_dir / PENDING_DIR / "demo").glob("*.json"))
    assert len(pending) == 1
    log_traffic(store, down.registry, traffic(300, seed=61), at=time.time() - 60)
    second = run_monitoring(settings=down, store=store, model="demo", notifiers=[])
    assert second["evidently"]["pending"] == 2
    # the workspace comes back: the next run sends the two waiting snapshots before its own
    ui = EvidentlyUI(tmp_path / "ui-workspace")
    try:
        up = down.model_copy(update={"evidently_workspace": ui.url})
        log_traffic(store, up.registry, traffic(300, seed=62), at=time.time() - 60)
        third = run_monitoring(settings=up, store=store, model="demo", notifiers=[])
        assert third["evidently"]["saved"] is True
        assert third["evidently"]["sent"] == 3 and third["evidently"]["pending"] == 0
        (project,) = ui.get("/api/projects")
        snaps = ui.get(f"/api/projects/{project['id']}/snapshots")
        ids = sorted(s["metadata"]["servewatch_run_id"] for s in snaps)
        assert ids == sorted(str(r["id"]) for r in MonitorStore(store).latest("demo", 3))
    finally:
        ui.stop()
    assert not list((up.monitor_reports_dir / PENDING_DIR / "demo").glob("*.json"))


def test_pending_snapshots_past_the_retention_are_dropped(tmp_path: Path) -> None:
    from monitoring.workspace import expire

    waiting = tmp_path / "pending"
    waiting.mkdir()
    old, new = waiting / "000000000001.json", waiting / "000000000002.json"
    old.write_text("{}")
    new.write_text("{}")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    assert expire(waiting, None) == 0 and old.exists()  # no retention: kept
    assert expire(waiting, 2.0) == 1
    assert not old.exists() and new.exists()


def test_servewatch_values_carry_their_metric_type(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    """A local workspace: the snapshot file holds Evidently's sections and servewatch's figures;
    retention removes snapshots older than its days."""
    from evidently.ui.workspace import Workspace

    from monitoring import workspace as ws_module

    settings = msettings.model_copy(
        update={"evidently_workspace": str(tmp_path / "ws"), "monitor_settle_s": 0.0}
    )
    log_traffic(store, settings.registry, traffic(300, seed=70), at=time.time() - 60)
    s = run_monitoring(settings=settings, store=store, model="demo", notifiers=[])
    ws = Workspace(str(tmp_path / "ws"))
    (project,) = ws.search_project("demo")
    (sid,) = ws.list_runs(project.id)
    snap = ws.get_run(project.id, sid)
    assert snap is not None
    types = {r.metric_value_location.metric.params["type"] for r in snap.metric_results.values()}
    assert VALUE_TYPE in types
    assert any(t.endswith("ValueDrift") for t in types) and any(
        t.endswith("RowCount") for t in types
    )
    assert any(t.endswith("Accuracy") for t in types)  # labelled: the performance section
    assert s["evidently"]["removed"] == 0
    # retention: a day later with a one-hour retention, the snapshot goes
    removed = ws_module.prune(ws, project.id, 1 / 24, time.time() + 86400)
    assert removed == 1 and list(ws.list_runs(project.id)) == []


def test_a_run_reads_no_other_snapshot_of_the_workspace(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    """Opening a local workspace reads no snapshot: Evidently's `Workspace(path)` parses every
    snapshot of every project (its datasets API loads the folder), so each run cost ~40 ms of
    CPU per snapshot the workspace held, growing without end, and one corrupt snapshot of
    another model failed every model's. Here another model's project holds a cut-short
    snapshot: this model's run still saves its own."""
    from evidently.sdk.models import ProjectModel

    from monitoring.workspace import local_workspace, project_uuid

    location = tmp_path / "ws"
    other = local_workspace(str(location)).add_project(
        ProjectModel(id=project_uuid("other"), name="other")
    )
    snapshots = location / str(other.id) / "snapshots"
    snapshots.mkdir(parents=True)
    (snapshots / "01a2475e-dad1-7e48-b5c6-c378faa5bdad.json").write_text('{"id": "01a24')
    settings = msettings.model_copy(
        update={"evidently_workspace": str(location), "monitor_settle_s": 0.0}
    )
    log_traffic(store, settings.registry, traffic(300, seed=75), at=time.time() - 60)
    s = run_monitoring(settings=settings, store=store, model="demo", notifiers=[])
    assert s["evidently"]["saved"] is True, s["evidently"]
    assert s["evidently"]["project_id"] == str(project_uuid("demo"))


def test_the_dashboard_follows_the_features_without_duplicates_and_keeps_added_panels(
    tmp_path: Path,
) -> None:
    from evidently.sdk.panels import text_panel
    from evidently.ui.workspace import Workspace

    from monitoring.workspace import project_for

    ws = Workspace(str(tmp_path / "ws"))
    first = project_for(ws, "m", ["a", "b"], "roc_auc")
    mine = text_panel("added by hand")
    board = ws.get_dashboard(first)
    board.panels.append(mine)
    ws.save_dashboard(first, board)
    again = project_for(ws, "m", ["a", "b"], "roc_auc")
    assert again == first and len(ws.list_projects()) == 1
    assert ws.get_dashboard(first) == board  # nothing changed: not rewritten
    # the model's features change: the drift-score panel follows, in place
    project_for(ws, "m", ["a", "c"], "roc_auc")
    panels = ws.get_dashboard(first).panels
    assert len(panels) == 5 and panels[-1].title == "added by hand"
    (scores,) = [p for p in panels if p.title == "Drift score of the top features"]
    assert [v.metric_labels["column"] for v in scores.values] == ["a", "c"]
    # a regressor's rules watch no metric any more: its panel goes, the rest stay
    project_for(ws, "m", ["a", "c"], None)
    assert [p.title for p in ws.get_dashboard(first).panels] == [
        "Share of drifted columns",
        "Drift score of the top features",
        "Rows",
        "added by hand",
    ]


def test_a_ui_with_a_secret_takes_writes_only_with_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitoring.workspace import open_workspace, project_for

    monkeypatch.setenv("EVIDENTLY_SECRET", "s3cret-token-for-the-test")
    ui = EvidentlyUI(tmp_path / "ui-workspace")
    try:
        without = MonitorSettings(evidently_workspace=ui.url)
        with pytest.raises(Exception, match="Not enough permissions"):
            project_for(open_workspace(without), "m", ["a"], None)
        with_token = MonitorSettings(
            evidently_workspace=ui.url,
            evidently_token="s3cret-token-for-the-test",  # type: ignore[arg-type]
        )
        project_for(open_workspace(with_token), "m", ["a"], None)
        assert [p["name"] for p in ui.get("/api/projects")] == ["m"]
    finally:
        ui.stop()


def test_monitor_ui_refuses_a_remote_workspace_with_a_clear_error() -> None:
    from typer.testing import CliRunner

    from servewatch.cli import app

    res = CliRunner().invoke(app, ["monitor", "ui", "--workspace", "http://evidently:8000"])
    assert res.exit_code == 2
    assert "Evidently UI at http://evidently:8000" in res.output
    assert "no local workspace folder to serve" in res.output


def test_an_unreadable_pending_file_is_set_aside_and_the_rest_are_sent(tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    from monitoring.workspace import empty_snapshot, project_for, send_pending

    ws = Workspace(str(tmp_path / "ws"))
    project = project_for(ws, "m", ["a"], None)
    waiting = tmp_path / "pending"
    waiting.mkdir()
    (waiting / "000000000001.json").write_text('{"report": {"ite')  # cut short
    source = tmp_path / "source.json"
    source.write_text(empty_snapshot().json())
    (waiting / "000000000002.json").write_text(source.read_text())
    sent = send_pending(ws, project, waiting)
    assert list(sent) == ["000000000002"] and len(ws.list_runs(project)) == 1
    assert [p.name for p in waiting.iterdir()] == ["000000000001.bad"]


def test_two_runs_at_once_send_each_pending_snapshot_once(tmp_path: Path) -> None:
    """A manual run beside the scheduled one: each file is claimed before it is sent (review
    finding: both sent the same files and the loser failed on a file already gone)."""
    import threading

    from evidently.ui.workspace import Workspace

    from monitoring.workspace import empty_snapshot, project_for, send_pending

    ws = Workspace(str(tmp_path / "ws"))
    project = project_for(ws, "m", ["a"], None)
    waiting = tmp_path / "pending"
    waiting.mkdir()
    for i in range(6):
        (waiting / f"{i:012d}.json").write_text(empty_snapshot().json())
    gate = threading.Barrier(2)
    results: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        gate.wait()
        try:
            results.append(send_pending(ws, project, waiting))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sent = [stem for r in results for stem in r]
    assert sorted(sent) == [f"{i:012d}" for i in range(6)]  # every file once, none twice
    assert len(ws.list_runs(project)) == 6 and list(waiting.iterdir()) == []


def test_a_failed_send_releases_its_claim_and_a_dead_runs_claim_is_released_later(
    tmp_path: Path,
) -> None:
    from evidently.ui.workspace import Workspace

    from monitoring.workspace import STALE_CLAIM_S, empty_snapshot, project_for, send_pending

    ws = Workspace(str(tmp_path / "ws"))
    project = project_for(ws, "m", ["a"], None)
    waiting = tmp_path / "pending"
    waiting.mkdir()
    (waiting / "000000000001.json").write_text(empty_snapshot().json())

    class Refusing:
        def add_run(self, *_: object) -> None:
            raise ConnectionError("workspace down")

    with pytest.raises(ConnectionError):
        send_pending(Refusing(), project, waiting)  # type: ignore[arg-type]
    assert [p.name for p in waiting.iterdir()] == ["000000000001.json"]
    # a run that died holding a claim: released once the claim is stale, then sent
    dead = waiting / "000000000002.sending"
    dead.write_text(empty_snapshot().json())
    old = time.time() - STALE_CLAIM_S - 60
    os.utime(dead, (old, old))
    sent = send_pending(ws, project, waiting)
    assert sorted(sent) == ["000000000001", "000000000002"] and list(waiting.iterdir()) == []


def test_a_project_file_being_written_by_another_run_fails_no_model(tmp_path: Path) -> None:
    """Evidently writes a project's file in place, so a run creating one model's project while
    another model's run looks for its own leaves that run reading half a file. The lookup reads
    the model's own project by its derived id alone; a new model's project is still made when
    another's file cannot be read (a legacy project found by name otherwise)."""
    from evidently.sdk.models import ProjectModel

    from monitoring.workspace import local_workspace, project_for, project_uuid

    location = tmp_path / "ws"
    ws = local_workspace(str(location))
    mine = project_for(ws, "mine", ["a"], "roc_auc")
    legacy = ws.add_project(ProjectModel(id=uuid.uuid4(), name="legacy")).id
    other = ws.add_project(ProjectModel(id=project_uuid("other"), name="other"))
    assert project_for(ws, "legacy", ["a"], "roc_auc") == uuid.UUID(str(legacy))
    (location / str(other.id) / "metadata.json").write_text('{"id": "01a24')  # mid-write
    assert project_for(ws, "mine", ["a"], "roc_auc") == mine == project_uuid("mine")
    assert project_for(ws, "new", ["a"], "roc_auc") == project_uuid("new")
    assert ws.get_project(project_uuid("new")) is not None
