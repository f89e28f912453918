"""The HTML report: drift, Evidently's performance section on labels, a data summary, offline.

The page is opened by Debian's chromium over real HTTP from `servewatch serve`: it must render
without console errors, fetch nothing beyond the service, and show what Evidently users expect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from monitoring.config import MonitorSettings
from monitoring.routes import make_router
from monitoring.runner import run_monitoring
from monitoring.store import MonitorStore
from predlog.store import PredictionStore
from service.config import Settings
from service.main import create_app
from tests.browser import chromium
from tests.monitoring.conftest import log_traffic, traffic
from tests.service.conftest import Server

PERFORMANCE = "Classification performance (labelled rows)"


def evidently_values(path: Path) -> dict[str, Any]:
    """Evidently's metric values by type (Accuracy, Precision, ...) from its JSON."""
    data = json.loads(path.read_text())
    return {m["config"]["type"].rsplit(":", 1)[-1]: m["value"] for m in data["metrics"]}


def test_the_report_renders_offline_in_a_browser_with_drift_performance_and_summary(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    frame = traffic(500, seed=5, shift=2.0)
    log_traffic(store, msettings.registry, frame)
    summary = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    report = Path(summary["report_dir"])
    # Evidently scored the same labelled rows with the same positive class as servewatch did
    values = evidently_values(report / "evidently-performance.json")
    realised = summary["performance"]["realised"]
    assert realised is not None
    assert values["Accuracy"] == pytest.approx(realised["accuracy"])
    assert values["Precision"] == pytest.approx(realised["precision"])
    assert values["RocAuc"] == pytest.approx(realised["roc_auc"])
    html = (report / "report.html").read_text()
    assert "<script src=" not in html and "<link" not in html  # script and font are inline
    noise = summary["performance"]["noise"]
    assert noise["realised"] is not None and noise["estimated"] is not None
    rows = noise["realised"]["rows"]
    band = f"{noise['realised']['widths']['roc_auc']:.3g} worse at most ({rows:,} rows)"
    assert band in html and "Performance with its noise bands" in html

    server = Server(
        {
            "SERVEWATCH_REGISTRY": str(msettings.registry),
            "SERVEWATCH_DATABASE_URL": store.url,
            "SERVEWATCH_SPOOL_DIR": str(tmp_path / "spool"),
            "SERVEWATCH_MONITOR_REPORTS_DIR": str(msettings.monitor_reports_dir),
            "SERVEWATCH_MONITOR_INTERVAL": "0",
        }
    )
    try:
        with chromium() as browser:
            from selenium.webdriver.support.ui import WebDriverWait

            browser.get(f"{server.url}/v1/models/demo/monitoring/report")
            WebDriverWait(browser, 60).until(
                lambda d: "Data summary of the window" in d.find_element("tag name", "body").text
            )
            text = browser.find_element("tag name", "body").text
            console = browser.get_log("browser")
            fetched = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
    finally:
        server.stop()
    # the browser's own request for /favicon.ico (a 404 from the API) is not the page's
    errors = [m for m in console if m["level"] == "SEVERE" and "/favicon.ico" not in m["message"]]
    assert errors == [], console
    assert [u for u in fetched if not u.startswith(server.url)] == []
    # the drift table, with the shifted columns marked
    assert "Data drift" in text and "Data Drift Summary" in text
    drift_section = text.split("Performance with its noise bands", 1)[0]
    drifted = [line for line in drift_section.splitlines() if line.startswith(("x1 ", "x2 "))]
    assert len(drifted) == 2, text[:3000]
    assert "Detected" in drift_section.split("x1 num", 1)[1].split("\n", 2)[1]
    # Evidently's performance section, current beside reference
    assert PERFORMANCE in text
    for shown in ("Accuracy", "ROC AUC", "Confusion Matrix", "Reference: Model Quality Metrics"):
        assert shown in text, shown
    assert f"{realised['accuracy']:.3f}".rstrip("0") in text
    assert "Dataset Summary" in text or "Row count" in text
    # servewatch's figures beside their noise bands, and explanation drift with its bands
    line = next(x for x in text.splitlines() if x.startswith("roc_auc "))
    assert f"{realised['roc_auc']:.4g}" in line and band in line, line
    assert "Performance with its noise bands" in text and "realised_performance: " in text
    assert "Explanation drift with its noise bands" in text
    moved = summary["explanation_drift"]["features"]["x1"]
    assert f"x1 {moved['reference']:.4g} {moved['current']:.4g}" in text


def test_without_labels_the_report_has_drift_and_summary_but_no_performance(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(300, seed=2), labelled=False)
    summary = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    report = Path(summary["report_dir"])
    html = (report / "report.html").read_text()
    assert "Data drift" in html and "Data summary of the window" in html
    assert "performance (labelled rows)" not in html
    assert not (report / "evidently-performance.json").exists()
    # the estimate beside its band; no realised figure, so no realised band
    noise = summary["performance"]["noise"]
    estimated = summary["performance"]["estimated"]
    assert noise["estimated"] is not None and estimated is not None and noise["realised"] is None
    width = noise["estimated"]["widths"]["roc_auc"]
    assert f"{width:.3g} worse at most ({noise['estimated']['rows']:,} rows)" in html
    assert f"{estimated['roc_auc']:.4g}" in html


def test_too_few_labels_leave_the_performance_section_out(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """As for realised performance: fewer than `min_labelled_rows` usable labels (100)."""
    log_traffic(store, msettings.registry, traffic(250, seed=3), labelled=False)
    log_traffic(store, msettings.registry, traffic(60, seed=4))
    summary = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    assert summary["labelled_rows"] == 60
    html = (Path(summary["report_dir"]) / "report.html").read_text()
    assert PERFORMANCE not in html


def test_a_run_stored_by_an_older_release_still_serves_its_drift_html(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    log_traffic(store, msettings.registry, traffic(250, seed=6), labelled=False)
    summary = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    report = Path(summary["report_dir"])
    (report / "report.html").rename(report / "drift.html")
    settings = Settings(
        registry=msettings.registry,
        database_url=store.url,
        spool_dir=tmp_path / "spool",
        reload_interval_s=0,
    )
    app = create_app(settings, extra_routers=[make_router(MonitorStore(store))])
    with TestClient(app) as client:
        res = client.get("/v1/models/demo/monitoring/report")
        assert res.status_code == 200 and "Data drift" in res.text
        (report / "drift.html").unlink()
        res = client.get("/v1/models/demo/monitoring/report")
        assert res.status_code == 404 and "no drift report" in res.json()["error"]["message"]


def test_a_window_evidently_cannot_score_keeps_its_drift_report_and_says_why(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """Every label one class: Evidently's binary preset cannot score it. The run still succeeds,
    servewatch's own realised figures stand, and the page says why in words, not as Evidently's
    raw error."""
    frame = traffic(300, seed=7)
    frame["label"] = "yes"
    log_traffic(store, msettings.registry, frame)
    summary = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    assert summary["status"] == "ok" and summary["drift"]["columns"]
    assert summary["performance"]["realised"] is not None
    report = Path(summary["report_dir"])
    html = (report / "report.html").read_text()
    assert "Performance (labelled rows)" in html and "all hold one class" in html
    assert "ValueError" not in html
    assert PERFORMANCE not in html and "Data summary of the window" in html
    assert not (report / "evidently-performance.json").exists()
