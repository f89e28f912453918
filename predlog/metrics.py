"""The prediction log's Prometheus metrics, and the task-failure counter its writer shares."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LOG_QUEUE_ROWS = Gauge(
    "servewatch_log_queue_rows",
    "Rows waiting in memory for the log store.",
    multiprocess_mode="livesum",
)
LOG_SPOOL_ROWS = Gauge(
    "servewatch_log_spool_rows",
    "Rows waiting on local disk while the log store is unreachable.",
    multiprocess_mode="livesum",
)
LOG_ROWS_WRITTEN = Counter("servewatch_log_rows_written_total", "Rows written to the log store.")
LOG_WRITE_FAILURES = Counter(
    "servewatch_log_write_failures_total",
    "Failed batch writes to the log store (rows went to the spool).",
)
LOG_STORE_UP = Gauge(
    "servewatch_log_store_up",
    "1 when the last write to the log store worked.",
    multiprocess_mode="livemin",
)
LOG_WRITER_RESTARTS = Counter(
    "servewatch_log_writer_restarts_total",
    "Crashes of the log writer loop; each was restarted after a backoff with its batch kept.",
)
LOG_WRITER_UP = Gauge(
    "servewatch_log_writer_up",
    "1 while the log writer runs; 0 from a crash to its next clean cycle, or once its thread died.",
    multiprocess_mode="livemin",
)
TASK_FAILURES = Counter(
    "servewatch_background_task_failures_total",
    "Failures of a background task (watcher, log_maintenance, monitoring, log_writer); each was "
    "logged and the task retried after a backoff.",
    ["task"],
)
LOG_ACK_TIMEOUTS = Counter(
    "servewatch_log_ack_timeouts_total",
    "Requests refused (503) because the log did not take their rows within the ack timeout.",
)
