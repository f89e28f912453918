"""Log retention and maintenance: partitions (PostgreSQL), batched deletes (SQLite).

A row is removed only when it is older than `SERVEWATCH_LOG_RETENTION_DAYS` by its ingest time
(the database's clock); a label only when no row it joins is left.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.errors import first_line
from predlog.partitions import Maintenance
from predlog.store import PredictionStore, insert_or, is_schema_gap, log_retention

log = logging.getLogger("servewatch.retention")

DELETE_BATCH = 5_000
"""Rows per DELETE transaction of an unpartitioned log: the writer waits for one batch at most."""

_DELETE_ROWS = (
    "DELETE FROM sw_predictions WHERE id IN (SELECT id FROM sw_predictions "
    "WHERE ingested_at < :cutoff LIMIT :batch)"
)
_DELETE_LABELS = (
    "DELETE FROM sw_feedback WHERE prediction_id IN (SELECT f.prediction_id FROM sw_feedback f "
    "WHERE f.received_at < :cutoff AND NOT EXISTS "
    "(SELECT 1 FROM sw_predictions p WHERE p.id = f.prediction_id AND p.model = f.model) "
    "LIMIT :batch)"
)


def maintain(
    store: PredictionStore,
    retention_days: float | None,
    *,
    now: float | None = None,
    migrate: bool = False,
    at_start: bool = False,
) -> Maintenance:
    """One maintenance pass: create partitions ahead, move rows out of DEFAULT and, with
    `retention_days`, remove what is older; recorded in `sw_log_retention`. `now` (Unix s)
    defaults to the database's clock. `migrate` partitions an unpartitioned PostgreSQL log
    first; otherwise such a log is purged by batched deletes, as SQLite is. `at_start` (the
    service's pass as it starts) leaves out the scan an unpartitioned PostgreSQL log needs to
    find its oldest row (no index leads with `ingested_at`): the recorded one stays."""
    retention_s = retention_days * 86_400 if retention_days else None
    done = None
    postgresql = store.engine.dialect.name == "postgresql"
    if postgresql:
        done = store.maintain_partitions(retention_s, now, migrate=migrate)
    else:
        store.create_schema()
    measured = True
    if done is None:
        measured = not (at_start and postgresql)
        done = _purge(store, retention_s, store.now() if now is None else now, oldest=measured)
        if store.earlier_writers:
            done.migration, done.earlier_writers = "deferred", store.earlier_writers
    # the service's start pass removes nothing (no retention): it does not count as a run of the
    # retention the ServewatchLogMaintenanceStale rule watches (restarts would hide a broken
    # CronJob), except on a log that has never recorded one
    _record(store, done, oldest=measured, keep_ran_at=at_start)
    return done


def _purge(
    store: PredictionStore, retention_s: float | None, now: float, *, oldest: bool = True
) -> Maintenance:
    """An unpartitioned log (SQLite, or PostgreSQL before `servewatch log maintain`)."""
    done = Maintenance()
    if retention_s is not None:
        cutoff = {"cutoff": now - retention_s, "batch": DELETE_BATCH}
        for sql in (_DELETE_ROWS, _DELETE_LABELS):
            while True:
                with store.engine.begin() as conn:
                    n = int(conn.execute(sa.text(sql), cutoff).rowcount or 0)
                if sql is _DELETE_ROWS:
                    done.rows_dropped += n
                else:
                    done.labels_dropped += n
                if n < DELETE_BATCH:
                    break
    if oldest:
        with store.engine.connect() as conn:
            first = conn.execute(sa.text("SELECT min(ingested_at) FROM sw_predictions")).scalar()
        done.oldest_ingested_at = None if first is None else float(first)
    return done


def _record(
    store: PredictionStore, done: Maintenance, *, oldest: bool = True, keep_ran_at: bool = False
) -> None:
    """Add the pass's findings to the totals in `sw_log_retention`, in one statement that reads
    and writes the row under its lock (passes of several workers at once add up); the oldest
    row's time only when the pass measured it."""
    row = log_retention.c
    stmt = insert_or(store.engine, log_retention).values(
        key="log",
        ran_at=time.time(),
        oldest_ingested_at=done.oldest_ingested_at,
        rows_dropped=done.rows_dropped,
        labels_dropped=done.labels_dropped,
        partitions_dropped=len(done.dropped),
    )
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "ran_at": row.ran_at if keep_ran_at else new.ran_at,
            "oldest_ingested_at": new.oldest_ingested_at if oldest else row.oldest_ingested_at,
            "rows_dropped": row.rows_dropped + new.rows_dropped,
            "labels_dropped": row.labels_dropped + new.labels_dropped,
            "partitions_dropped": row.partitions_dropped + new.partitions_dropped,
        },
    )
    with store.engine.begin() as conn:
        conn.execute(stmt)


def summary(done: Maintenance) -> dict[str, Any]:
    """What a pass did, for the command line's JSON."""
    return asdict(done)


async def maintenance_loop(
    store: PredictionStore, retention_days: float | None, interval_s: float
) -> None:
    """Run `maintain` every `interval_s` (jittered, so workers and replicas spread out; the
    advisory lock makes overlapping passes wait for each other) for the app's lifetime."""
    while True:
        await asyncio.sleep(interval_s * random.uniform(0.5, 1.0))
        try:
            done = await asyncio.to_thread(maintain, store, retention_days)
        except Exception as exc:  # the store may be away; the next pass tries again
            log.warning("log maintenance failed: %s", first_line(exc))
            continue
        if done.created or done.dropped or done.rows_moved:
            log.info("log maintenance: %s", summary(done))


LAST_RUN = "servewatch_log_maintenance_last_run_timestamp_seconds"
LAST_RUN_HELP = "When log maintenance (partitions, retention) last ran; 0: never."
_UNKNOWN = object()


class RetentionCollector(Collector):
    """The last maintenance pass's findings as metrics, read from the store at scrape time."""

    def __init__(self, store: PredictionStore, *, cache_s: float = 15.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cached: tuple[float, Any] = (-1e9, None)
        self._lock = threading.Lock()

    def _state(self) -> Any:
        """The recorded row; None when no pass is recorded; `_UNKNOWN` when the store is away."""
        with self._lock:
            at, row = self._cached
            if time.monotonic() - at >= self.cache_s:
                try:
                    with self.store.engine.connect() as conn:
                        row = conn.execute(
                            sa.select(log_retention).where(log_retention.c.key == "log")
                        ).first()
                except Exception as exc:  # a scrape never fails because the store is away
                    if not is_schema_gap(exc):
                        log.warning("log retention state unavailable: %s", str(exc)[:200])
                        row = _UNKNOWN
                    else:  # the table is not there: no pass ever completed
                        row = None
                self._cached = (time.monotonic(), row)
            return row

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        row = self._state()
        if row is _UNKNOWN:
            return
        if row is None:  # from start: 0 says "never ran" (ServewatchLogMaintenanceStale fires)
            yield GaugeMetricFamily(LAST_RUN, LAST_RUN_HELP, value=0.0)
            return
        if row.oldest_ingested_at is not None:
            yield GaugeMetricFamily(
                "servewatch_log_oldest_row_age_seconds",
                "Age of the oldest logged prediction (by ingest time) at the last maintenance.",
                value=max(0.0, time.time() - row.oldest_ingested_at),
            )
        yield GaugeMetricFamily(LAST_RUN, LAST_RUN_HELP, value=row.ran_at)
        for name, helptext, value in (
            ("rows_dropped", "Prediction rows removed by retention.", row.rows_dropped),
            ("labels_dropped", "Feedback labels removed by retention.", row.labels_dropped),
            (
                "partitions_dropped",
                "Log partitions dropped by retention (PostgreSQL).",
                row.partitions_dropped,
            ),
        ):
            yield CounterMetricFamily(f"servewatch_log_retention_{name}", helptext, value=value)
