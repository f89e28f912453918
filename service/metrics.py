"""The service's Prometheus metrics, declared once (the log's in predlog/metrics.py), and /metrics.

Works with several worker processes: when PROMETHEUS_MULTIPROC_DIR is set (by `servewatch
serve`) the values live in files that the /metrics handler aggregates across workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

from predlog import metrics as _log_metrics  # noqa: F401  (declares the log's metrics)

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Counter | Histogram, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: the hot path looks each series up once, not per
    request (labels() validates and locks every call). Label values here come from a bounded
    set (served models, versions, statuses, classes)."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "servewatch_requests_total",
    "HTTP requests by model, answering version, endpoint and status.",
    ["model", "version", "endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "servewatch_request_duration_seconds",
    "Time to answer a request, by model, answering version and endpoint.",
    ["model", "version", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
MODEL_CALL_SECONDS = Histogram(
    "servewatch_model_call_duration_seconds",
    "Time of one model call (a whole micro-batch).",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "servewatch_batch_rows",
    "Rows per model call after micro-batching.",
    ["model"],
    buckets=BATCH_BUCKETS,
)
PREDICTIONS = Counter(
    "servewatch_predictions_total",
    "Predictions answered, by predicted class.",
    ["model", "version", "class"],
)
PREDICTION_VALUES = Histogram(
    "servewatch_prediction_value",
    "Predicted values of regressors.",
    ["model", "version"],
    buckets=(-1e3, -100, -10, -1, 0, 1, 10, 100, 1e3, 1e4),
)
VALIDATION_ERRORS = Counter(
    "servewatch_validation_errors_total",
    "Rejected instance values, by feature and rule.",
    ["model", "feature", "rule"],
)
OUT_OF_RANGE = Counter(
    "servewatch_out_of_range_values_total",
    "Accepted numeric values outside the training range, by feature.",
    ["model", "feature"],
)
UNSEEN_CATEGORIES = Counter(
    "servewatch_unseen_categories_total",
    "Accepted categorical values never seen in training, by feature.",
    ["model", "feature"],
)
FEEDBACK = Counter("servewatch_feedback_total", "Labels received, by result.", ["model", "result"])
MODEL_INFO = Gauge(
    "servewatch_model_info",
    "1 for each model version a worker serves; path: numpy (replayed), sklearn, or mixed.",
    ["model", "version", "path"],
    multiprocess_mode="livemax",
)
MODEL_SERVING_PATH = Gauge(
    "servewatch_model_serving_path",
    "1 for each part (preprocessing, estimator) of each served version's model call: what runs "
    "it (path: numpy, compiled, sklearn) and, on sklearn, why (reason: unsupported, differs, "
    "unchecked, disabled, onnxruntime_missing; none on a fast path).",
    ["model", "version", "part", "path", "reason"],
    multiprocess_mode="livemax",
)
STAGING_INFO = Gauge(
    "servewatch_staging_info",
    "1 for each staging version a worker runs as shadow or canary (0 once a canary is stopped).",
    ["model", "version"],
    multiprocess_mode="livemax",
)
SHADOW_PREDICTIONS = Counter(
    "servewatch_shadow_predictions_total",
    "Shadow predictions by the staging version (never returned), by result.",
    ["model", "version", "result"],
)
CANARY_ROLLBACKS = Counter(
    "servewatch_canary_rollbacks_total",
    "Canaries stopped because they were worse than production, by reason.",
    ["model", "version", "reason"],
)
MODEL_RELOADS = Counter(
    "servewatch_model_reloads_total", "Version swaps, by result.", ["model", "result"]
)


def exposition(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The text for /metrics: all workers' values, plus any extra collectors (monitoring)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Default(Collector):
    """The process-global registry's metrics, re-exposed inside a per-scrape registry."""

    def collect(self):  # type: ignore[no-untyped-def]
        yield from REGISTRY.collect()


def mark_process_dead() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
