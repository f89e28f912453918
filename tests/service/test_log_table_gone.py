"""The prediction log's table vanishes under a running service (dropped or renamed by a person or
a failed migration): a store outage, not a refusal of the rows. Nothing answered is lost, nothing
is set aside as `.bad`, and the rows are written once the table is back."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from predlog.logwriter import LogWriter, Spool, is_outage
from predlog.store import PredictionStore, SchemaGap, is_schema_gap, normalise_url
from tests.service.conftest import Server, all_at_once
from tests.service.test_http import hammer, metric_total
from tests.service.test_logwriter import rows, wait_for


class Admin:
    """A DBA's own connection to the log (SQLite file or the test's PostgreSQL schema)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.engine = sa.create_engine(
            normalise_url(url), **({"connect_args": {"timeout": 30}} if self.sqlite else {})
        )

    def run(self, *statements: str) -> None:
        """The statements in one transaction that holds the log's table against writers (DDL
        is transactional in both databases)."""
        if self.sqlite:  # pysqlite's own transaction handling would commit before the DDL
            path = self.url.split("sqlite:///", 1)[1]
            with sqlite3.connect(path, timeout=30, isolation_level=None) as conn:
                conn.execute("BEGIN IMMEDIATE")
                for sql in statements:
                    conn.execute(sql)
                conn.execute("COMMIT")
            return
        with self.engine.begin() as conn:  # first, no write between the copy and the drop
            conn.exec_driver_sql("LOCK TABLE sw_predictions IN ACCESS EXCLUSIVE MODE")
            for sql in statements:
                conn.exec_driver_sql(sql)

    def ids(self, table: str) -> list[str]:
        if not self.has(table):
            return []
        with self.engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql(f'SELECT id FROM "{table}"')]

    def has(self, table: str) -> bool:
        return sa.inspect(self.engine).has_table(table)

    def indexes(self, table: str) -> set[str]:
        """The names of `table`'s own indexes (its key's too on PostgreSQL)."""
        with self.engine.connect() as conn:
            if self.sqlite:
                sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            else:
                sql = (
                    "SELECT indexname FROM pg_indexes "
                    "WHERE schemaname = current_schema() AND tablename = %s"
                )
            return {r[0] for r in conn.exec_driver_sql(sql, (table,))}

    def partitions(self, table: str) -> set[str]:
        with self.engine.connect() as conn:
            return {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = to_regclass(%s)",
                    (f'"{table}"',),
                )
            }

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/log.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def admin(log_url: str) -> Iterator[Admin]:
    a = Admin(log_url)
    yield a
    a.close()


# A table that vanishes, as a DBA or a failed migration makes it vanish. "drop" keeps a copy of
# what the table held (taken in the same transaction), so the test can tell a row the drop took
# from one the service lost.
VANISH: dict[str, tuple[str, ...]] = {
    "drop": (
        "CREATE TABLE sw_saved AS SELECT * FROM sw_predictions",
        "DROP TABLE sw_predictions",
    ),
    "rename": ("ALTER TABLE sw_predictions RENAME TO sw_saved",),
    # renamed under a name that starts with the log's own: never taken for one of its leftovers
    "rename_prefixed": ("ALTER TABLE sw_predictions RENAME TO sw_predictions_old",),
}
SAVED = {"drop": "sw_saved", "rename": "sw_saved", "rename_prefixed": "sw_predictions_old"}
LOG_INDEXES = {"ix_sw_predictions_model_time", "ix_sw_predictions_model_ingested"}


def check_both_indexed(admin: Admin, how: str) -> None:
    """The log created again has its indexes under its own names; a renamed table keeps its
    indexes (and on PostgreSQL its partitions), renamed after it where they had the log's."""
    assert LOG_INDEXES <= admin.indexes("sw_predictions")
    if admin.sqlite:
        assert "ix_sw_predictions_ingested" in admin.indexes("sw_predictions")
    if how == "drop":
        return
    saved = SAVED[how]
    kept = admin.indexes(saved)
    assert {n.replace("sw_predictions", saved, 1) for n in LOG_INDEXES} <= kept, kept
    if not admin.sqlite:
        parts = admin.partitions(saved)
        assert parts and all(p.startswith(saved + "_") for p in parts), parts
        assert admin.partitions("sw_predictions")  # the new log's own


def spool_files(spool: Path) -> tuple[list[Path], list[Path]]:
    """(files waiting to be replayed, files set aside as bad) under every worker's folder."""
    return sorted(spool.rglob("*.jsonl")), sorted(spool.rglob("*.bad"))


def test_a_missing_table_is_told_from_rows_the_store_refuses(admin: Admin) -> None:
    """The classification the writer relies on, on the real databases' own errors."""
    store = PredictionStore(admin.url)
    store.create_schema()
    store.write_predictions(rows(2))
    admin.run(*VANISH["drop"])
    with pytest.raises(SchemaGap) as gap:
        store.write_predictions(rows(1, start=10))
    assert is_outage(gap.value) and is_schema_gap(gap.value.__cause__)  # type: ignore[arg-type]
    store.write_predictions(rows(1, start=10))  # the store's own create brought the table back
    assert admin.ids("sw_predictions") == [f"{10:032x}"]
    too_long = {**rows(1, start=20)[0], "model": "m" * 5000}  # over VARCHAR(64) (PostgreSQL)
    bad = {**rows(1, start=21)[0], "version": None}  # NOT NULL: refused by both
    for row in ([too_long] if not admin.sqlite else []) + [bad]:
        with pytest.raises(Exception) as refused:
            store.write_predictions([row])
        assert not is_outage(refused.value), refused.value  # refused rows stay refused
    store.dispose()


def write_through_a_gap(store: PredictionStore, batch: list[dict[str, Any]]) -> None:
    """A write to a log whose table went: refused as a gap once, then written (the store's
    create runs first), as the writer's retry does."""
    with pytest.raises(SchemaGap):
        store.write_predictions(batch)
    store.write_predictions(batch)


def test_renamed_twice_under_odd_names_and_other_tables_left_alone(admin: Admin) -> None:
    """Two renames in a row (one to a name that needs quoting) each leave the log free to come
    back; a person's own table whose name starts with the log's, and its index, are never
    renamed; each renamed table keeps its rows and its indexes under its own name."""
    store = PredictionStore(admin.url)
    store.create_schema()
    store.write_predictions(rows(5))
    admin.run(
        "CREATE TABLE sw_predictions_archive (id INTEGER PRIMARY KEY, note TEXT)",
        "CREATE INDEX ix_sw_predictions_archive_note ON sw_predictions_archive (note)",
    )
    admin.run('ALTER TABLE sw_predictions RENAME TO "Saved Log"')
    write_through_a_gap(store, rows(5, start=100))
    admin.run("ALTER TABLE sw_predictions RENAME TO sw_saved2")
    write_through_a_gap(store, rows(5, start=200))
    store.dispose()
    assert sorted(admin.ids("Saved Log")) == sorted(r["id"] for r in rows(5))
    assert sorted(admin.ids("sw_saved2")) == sorted(r["id"] for r in rows(5, start=100))
    assert sorted(admin.ids("sw_predictions")) == sorted(r["id"] for r in rows(5, start=200))
    assert LOG_INDEXES <= admin.indexes("sw_predictions")
    for saved in ("Saved Log", "sw_saved2"):
        kept = admin.indexes(saved)
        assert {n.replace("sw_predictions", saved, 1) for n in LOG_INDEXES} <= kept, kept
    assert "ix_sw_predictions_archive_note" in admin.indexes("sw_predictions_archive")
    if not admin.sqlite:
        assert admin.indexes("sw_predictions_archive") == {
            "sw_predictions_archive_pkey",
            "ix_sw_predictions_archive_note",
        }
        parts = admin.partitions("Saved Log")
        assert parts and all(p.startswith("Saved Log_") for p in parts), parts


def test_workers_creating_the_log_at_once_after_a_rename_leave_it_every_index(
    tmp_path: Path,
) -> None:
    """SQLite, several stores (as several workers) creating the log at the same moment after
    a rename of a table of 20,000 rows: the names are moved once, under one write lock, and the
    new log ends with every index (a worker that read the catalogue before another moved the
    names could otherwise drop the new log's index)."""
    url = f"sqlite:///{tmp_path}/log.db"
    admin = Admin(url)
    for attempt in range(3):
        first = PredictionStore(url)
        first.create_schema()
        first.write_predictions(rows(20_000, start=attempt * 100_000))
        first.dispose()
        admin.run(f"ALTER TABLE sw_predictions RENAME TO sw_saved{attempt}")
        stores = [PredictionStore(url) for _ in range(4)]
        failed = all_at_once(lambda store: store.create_schema(), stores)
        for s in stores:
            s.dispose()
        assert not failed, failed
        assert LOG_INDEXES | {"ix_sw_predictions_ingested"} <= admin.indexes("sw_predictions")
        kept = admin.indexes(f"sw_saved{attempt}")
        assert f"ix_sw_saved{attempt}_model_time" in kept, kept
    admin.close()


@pytest.mark.parametrize("how", sorted(VANISH))
def test_the_writer_keeps_rows_while_the_table_is_gone_and_writes_them_once_back(
    admin: Admin, tmp_path: Path, how: str
) -> None:
    """The writer alone, on the real database: rows written, the table vanishes, more rows come;
    they wait in the spool (a failure counted, the store marked down), none is set aside, and
    every one is in the table the store creates again, once."""
    from predlog import metrics

    store = PredictionStore(admin.url)
    store.create_schema()
    spool_dir = tmp_path / "spool"
    writer = LogWriter(
        store, Spool(spool_dir, 10_000_000), batch_rows=50, flush_s=0.02, max_rows=10_000,
        retry_s=0.3,
    )  # fmt: skip
    writer.start()
    failures = metrics.LOG_WRITE_FAILURES._value.get()
    try:
        first = rows(100)
        for i in range(0, 100, 10):
            writer.try_put(first[i : i + 10])
        wait_for(lambda: len(admin.ids("sw_predictions")) == 100)
        admin.run(*VANISH[how])
        later = rows(300, start=1000)
        for i in range(0, 300, 10):
            assert writer.try_put(later[i : i + 10])
            time.sleep(0.005)
        wait_for(lambda: metrics.LOG_WRITE_FAILURES._value.get() > failures)
        wait_for(lambda: len(admin.ids("sw_predictions")) == 300, timeout=20)
        wait_for(lambda: spool_files(spool_dir) == ([], []))
    finally:
        writer.close()
        store.dispose()
    check_both_indexed(admin, how)
    saved = admin.ids(SAVED[how])
    logged = admin.ids("sw_predictions")
    assert sorted(saved) == sorted(r["id"] for r in first)
    assert sorted(logged) == sorted(r["id"] for r in later)  # each once, none lost
    assert writer.store_up
    assert spool_files(spool_dir) == ([], [])


@pytest.mark.parametrize("how", sorted(VANISH))
def test_the_log_table_vanishes_under_traffic_and_no_answered_row_is_lost(
    server_env: dict[str, str], registry_copy: Path, admin: Admin, how: str
) -> None:
    """A real service (uvicorn, 4 clients) answering while its log table is dropped or renamed:
    answers go on, the failure is counted in `servewatch_log_write_failures_total`, the store
    creates the table again, and every answered row is in the log once (in the new table, or in
    what the drop or rename took), none set aside as bad, the spool empty."""
    env = {
        **server_env,
        "SERVEWATCH_DATABASE_URL": admin.url,
        "SERVEWATCH_LOG_FLUSH_MS": "50",
    }
    spool_dir = Path(env["SERVEWATCH_SPOOL_DIR"])
    server = Server(env)
    answered: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=hammer, args=(server.url, registry_copy, stop, answered, errors))
        for _ in range(4)
    ]

    def until(cond: Callable[[], Any], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"{what} within {timeout} s"
            time.sleep(0.05)

    try:
        for t in clients:
            t.start()
        until(lambda: len(admin.ids("sw_predictions")) > 200, "rows in the log")
        admin.run(*VANISH[how])
        at_gap = len(answered)
        until(lambda: len(answered) > at_gap + 200, "answers after the table went")
        until(lambda: admin.has("sw_predictions"), "the table created again")
        metrics_text = httpx.get(server.url + "/metrics").text
        until(lambda: len(answered) > at_gap + 600, "more answers once it was back")
        until(lambda: spool_files(spool_dir) == ([], []), "the spool replayed")
    finally:
        stop.set()
        for t in clients:
            t.join()
        output = server.stop()
    assert errors == [], errors[:3]
    failures = metric_total(metrics_text, "servewatch_log_write_failures_total") + _counter(
        metrics_text, "servewatch_log_write_failures_total"
    )
    assert failures >= 1, output[-2000:]
    assert "is missing tables, spooling" in output, output[-2000:]
    check_both_indexed(admin, how)
    logged = admin.ids("sw_predictions") + admin.ids(SAVED[how])
    assert len(logged) == len(set(logged))  # none twice
    assert set(answered) <= set(logged), output[-2000:]  # none lost
    assert spool_files(spool_dir) == ([], [])  # nothing waiting, nothing set aside as bad


def _counter(text: str, name: str) -> float:
    """An unlabelled counter's value in the exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_role_that_may_not_write_is_an_outage_not_a_refusal(pg_url: str) -> None:
    """PostgreSQL: the service's role loses the right to insert (a DBA's REVOKE): its writes fail
    as a schema gap (kept, retried), and succeed once the right is granted back."""
    import uuid

    admin = Admin(pg_url)
    schema = pg_url.rsplit("%3D", 1)[1]
    role = f"sw_ro_{uuid.uuid4().hex[:8]}"
    owner = PredictionStore(pg_url)
    owner.create_schema()
    owner.dispose()
    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    base = pg_url.split("://", 1)[1].split("@", 1)[1]
    store = PredictionStore(f"postgresql://{role}@{base}")
    try:
        with pytest.raises(SchemaGap) as gap:
            store.write_predictions(rows(2))
        assert is_outage(gap.value)
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f"GRANT INSERT ON ALL TABLES IN SCHEMA {schema} TO {role}")
        store.write_predictions(rows(2))
        assert sorted(admin.ids("sw_predictions")) == sorted(r["id"] for r in rows(2))
    finally:
        store.dispose()
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.close()
