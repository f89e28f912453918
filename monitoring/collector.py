"""MonitoringCollector: the latest stored scheduled run per model as Prometheus gauges, read at
scrape time (manual runs change no alert state, so they do not move the gauges).

Works the same whether the run happened in this process, in a CronJob on another pod or in a
command-line run: the database is the source of truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.errors import first_line
from monitoring.store import MonitorStore
from monitoring.summary import MonitorSummary, StoredRun

log = logging.getLogger("servewatch.monitor")


class MonitoringCollector(Collector):
    def __init__(self, store: MonitorStore, *, cache_s: float = 5.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cached: tuple[float, list[StoredRun]] = (0.0, [])
        self._lock = threading.Lock()

    def _latest_runs(self) -> list[StoredRun]:
        with self._lock:
            at, runs = self._cached
            if time.monotonic() - at < self.cache_s:
                return runs
            try:
                runs = [r for m in self.store.models() for r in self.store.latest_scheduled(m)]
            except Exception as exc:  # a scrape never fails because the store is away
                log.warning("monitoring results unavailable: %s", first_line(exc))
                runs = []
            self._cached = (time.monotonic(), runs)
            return runs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of each model's latest scheduled run."""
        gauges = _Gauges.empty()
        for run in self._latest_runs():
            gauges.add(run)
        yield from gauges.in_order()


@dataclass
class _Gauges:
    """The monitoring gauges one scrape fills."""

    share: GaugeMetricFamily
    score: GaugeMetricFamily
    drifted: GaugeMetricFamily
    perf: GaugeMetricFamily
    band: GaugeMetricFamily
    contrib: GaugeMetricFamily
    alerts: GaugeMetricFamily
    last: GaugeMetricFamily
    rows: GaugeMetricFamily
    pending: GaugeMetricFamily
    project: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _Gauges:
        """Every gauge, with its help text and labels, holding no sample yet."""
        share = GaugeMetricFamily(
            "servewatch_drift_share",
            "Share of features drifted in the latest monitoring run.",
            labels=["model", "version"],
        )
        score = GaugeMetricFamily(
            "servewatch_feature_drift_score",
            "Drift score per feature: a p-value for the ks and chi2 tests (lower: drift), "
            "a distance for Evidently's distance methods.",
            labels=["model", "version", "feature", "method"],
        )
        drifted = GaugeMetricFamily(
            "servewatch_feature_drifted",
            "1 when the feature drifted in the latest run.",
            labels=["model", "version", "feature"],
        )
        perf = GaugeMetricFamily(
            "servewatch_model_performance",
            "Realised (labelled) and estimated (label-free) performance.",
            labels=["model", "version", "metric", "kind"],
        )
        band = GaugeMetricFamily(
            "servewatch_model_performance_band",
            "How much worse than its baseline a healthy window of the latest run's size scores "
            "by chance (the noise band at the rules' confidence, in the metric's units).",
            labels=["model", "version", "metric", "kind"],
        )
        alerts = GaugeMetricFamily(
            "servewatch_alert_active",
            "1 for each alert firing after the latest run.",
            labels=["model", "version", "rule", "severity"],
        )
        last = GaugeMetricFamily(
            "servewatch_monitor_last_run_timestamp_seconds",
            "Unix time the latest monitoring run finished.",
            labels=["model"],
        )
        contrib = GaugeMetricFamily(
            "servewatch_feature_contribution",
            "Mean |contribution| per feature on the reference sample and the latest window.",
            labels=["model", "version", "feature", "sample"],
        )
        rows = GaugeMetricFamily(
            "servewatch_monitor_rows",
            "Predictions in the latest monitoring run's window.",
            labels=["model", "version"],
        )
        pending = GaugeMetricFamily(
            "servewatch_evidently_snapshots_pending",
            "Monitoring runs' Evidently snapshots not yet in the workspace (unreachable at the "
            "latest run; retried at the next).",
            labels=["model"],
        )
        project = GaugeMetricFamily(
            "servewatch_evidently_project_info",
            "1 per model with its Evidently project's id (the Grafana dashboard links to it).",
            labels=["model", "project_id"],
        )
        return cls(share, score, drifted, perf, band, contrib, alerts, last, rows, pending, project)

    def in_order(self) -> tuple[GaugeMetricFamily, ...]:
        """The gauges in the order a scrape shows them."""
        return (
            self.share,
            self.score,
            self.drifted,
            self.perf,
            self.band,
            self.contrib,
            self.alerts,
            self.last,
            self.rows,
            self.pending,
            self.project,
        )

    def add(self, run: StoredRun) -> None:
        """One stored run's samples."""
        s = run["summary"]
        workspace = s.get("evidently")
        if workspace:
            self.pending.add_metric([s["model"]], workspace.get("pending", 0))
            if workspace.get("project_id"):
                self.project.add_metric([s["model"], workspace["project_id"]], 1.0)
        model, version = s["model"], str(s["version"])
        self.last.add_metric([model], run["finished_at"])
        self.rows.add_metric([model, version], s["rows"])
        drift = s.get("drift")
        if drift:
            self.share.add_metric([model, version], drift["drifted_share"])
            for feat, d in drift["columns"].items():
                self.score.add_metric([model, version, feat, d["method"]], d["score"])
                self.drifted.add_metric([model, version, feat], 1.0 if d["drifted"] else 0.0)
        self._add_performance(model, version, s)
        explanation = s.get("explanation_drift")
        for feat, c in (explanation.get("features", {}) if explanation else {}).items():
            self.contrib.add_metric([model, version, feat, "reference"], c["reference"])
            self.contrib.add_metric([model, version, feat, "current"], c["current"])
        for a in s.get("alerts", []):
            self.alerts.add_metric([model, version, a["rule"], a["severity"]], 1.0)

    def _add_performance(self, model: str, version: str, s: MonitorSummary) -> None:
        """Realised and estimated figures, and their noise bands."""
        performance = s.get("performance")
        measured = {
            "realised": performance.get("realised") if performance else None,
            "estimated": performance.get("estimated") if performance else None,
        }
        for kind, scores in measured.items():
            # NaN (e.g. ROC AUC of a single-class window) is stored as null: skip both.
            stored: Mapping[str, object] = scores or {}
            for metric, value in stored.items():
                if isinstance(value, int | float) and value == value:
                    self.perf.add_metric([model, version, metric, kind], value)
        noise = performance.get("noise") if performance else None
        bands = {
            "realised": noise.get("realised") if noise else None,
            "estimated": noise.get("estimated") if noise else None,
        }
        for kind, spread in bands.items():
            for metric, width in (spread["widths"] if spread else {}).items():
                self.band.add_metric([model, version, metric, kind], width)
