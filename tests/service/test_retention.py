"""Log retention and partitions: nothing younger than the setting is removed, nothing is refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from monitoring.window import read_window
from predlog import partitions, retention
from predlog.partitions import period_start
from predlog.store import PredictionStore, normalise_url, prediction_rows
from service.config import Settings
from service.main import create_app
from tests.service.conftest import all_at_once

HOUR = 3600
RETAIN_DAYS = 2.0
RETAIN_S = RETAIN_DAYS * 86_400


def pid_at(t: float, n: int) -> str:
    """A prediction id issued at Unix second `t` (the service's format)."""
    return f"{int(t * 1000):012x}{n:020x}"


def insert(store: PredictionStore, rows: dict[str, tuple[float, float]]) -> None:
    """Rows id -> (created_at, ingested_at), written as the log's parent table receives them."""
    with store.engine.begin() as conn:
        for pid, (created, ingested) in rows.items():
            conn.execute(
                sa.text(
                    "INSERT INTO sw_predictions (id, model, version, created_at, inputs, "
                    "prediction, probabilities, latency_ms, shadow, ingested_at) VALUES "
                    "(:id, 'm', 1, :c, '{\"x\": 1}', '\"yes\"', NULL, 1.0, false, :i)"
                ),
                {"id": pid, "c": created, "i": ingested},
            )


def label(store: PredictionStore, pids: list[str], received_at: float) -> None:
    store.write_labels(
        [{"prediction_id": p, "model": "m", "label": '"yes"', "received_at": received_at}
         for p in pids]
    )  # fmt: skip


def ids_in(store: PredictionStore, table: str = "sw_predictions") -> set[str]:
    col = "prediction_id" if table.startswith("sw_feedback") else "id"
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text(f"SELECT {col} FROM {table}"))}


def test_postgresql_drops_only_partitions_whose_rows_are_all_older(pg_url: str) -> None:
    """Rows around the cutoff: the partition holding it stays whole, rows older by a whole
    partition go by DROP; rows for partitions that did not exist waited in DEFAULT and were
    moved; a label stays while a row it joins (made long ago, ingested late) is left."""
    store = PredictionStore(pg_url, partition_hours=1, partitions_ahead=2)
    store.create_schema()
    t0 = float(period_start(store.now(), HOUR))
    now = t0 + 1800
    cutoff = now - RETAIN_S  # mid-hour: inside the partition [t0 - 48h, t0 - 47h)
    boundary_lo = t0 - 48 * HOUR
    rows = {
        pid_at(cutoff - 9000, 1): (cutoff - 9000, cutoff - 9000),  # whole partition older
        pid_at(boundary_lo - 0.001, 2): (boundary_lo - 1, boundary_lo - 0.001),  # ends at lo
        pid_at(boundary_lo, 3): (boundary_lo - 1, boundary_lo),  # older, but shares a partition
        pid_at(cutoff - 0.001, 4): (cutoff - 1, cutoff - 0.001),  # with rows that must stay
        pid_at(cutoff, 5): (cutoff - 1, cutoff),  # exactly the setting's age
        pid_at(cutoff + 0.001, 6): (cutoff - 1, cutoff + 0.001),  # younger
        pid_at(cutoff - 9000, 7): (cutoff - 9000, now - 10),  # made long ago, ingested late
        pid_at(now, 8): (now, now),
    }
    insert(store, rows)  # no partition existed for the old ones: they wait in DEFAULT
    assert ids_in(store, "sw_predictions_default") == {pid_at(cutoff - 9000, 1),
        pid_at(boundary_lo - 0.001, 2), pid_at(boundary_lo, 3), pid_at(cutoff - 0.001, 4),
        pid_at(cutoff, 5), pid_at(cutoff + 0.001, 6)}  # fmt: skip
    label(store, list(rows), received_at=now)

    done = retention.maintain(store, RETAIN_DAYS, now=now)

    kept = ids_in(store)
    younger = {p for p, (_, ingested) in rows.items() if ingested >= cutoff}
    assert younger <= kept  # nothing younger than the setting (or exactly its age) is removed
    assert set(rows) - kept == {pid_at(cutoff - 9000, 1), pid_at(boundary_lo - 0.001, 2)}
    assert all(rows[p][1] < boundary_lo for p in set(rows) - kept)
    assert done.rows_dropped == 2 and len([d for d in done.dropped if "predictions" in d]) == 2
    assert done.rows_moved == 6 and ids_in(store, "sw_predictions_default") == set()
    assert done.labels_moved == 7 and ids_in(store, "sw_feedback_default") == set()
    assert done.oldest_ingested_at == boundary_lo
    # Labels: the dropped rows' labels went with their partitions, except where a row that is
    # left (id 7, made in the same hour as id 1) still joins the partition (id 1's stays too).
    assert ids_in(store, "sw_feedback") == kept | {pid_at(cutoff - 9000, 1)}
    assert done.labels_dropped == 1

    again = retention.maintain(store, RETAIN_DAYS, now=now)  # idempotent
    assert (again.created, again.dropped, again.rows_moved) == ([], [], 0)
    assert ids_in(store) == kept
    store.engine.dispose()


def test_postgresql_creates_partitions_ahead_and_a_late_partition_takes_rows_from_default(
    pg_url: str,
) -> None:
    store = PredictionStore(pg_url, partition_hours=1, partitions_ahead=2)
    store.create_schema()
    store.create_schema()  # idempotent
    with store.engine.connect() as conn:
        parts = partitions.partitions(conn, "sw_predictions")
    start = period_start(store.now(), HOUR)
    regular = [(p.lo, p.hi) for p in parts if not p.is_default]
    assert [(start + k * HOUR, start + (k + 1) * HOUR) for k in range(3)] == regular
    assert parts[-1].is_default
    # A row far ahead (no partition yet) is taken, not refused, and moved on the next pass.
    far = start + 30 * HOUR + 5
    insert(store, {pid_at(far, 1): (far, far)})
    assert ids_in(store, "sw_predictions_default") == {pid_at(far, 1)}
    done = retention.maintain(store, None)
    assert done.rows_moved == 1 and done.dropped == []
    assert ids_in(store, "sw_predictions_default") == set() and ids_in(store) == {pid_at(far, 1)}
    store.engine.dispose()


def test_a_retried_batch_is_not_doubled_in_the_partitioned_log(pg_url: str) -> None:
    store = PredictionStore(pg_url)
    rows = prediction_rows(
        ids=[pid_at(time.time(), n) for n in range(3)], model="m", version=1,
        created_at=time.time(), inputs=[{"x": 1}] * 3, predictions=["yes"] * 3,
        probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    store.write_predictions(rows)
    store.write_predictions(rows)  # the commit's answer was lost: the writer retries
    store.write_predictions(rows[1:])
    assert store.count_predictions("m") == 3
    store.engine.dispose()


OLD_PREDICTIONS = (
    "CREATE TABLE sw_predictions (id VARCHAR(32) PRIMARY KEY, model VARCHAR(64) NOT NULL, "
    "version INTEGER NOT NULL, created_at FLOAT NOT NULL, inputs TEXT NOT NULL, "
    "prediction TEXT NOT NULL, probabilities TEXT, latency_ms FLOAT NOT NULL, "
    "shadow BOOLEAN NOT NULL)"
)
OLD_FEEDBACK = (
    "CREATE TABLE sw_feedback (prediction_id VARCHAR(32) PRIMARY KEY, model VARCHAR(64) NOT NULL, "
    "label TEXT NOT NULL, received_at FLOAT NOT NULL)"
)


def test_an_unpartitioned_log_with_rows_is_migrated_once_by_concurrent_workers(
    pg_url: str,
) -> None:
    """The first release's tables with rows and labels; three workers start at once."""
    engine = sa.create_engine(normalise_url(pg_url))
    made = time.time() - 3 * 86_400
    old_ids = [pid_at(made + i, i) for i in range(200)]
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_PREDICTIONS))
        conn.execute(sa.text(OLD_FEEDBACK))
        conn.execute(
            sa.text(
                "INSERT INTO sw_predictions VALUES (:id, 'm', 1, :t, '{\"x\": 1}', '\"yes\"', "
                "NULL, 1.0, false)"
            ),
            [{"id": p, "t": made + i} for i, p in enumerate(old_ids)],
        )
        conn.execute(
            sa.text("INSERT INTO sw_feedback VALUES (:id, 'm', '\"no\"', :t)"),
            [{"id": p, "t": made + 10} for p in old_ids[:50]] + [{"id": "z" * 32, "t": made}],
        )
    engine.dispose()

    stores = [PredictionStore(pg_url) for _ in range(3)]
    # At start, and in the workers' own maintenance, the log stays unpartitioned (pods of the
    # release before may still write to it) and takes this release's rows, stamped by the
    # database's clock, a retried batch not doubled.
    before = stores[0]
    before.create_schema()
    early = prediction_rows(
        ids=[pid_at(time.time(), 9)], model="m", version=1, created_at=time.time(),
        inputs=[{"x": 3}], predictions=["no"], probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    before.write_predictions(early)
    before.write_predictions(early)
    assert retention.maintain(before, 30.0).rows_dropped == 0
    with before.engine.connect() as conn:
        assert partitions.relkind(conn, "sw_predictions") == "r"
        stamped = conn.execute(
            sa.text("SELECT ingested_at FROM sw_predictions WHERE id = :id"), {"id": early[0]["id"]}
        ).scalar_one()
    assert abs(stamped - time.time()) < 60
    old_ids.append(early[0]["id"])
    # `servewatch log maintain`, three at once
    errors = all_at_once(lambda store: retention.maintain(store, None, migrate=True), stores)
    assert errors == []
    store = stores[0]
    with store.engine.connect() as conn:
        assert partitions.relkind(conn, "sw_predictions") == "p"
        assert partitions.relkind(conn, "sw_feedback") == "p"
        legacy = [p for p in partitions.partitions(conn, "sw_predictions") if p.name.endswith(
            "_legacy")]  # fmt: skip
    assert ids_in(store) == set(old_ids)  # every row kept, none doubled
    assert ids_in(store, "sw_feedback") == set(old_ids[:50]) | {"z" * 32}
    window = read_window(store, model="m", version=1, since=None, last=None, cap=500,
                         classes=None)  # fmt: skip
    assert window.total_rows == 201 and window.labels.count("no") == 50
    new = prediction_rows(
        ids=[pid_at(time.time(), 1)], model="m", version=1, created_at=time.time(),
        inputs=[{"x": 2}], predictions=["no"], probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    store.write_predictions(new)
    store.write_predictions(new)
    label(store, [new[0]["id"], old_ids[0]], received_at=time.time())  # relabel in place
    assert store.count_predictions("m") == 202
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sw_feedback")).scalar_one() == 52

    # The legacy partition goes whole, and only once its newest row is older than the setting.
    (part,) = legacy
    assert part.lo is None and part.hi is not None
    kept = retention.maintain(store, RETAIN_DAYS, now=part.hi + RETAIN_S - 1)
    assert part.name not in kept.dropped and store.count_predictions("m") == 202
    gone = retention.maintain(store, RETAIN_DAYS, now=part.hi + RETAIN_S)
    assert part.name in gone.dropped and gone.rows_dropped == 202
    # not one of ours: it waited in DEFAULT, where retention removes it too (joins no row)
    assert ids_in(store, "sw_feedback") == set()
    for s in stores:
        s.engine.dispose()


def test_sqlite_deletes_in_batches_and_never_a_row_younger_than_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "DELETE_BATCH", 2)
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    now = time.time()
    cutoff = now - RETAIN_S
    old = {pid_at(cutoff - 100 - n, n): (cutoff - 100 - n, cutoff - 100 - n) for n in range(5)}
    edge = {
        pid_at(cutoff, 10): (cutoff - 0.5, cutoff - 0.001),  # older by a millisecond: removed
        pid_at(cutoff, 11): (cutoff - 0.5, cutoff),  # exactly the setting's age: kept
        pid_at(cutoff, 12): (cutoff - 0.5, cutoff + 0.001),
        pid_at(cutoff - 500, 13): (cutoff - 500, now - 5),  # made long ago, ingested late
    }
    insert(store, old | edge)
    label(store, [*old, *edge], received_at=cutoff - 50)
    label(store, ["f" * 32], received_at=now)  # a label whose row has not arrived yet

    done = retention.maintain(store, RETAIN_DAYS, now=now)

    kept = {pid_at(cutoff, 11), pid_at(cutoff, 12), pid_at(cutoff - 500, 13)}
    assert ids_in(store) == kept and done.rows_dropped == 6
    assert ids_in(store, "sw_feedback") == kept | {"f" * 32} and done.labels_dropped == 6
    assert done.oldest_ingested_at == cutoff and done.dropped == []
    store.engine.dispose()


def test_retention_metrics_and_the_maintain_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    store = PredictionStore(url)
    store.create_schema()
    now = time.time()
    insert(store, {pid_at(now - 10 * 86_400, 1): (now - 10 * 86_400, now - 10 * 86_400),
                   pid_at(now - 3600, 2): (now - 3600, now - 3600)})  # fmt: skip
    collector = retention.RetentionCollector(store, cache_s=0)
    never = {m.name: m.samples[0].value for m in collector.collect()}
    assert never == {"servewatch_log_maintenance_last_run_timestamp_seconds": 0.0}  # no pass yet

    from servewatch.cli import app

    res = CliRunner().invoke(app, ["log", "maintain", "--database-url", url,
                                   "--retention-days", "7"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rows_dropped"] == 1
    found = {m.name: m.samples[0].value for m in collector.collect()}
    assert found["servewatch_log_retention_rows_dropped"] == 1
    assert 3590 <= found["servewatch_log_oldest_row_age_seconds"] < 3600 + 600
    res = CliRunner().invoke(app, ["log", "maintain", "--database-url", url,
                                   "--retention-days", "7"])  # fmt: skip
    assert json.loads(res.output)["rows_dropped"] == 0
    found = {m.name: m.samples[0].value for m in collector.collect()}
    assert found["servewatch_log_retention_rows_dropped"] == 1  # a running total

    bad = CliRunner().invoke(app, ["log", "maintain", "--database-url", url,
                                   "--retention-days", "0"])  # fmt: skip
    assert bad.exit_code == 2 and "log_retention_days" in bad.output
    assert "greater than 0" in bad.output and "Traceback" not in bad.output
    store.engine.dispose()


def test_maintenance_is_exported_from_start_and_never_is_zero(
    settings: Settings, tmp_path: Path
) -> None:
    """Before any pass (no table even) the last run is 0, so ServewatchLogMaintenanceStale can
    fire for a log whose maintenance never ran; a service records a pass as it starts."""
    fresh = PredictionStore(f"sqlite:///{tmp_path}/fresh.db")
    (metric,) = retention.RetentionCollector(fresh, cache_s=0).collect()
    assert metric.name == "servewatch_log_maintenance_last_run_timestamp_seconds"
    assert metric.samples[0].value == 0.0
    away = PredictionStore("postgresql://nobody@127.0.0.1:1/none")
    assert list(retention.RetentionCollector(away, cache_s=0).collect()) == []  # unknown
    before = time.time()
    with TestClient(create_app(settings)) as client:
        client.app.state.sw.extra_collectors[-1].cache_s = 0  # type: ignore[attr-defined]
        text = client.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith(metric.name)]
    assert float(line.split()[1]) >= before - 1


def test_the_service_exposes_what_maintenance_found_on_metrics(settings: Settings) -> None:
    """Whichever process ran the pass (here another one: the CronJob), /metrics reads it."""
    with TestClient(create_app(settings)) as client:
        assert "servewatch_log_oldest_row_age_seconds" not in client.get("/metrics").text
        cron = PredictionStore(settings.database_url)
        now = time.time()
        insert(cron, {pid_at(now - 40 * 86_400, 1): (now - 40 * 86_400, now - 40 * 86_400),
                      pid_at(now - 60, 2): (now - 60, now - 60)})  # fmt: skip
        retention.maintain(cron, 30.0)
        cron.engine.dispose()
        client.app.state.sw.extra_collectors[-1].cache_s = 0  # type: ignore[attr-defined]
        text = client.get("/metrics").text
    assert "servewatch_log_retention_rows_dropped_total 1.0" in text
    (line,) = [x for x in text.splitlines() if x.startswith("servewatch_log_oldest_row_age")]
    age = float(line.split()[1])
    assert 55 <= age < 600


def test_a_drop_waiting_behind_a_long_read_gives_up_instead_of_queueing_the_writers(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attaching a partition (rows waiting in DEFAULT) or dropping one, behind a reader."""
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    store = PredictionStore(pg_url, partition_hours=1)
    store.create_schema()
    old = store.now() - 3 * 86_400
    insert(store, {pid_at(old, 1): (old, old)})  # waits in DEFAULT for its partition
    for passes in range(2):
        reader = store.engine.connect()
        reader.execute(sa.text("SELECT count(*) FROM sw_predictions")).scalar_one()  # a lock
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            retention.maintain(store, 1.0 if passes else None)
        reader.rollback()
        reader.close()
        assert ids_in(store) == {pid_at(old, 1)}  # nothing half-done
        done = retention.maintain(store, 1.0 if passes else None)  # the next pass does it
        assert (done.rows_moved, done.rows_dropped) == ((0, 1) if passes else (1, 0))
    assert ids_in(store) == set()
    store.engine.dispose()


def test_the_migration_waits_for_the_previous_release_s_writers(pg_url: str) -> None:
    """A session of the release before the partitioned log has staged rows (its temporary
    `sw_predictions_in`, as its pods make): `log maintain` leaves the log unpartitioned and says
    why; once that session is gone, the next pass partitions, and its rows are kept."""
    engine = sa.create_engine(normalise_url(pg_url))
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_PREDICTIONS))
        conn.execute(sa.text(OLD_FEEDBACK))
    old_pod = engine.connect()  # the previous release's write path (854c29f predlog/store.py)
    old_pod.execute(
        sa.text(
            f"CREATE TEMP TABLE IF NOT EXISTS {partitions.EARLIER_STAGING} "
            "(LIKE sw_predictions) ON COMMIT DELETE ROWS"
        )
    )
    old_pod.execute(
        sa.text(
            "INSERT INTO sw_predictions VALUES "
            "('a', 'm', 1, 1.0, '{}', '\"yes\"', NULL, 1.0, false)"
        )
    )
    old_pod.commit()
    old_pid = old_pod.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    from servewatch.cli import app

    store = PredictionStore(pg_url)
    try:
        waited = retention.maintain(store, None, migrate=True)
        assert (waited.migration, waited.earlier_writers) == ("deferred", 1)
        with store.engine.connect() as conn:
            assert partitions.relkind(conn, "sw_predictions") == "r"
        result = CliRunner().invoke(app, ["log", "maintain", "--database-url", pg_url])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["migration"] == "deferred"
        old_pod.close()  # the pod is replaced: its sessions end
        engine.dispose()
        # the server ends a closed session's backend (and its temporary table) on its own time:
        # wait for it to be gone, as the CronJob's next pass would be later still
        deadline = time.monotonic() + 60
        with store.engine.connect() as conn:
            while (
                time.monotonic() < deadline
                and conn.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": old_pid}
                ).scalar_one()
            ):
                time.sleep(0.1)
        done = retention.maintain(store, None, migrate=True)
        assert (done.migration, done.earlier_writers) == ("partitioned", 0)
        with store.engine.connect() as conn:
            assert partitions.relkind(conn, "sw_predictions") == "p"
        assert ids_in(store) == {"a"}
        assert retention.maintain(store, None, migrate=True).migration == ""
    finally:
        old_pod.close()
        store.dispose()
        engine.dispose()
