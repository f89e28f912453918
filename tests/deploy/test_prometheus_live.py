"""A real Prometheus scraping a running servewatch: the dashboard's queries and the alert rules.

Two `servewatch serve` processes (one with two workers) share one PostgreSQL log. Debian's
`prometheus` scrapes both every 2 s and evaluates the test copy of
deploy/prometheus/rules.yml (durations in seconds instead of minutes). Traffic, two monitoring
runs, a drift and a store outage: every expression of the Grafana dashboard must run, those that
should have data must have it, and ServewatchDatasetDrift and ServewatchLogWriteFailures must fire
and then resolve, as seen in /api/v1/alerts.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from monitoring.alerts import AlertRules
from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from predlog.store import PredictionStore
from tests.conftest import require_tool
from tests.deploy.prometheus import Prometheus, dashboard_queries, shortened_rules
from tests.monitoring.conftest import FEATURES, traffic
from tests.service.conftest import Server, pg_url  # noqa: F401  (the fixture)
from tests.tcpproxy import TcpProxy

RULES = AlertRules(min_rows=100, drift_share=0.3, resolve_after=1, min_labelled_rows=50)
# Panels that stay empty here, and why: no request failed with a 5xx, so the error-rate ratio has
# no numerator series.
EMPTY = {"Error rate (5xx share)"}
WRITE_FAILURES = "ServewatchLogWriteFailures"


def instances(n: int, seed: int, shift: float = 0.0) -> list[dict[str, Any]]:
    frame = traffic(n, seed=seed, shift=shift)[FEATURES]
    rows: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return rows


def send(urls: list[str], rows: list[dict[str, Any]], batch: int = 10) -> list[str]:
    """Predict `rows` in batches, alternating servers, a new connection each (both workers)."""
    ids = []
    for k in range(0, len(rows), batch):
        url = urls[(k // batch) % len(urls)]
        res = httpx.post(
            f"{url}/v1/models/demo/predict",
            json={"instances": rows[k : k + batch]},
            headers={"connection": "close"},
            timeout=30,
        )
        assert res.status_code == 200, res.text
        ids += [p["prediction_id"] for p in res.json()["predictions"]]
    return ids


def wait_logged(store: PredictionStore, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(store.read_window("demo")) < count:
        assert time.monotonic() < deadline, "rows not in the shared log after 30 s"
        time.sleep(0.2)


def through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parsed = sa.engine.make_url(url)
    host = f"@{parsed.host}:{parsed.port}/" if parsed.port else f"@{parsed.host}/"
    assert host in url, url
    return url.replace(host, f"@127.0.0.1:{proxy.port}/", 1)


def active(prom: Prometheus, name: str) -> list[dict[str, Any]]:
    """Alerts of rule `name`, pending or firing."""
    return [a for a in prom.alerts() if a["labels"]["alertname"] == name]


def firing(prom: Prometheus, name: str) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_dashboard_queries_and_alert_rules_on_a_real_prometheus(
    registry_copy: Path,
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    binary = require_tool("prometheus")  # skips, or fails when SERVEWATCH_REQUIRE_TOOLS is set
    promtool = require_tool("promtool")
    rules = shortened_rules(tmp_path / "rules.yml")
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # the servers reach PostgreSQL through a proxy the test can cut (a store outage for them
    # only); the test's own store and monitoring runs connect directly
    parsed = sa.engine.make_url(pg_url)
    proxy = TcpProxy((str(parsed.host), int(parsed.port or 5432)))
    env = {
        "SERVEWATCH_REGISTRY": str(registry_copy),
        "SERVEWATCH_DATABASE_URL": through(pg_url, proxy),
        "SERVEWATCH_MONITOR_INTERVAL": "0",
        "SERVEWATCH_LOG_FLUSH_MS": "50",
    }
    servers: list[Server] = []
    prom: Prometheus | None = None
    try:
        for k, workers in enumerate((2, 1)):
            spool = {"SERVEWATCH_SPOOL_DIR": str(tmp_path / f"spool-{k}")}
            servers.append(Server({**env, **spool}, workers=workers))
        urls = [s.url for s in servers]
        prom = Prometheus(
            binary, [f"127.0.0.1:{s.port}" for s in servers], rules, tmp_path / "prom"
        )
        store = PredictionStore(pg_url)
        settings = MonitorSettings(
            registry=registry_copy, database_url=pg_url, monitor_reports_dir=tmp_path / "reports"
        )

        # traffic that has drifted, a few bad requests, then a monitoring run
        shifted = send(urls, instances(200, seed=21, shift=2.0))
        for url in urls:
            bad = httpx.post(f"{url}/v1/models/demo/predict", json={"instances": [{"x1": "no"}]})
            assert bad.status_code == 422
        wait_logged(store, len(shifted))
        first = run_monitoring(
            settings=settings, store=store, model="demo", notifiers=[], rules=RULES
        )
        assert "dataset_drift" in {a["rule"] for a in first["alerts"]}

        alert = prom.wait_for(
            "ServewatchDatasetDrift firing", lambda: firing(prom, "ServewatchDatasetDrift")
        )
        assert alert[0]["labels"]["model"] == "demo" and alert[0]["labels"]["version"] == "1"

        # both processes (three workers) are scraped and counted once each
        expected = {f"127.0.0.1:{s.port}" for s in servers}
        up = prom.wait_for(
            "both targets scraped",
            lambda: (
                {r["metric"]["instance"] for r in found}
                if (found := prom.query('max_over_time(up{job="servewatch"}[20s]) == 1'))
                and len(found) == len(expected)
                else None
            ),
        )
        assert up == expected
        answered = prom.query(
            'sum(servewatch_requests_total{model="demo",endpoint="predict",status="200"})'
        )
        assert float(answered[0]["value"][1]) == len(shifted) / 10

        # every dashboard expression runs; all but the known-empty ones have data
        # rate() needs two samples of a series: wait for two scrapes after the traffic began
        prom.wait_for(
            "two scrapes of the traffic",
            lambda: (
                (
                    counts := prom.query(
                        'count_over_time(servewatch_requests_total{model="demo"}[5m])'
                    )
                )
                and all(float(r["value"][1]) >= 2 for r in counts)
            ),
        )
        empty = set()
        for title, expr in dashboard_queries({"model": "demo", "__rate_interval": "5m"}):
            if not prom.query(expr):
                empty.add(title)
        assert empty == EMPTY

        # every alert rule evaluates on the real series without an error
        groups = prom.api("rules", type="alert")["groups"]
        bad_rules = [
            (r["name"], r.get("lastError"))
            for g in groups
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        assert groups and bad_rules == []
        assert not active(prom, "ServewatchHighErrorRate") and not active(prom, WRITE_FAILURES)
        assert not active(prom, "ServewatchSlowServingPath")  # the demo is on its fast path
        assert prom.query('servewatch_model_serving_path{model="demo",reason="none"} == 1')

        # the store goes away for the servers: writes fail and go to the spools, answers go on;
        # ServewatchLogWriteFailures fires on each instance, then resolves once the store is
        # back, and every answered row reaches the log from the spools
        proxy.cut()
        failed: list[str] = []
        try:
            deadline = time.monotonic() + 40
            while len({a["labels"]["instance"] for a in firing(prom, WRITE_FAILURES)}) < 2:
                assert time.monotonic() < deadline, prom.alerts()
                failed += send(urls, instances(20, seed=len(failed)), batch=5)
                time.sleep(0.3)
        finally:
            proxy.restore()
        assert len(failed) > 0

        # traffic like the reference again: the next run clears drift and the alert resolves
        calm = send(urls, instances(200, seed=22))
        wait_logged(store, len(shifted) + len(failed) + len(calm))
        second = run_monitoring(
            settings=settings, store=store, model="demo", notifiers=[], rules=RULES
        )
        assert "dataset_drift" not in {a["rule"] for a in second["alerts"]}
        prom.wait_for(
            "ServewatchLogWriteFailures resolved", lambda: not active(prom, WRITE_FAILURES)
        )
        logged = {r["id"] for r in store.read_window("demo")}
        assert set(shifted + failed + calm) <= logged
        prom.wait_for(
            "ServewatchDatasetDrift resolved",
            lambda: (
                not [
                    a for a in prom.alerts() if a["labels"]["alertname"] == "ServewatchDatasetDrift"
                ]
            ),
        )
        store.dispose()
    finally:
        if prom is not None:
            prom.stop()
        for s in servers:
            s.stop()
        proxy.close()
