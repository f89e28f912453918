"""The prediction log: tables, and the store that reads and writes them (SQLite or PostgreSQL).

The service writes these tables through `LogWriter`; monitoring reads them through
`PredictionStore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.errors import ServewatchError, first_line
from core.rows import FeedbackRow, PredictionRow
from predlog import partitions

log = logging.getLogger("servewatch.log")

metadata = sa.MetaData()

predictions = sa.Table(
    "sw_predictions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),  # Unix seconds, UTC
    sa.Column("inputs", sa.Text, nullable=False),  # JSON object of the features
    sa.Column("prediction", sa.Text, nullable=False),  # JSON value
    sa.Column("probabilities", sa.Text, nullable=True),  # JSON object class -> p
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("ref_id", sa.String(32), nullable=True),  # shadow rows: the answered prediction
    # When the row reached the store (Unix s, stamped at insert): monitoring windows follow it,
    # so a row that arrives late (replayed from a spool, flushed late by another replica) falls
    # into the next window instead of behind one that has moved on.
    sa.Column("ingested_at", sa.Float, nullable=True),
    sa.Index("ix_sw_predictions_model_time", "model", "version", "created_at"),
    sa.Index("ix_sw_predictions_model_ingested", "model", "version", "ingested_at"),
)

feedback = sa.Table(
    "sw_feedback",
    metadata,
    sa.Column("prediction_id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("label", sa.Text, nullable=False),  # JSON value
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index("ix_sw_feedback_model_time", "model", "received_at"),
)

# The keys prediction ids are tagged with when SERVEWATCH_ID_KEY is unset: `deployment` (made by
# the first process to start), and keys processes made while the store was away (`p-...`).
id_keys = sa.Table(
    "sw_id_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# What log maintenance last did (one row; totals since the log was created): read by the
# service's /metrics at scrape time, whichever process (worker, CronJob) ran it.
log_retention = sa.Table(
    "sw_log_retention",
    metadata,
    sa.Column("key", sa.String(16), primary_key=True),
    sa.Column("ran_at", sa.Float, nullable=False),
    sa.Column("oldest_ingested_at", sa.Float, nullable=True),
    sa.Column("rows_dropped", sa.BigInteger, nullable=False),
    sa.Column("labels_dropped", sa.BigInteger, nullable=False),
    sa.Column("partitions_dropped", sa.Integer, nullable=False),
)


def normalise_url(url: str) -> str:
    """postgresql:// URLs use psycopg 3; SQLite files get their folder created."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 5}
    )


def insert_or(engine: Engine, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _upsert_label(engine: Engine, now_sql: str | None = None) -> Any:
    """Insert or replace labels; with `now_sql`, stamped by that SQL clock (the database's)
    instead of the rows' own `received_at`."""
    stmt = insert_or(engine, feedback)
    if now_sql is not None:
        stmt = stmt.values(received_at=sa.literal_column(now_sql))
    return stmt.on_conflict_do_update(
        index_elements=["prediction_id"],
        set_={
            "model": stmt.excluded.model,
            "label": stmt.excluded.label,
            "received_at": stmt.excluded.received_at,
        },
    )


def prediction_rows(
    *,
    ids: Sequence[str],
    model: str,
    version: int,
    created_at: float,
    inputs: Sequence[dict[str, Any]],
    predictions: Sequence[Any],
    probabilities: Sequence[dict[str, float]] | None,
    latency_ms: float,
    shadow: bool = False,
    ref_ids: Sequence[str] | None = None,
) -> list[PredictionRow]:
    """`sw_predictions` rows, one per prediction: the one place that knows the row's shape.

    Built in one comprehension with the JSON encoder bound locally: on the request path this is
    the largest per-row cost after validation.
    """
    dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    probs = probabilities if probabilities is not None else [None] * len(ids)
    refs = ref_ids if ref_ids is not None else [None] * len(ids)
    return [
        {  # a literal, not PredictionRow(...): 39 us for 32 rows, the keyword call 47
            "id": pid,
            "model": model,
            "version": version,
            "created_at": created_at,
            "inputs": dumps(inst, option=opt).decode(),
            "prediction": dumps(pred, option=opt).decode(),
            "probabilities": dumps(prob).decode() if prob is not None else None,
            "latency_ms": latency_ms,
            "shadow": shadow,
            "ref_id": ref,
        }
        for pid, inst, pred, prob, ref in zip(ids, inputs, predictions, probs, refs, strict=True)
    ]


# The columns a row carries; `ingested_at` is stamped by the store as it inserts.
PREDICTION_COLUMNS = tuple(c.name for c in predictions.columns if c.name != "ingested_at")
_ROW_VALUES = itemgetter(*PREDICTION_COLUMNS)


def _row_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's values in column order (rows spooled by older versions may lack newer keys)."""
    try:
        return _ROW_VALUES(row)  # type: ignore[no-any-return]
    except KeyError:
        return tuple(row.get(c) for c in PREDICTION_COLUMNS)


_SHADOW_FROM_END = len(PREDICTION_COLUMNS) - PREDICTION_COLUMNS.index("shadow") + 1


def _params(rows: Sequence[Mapping[str, Any]], ingested_at: float) -> list[Any]:
    """The rows' values in column order, each row's ingest time last; `shadow` as the integer
    SQLite stores for a bool (sqlite3 binds an int in a third of a bool's time)."""
    params: list[Any] = []
    for values in map(_row_values, rows):
        params += values
        params.append(ingested_at)
        if type(shadow := params[-_SHADOW_FROM_END]) is bool:
            params[-_SHADOW_FROM_END] = int(shadow)
    return params


# sqlite3 binds None (every row's `ref_id`) through its adaptation protocol, which looks for
# an adapter by raising and clearing an AttributeError: 350 ns a value. Found in its table of
# adapters, None costs 190 ns and binds as NULL all the same.
sqlite3.register_adapter(type(None), lambda value: value)


INGESTED_INDEX = "ix_sw_predictions_ingested ON sw_predictions (ingested_at)"  # SQLite
INSERT_CHUNK_ROWS = 500  # 5,000 parameters per statement: inside SQLite's and libpq's limits


# A retried batch is found by id among rows ingested up to this long before the rows were made
# (PostgreSQL's partitioned log: its unique key must hold the partition key; see _copy_predictions).
DEDUPE_WINDOW_S = 86_400.0


# SQLSTATEs of PostgreSQL's refusals that hold whatever the rows are: the table or a column is
# missing (dropped, renamed), or the role may not write to it (rights revoked).
MISSING_SCHEMA_STATES = frozenset({"42P01", "42703", "42501"})
MISSING_SCHEMA_SQLITE = ("no such table", "has no column named", "no such column")


class SchemaGap(ServewatchError):
    """The log's tables (a table, a column, the partition a row belongs in, the right to write
    to them) are not there, or could not be created: the store refuses every row, whatever it
    holds, until they are back. An outage for the log writer, never a refusal of the rows."""


def is_schema_gap(exc: BaseException) -> bool:
    """`exc` (SQLAlchemy's, or the driver's own) says a table, column or partition of the log
    is missing, or the rights to write to it are."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None)
    text = str(orig)
    if state in MISSING_SCHEMA_STATES:
        return True
    if state == "23514" and "no partition of relation" in text:  # DEFAULT partition dropped
        return True
    return isinstance(orig, sqlite3.Error) and any(m in text for m in MISSING_SCHEMA_SQLITE)


class PredictionStore:
    """Reads and writes the log tables; every write is idempotent (a row already logged under
    its id is skipped).

    On PostgreSQL the log is partitioned by ingest time (`predlog.partitions`): `partition_hours`
    per partition, `partitions_ahead` created ahead of the current one.
    """

    def __init__(self, url: str, *, partition_hours: int = 24, partitions_ahead: int = 3) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.partition_s = partition_hours * 3600
        self.partitions_ahead = partitions_ahead
        self._schema_ready = False
        self.earlier_writers = 0
        """Sessions of an earlier release that kept the last `maintain_partitions(migrate=True)`
        from partitioning the log (`predlog.partitions.earlier_writers`)."""

    def _ensure_schema(self) -> None:
        """Create (or migrate) the tables on first use: a service that started while the store
        was down creates them once it is back, instead of failing every write."""
        if not self._schema_ready:
            self.create_schema()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around a write: the tables are created first; a missing table, column or partition
        (dropped or renamed under a running service, by a person or a failed migration) or a
        failed create raises `SchemaGap`, and the next write creates the tables again (what a
        restart would do; idempotent)."""
        try:
            self._ensure_schema()
        except Exception as exc:
            raise SchemaGap(
                f"creating the log's tables failed: {first_line(exc, named=True)}"
            ) from exc
        try:
            yield
        except Exception as exc:
            if not is_schema_gap(exc):
                raise
            self._schema_ready = False
            raise SchemaGap(
                f"the log's tables are not all there: {first_line(exc, named=True)}"
            ) from exc

    def create_schema(self) -> None:
        """Create the tables (partitioned on PostgreSQL), or add the columns older logs lack
        (rows kept); idempotent, and safe to run from several workers at once.

        An unpartitioned PostgreSQL log stays unpartitioned until `maintain_partitions(
        migrate=True)` (`servewatch log maintain`, the retention CronJob): the pods of the
        release before, still running during a rolling update, can write only to it.
        """
        if self.engine.dialect.name == "postgresql":
            self.maintain_partitions()
            return
        # One worker at a time (an IMMEDIATE transaction takes SQLite's write lock before the
        # catalogue is read): two creating the tables at once made one fail with "table
        # already exists", and a worker freeing the log's index names must not act on what it
        # read before another worker moved them.
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                inspector = sa.inspect(conn)
                columns = set()
                if inspector.has_table("sw_predictions"):
                    columns = {c["name"] for c in inspector.get_columns("sw_predictions")}
                # Additive migrations for logs created before shadow rows and ingest times
                # existed (older rows count as ingested when they were created); indexes come
                # after the columns.
                if columns and "ref_id" not in columns:
                    conn.exec_driver_sql("ALTER TABLE sw_predictions ADD COLUMN ref_id VARCHAR(32)")
                if columns and "ingested_at" not in columns:
                    conn.exec_driver_sql("ALTER TABLE sw_predictions ADD COLUMN ingested_at FLOAT")
                    conn.exec_driver_sql("UPDATE sw_predictions SET ingested_at = created_at")
                moved = _free_sqlite_index_names(conn)
                metadata.create_all(conn)
                # retention deletes (and finds the oldest row) by it
                conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {INGESTED_INDEX}")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        _said_moved(moved)
        self._schema_ready = True

    def maintain_partitions(
        self, retention_s: float | None = None, now: float | None = None, *, migrate: bool = False
    ) -> partitions.Maintenance | None:
        """PostgreSQL, in one transaction under the advisory lock: create the tables, the
        partitions ahead and those DEFAULT holds rows for, and with `retention_s` drop what is
        older (see `predlog.partitions.maintain`). An unpartitioned log gets the columns it
        lacks and is partitioned only with `migrate`, and only once no pod of a release before
        the partitioned log writes to it (`earlier_writers` counts those that deferred it); None
        when it stays unpartitioned."""
        done = None
        migrated = False
        self.earlier_writers = 0
        with self.engine.begin() as conn:
            partitions.lock(conn)
            kinds = {
                partitions.relkind(conn, t) for t in (partitions.PREDICTIONS, partitions.FEEDBACK)
            }
            if migrate and "r" in kinds:
                self.earlier_writers = partitions.earlier_writers(conn)
                if self.earlier_writers:
                    log.warning(
                        "the log stays unpartitioned: %d session(s) of a release before the "
                        "partitioned log still write to it; the next maintenance tries again",
                        self.earlier_writers,
                    )
                else:
                    migrated = partitions.migrate(conn, self.partition_s)
            if partitions.relkind(conn, partitions.PREDICTIONS) == "r":
                partitions.add_columns(conn)
            else:
                _said_moved(partitions.create_tables(conn))
                done = partitions.maintain(
                    conn,
                    interval_s=self.partition_s,
                    ahead=self.partitions_ahead,
                    retention_s=retention_s,
                    now=now,
                )
                done.migration = "partitioned" if migrated else ""
            metadata.create_all(conn)  # the other tables; the partitioned ones exist
        self._schema_ready = True
        return done

    @property
    def _db_now_sql(self) -> str:
        """The database's own clock as Unix seconds, in SQL: every writer (worker, replica,
        spool replay) stamps `ingested_at` by one clock, the one monitoring reads by."""
        if self.engine.dialect.name == "postgresql":
            return "extract(epoch from clock_timestamp())"
        return "((julianday('now') - 2440587.5) * 86400.0)"

    def now(self) -> float:
        """The database's clock (Unix seconds)."""
        with self.engine.connect() as conn:
            return float(conn.execute(sa.text(f"SELECT {self._db_now_sql}")).scalar_one())

    def stamp_unstamped(self, model: str) -> int:
        """Give rows without an ingest time (written by a release before it, e.g. old pods
        during a rolling update) the current one, so a later window takes them; returns how
        many. The partitioned log has none (the column is its NOT NULL partition key, defaulted
        to the database's clock), so it is not scanned for them."""
        stmt = sa.text(
            f"UPDATE {predictions.name} SET ingested_at = {self._db_now_sql} "
            "WHERE model = :model AND ingested_at IS NULL"
        )
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                if partitions.relkind(conn, partitions.PREDICTIONS) == "p":
                    return 0
            return int(conn.execute(stmt, {"model": model}).rowcount or 0)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def write_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (`PredictionRow`s, or rows spooled by an older release that may lack
        newer keys); rows already present (a retried batch) are skipped, never doubled.

        One multi-row INSERT per chunk, not an executemany: the driver releases the GIL for
        each statement it runs, and a statement per row made the writer thread take the GIL
        back from the event loop once per row (measured: a fifth of the loop's time at
        4,000 predictions/s). One statement per few hundred rows takes it back once.
        """
        if not rows:
            return
        with self._writing():
            if self.engine.dialect.name == "postgresql":
                self._copy_predictions(rows)
                return
            with self.engine.begin() as conn:
                # the database's clock read once per batch, not once per row in the INSERT:
                # the same value (SQLite's 'now' is fixed within a statement), 5-10% less CPU
                now = float(conn.exec_driver_sql(f"SELECT {self._db_now_sql}").scalar_one())
                for start in range(0, len(rows), INSERT_CHUNK_ROWS):
                    chunk = rows[start : start + INSERT_CHUNK_ROWS]
                    conn.exec_driver_sql(self._insert_sql(len(chunk)), tuple(_params(chunk, now)))

    def _copy_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """PostgreSQL: look up which ids are already logged, then COPY the others straight into
        the partitioned table (each row routed to its partition, `ingested_at` stamped by the
        column's default: the database's clock).

        The partitioned table's unique key must hold the partition key (id, ingested_at), and a
        retried batch gets a new ingest time, so ON CONFLICT cannot find it: the ids are looked
        up instead (`id = ANY(...)` on the primary key's index) among rows ingested since a day
        before the batch's oldest row was made, so only that day's partitions are probed. A
        join against a staging table (NOT EXISTS) was planned as a hash anti join that read
        every partition whole. The log writer hands one batch to one store call at a time, and
        a worker replays only spool folders it holds the lock of, so the same row is never
        written by two calls at once.
        """
        cols = ", ".join(PREDICTION_COLUMNS)
        made = [r.get("created_at") for r in rows]
        since = min((float(t) for t in made if t is not None), default=0.0) - DEDUPE_WINDOW_S
        raw = self.engine.raw_connection()
        try:
            cur: Any = raw.cursor()  # psycopg 3: COPY is a driver feature
            try:
                cur.execute(
                    f"SELECT id FROM {predictions.name} WHERE id = ANY(%s) AND ingested_at >= %s",
                    ([r["id"] for r in rows], since),
                )
                present = {r[0] for r in cur.fetchall()}
                with cur.copy(f"COPY {predictions.name} ({cols}) FROM STDIN") as copy:
                    for values in map(_row_values, rows):
                        if values[0] not in present:  # nor twice from one batch
                            present.add(values[0])
                            copy.write_row(values)
            finally:
                cur.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    def _insert_sql(self, n: int) -> str:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        one = "(" + ", ".join([mark] * (len(PREDICTION_COLUMNS) + 1)) + ")"
        return (
            f"INSERT INTO {predictions.name} ({', '.join(PREDICTION_COLUMNS)}, ingested_at) VALUES "
            + ", ".join([one] * n)
            + " ON CONFLICT (id) DO NOTHING"
        )

    def write_labels(self, rows: Sequence[FeedbackRow], *, db_clock: bool = False) -> None:
        """Insert or replace labels. `db_clock`: `received_at` is the database's clock as the
        row is written (the service's labels: monitoring's labels window reads by that clock, so
        a replica's clock or a slow write can never put a label behind a window that ran)."""
        if rows:
            now_sql = self._db_now_sql if db_clock else None
            params: list[Any] = list(rows)
            if db_clock:
                params = [{k: v for k, v in r.items() if k != "received_at"} for r in rows]
            with self._writing(), self.engine.begin() as conn:
                conn.execute(_upsert_label(self.engine, now_sql), params)

    def existing_ids(self, model: str, ids: Iterable[str]) -> set[str]:
        """The ids among `ids` the log holds a prediction of `model` under."""
        wanted = list(ids)
        found: set[str] = set()
        self._ensure_schema()
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                stmt = sa.select(predictions.c.id).where(
                    predictions.c.model == model, predictions.c.id.in_(chunk)
                )
                found.update(r[0] for r in conn.execute(stmt))
        return found

    def id_secrets(self, pending: str | None = None) -> list[str]:
        """The keys of `sw_id_keys`, the deployment's (the one to tag with) first; it is made on
        first use. `pending`, a key a process tagged with while the store was away, is added."""
        self._ensure_schema()
        stmt = insert_or(self.engine, id_keys).on_conflict_do_nothing(index_elements=["name"])
        made = [{"name": "deployment", "secret": secrets.token_hex(32), "created_at": time.time()}]
        if pending is not None:
            name = "p-" + hashlib.sha256(pending.encode()).hexdigest()[:16]
            made.append({"name": name, "secret": pending, "created_at": time.time()})
        with self.engine.begin() as conn:
            conn.execute(stmt, made)
            rows = conn.execute(sa.select(id_keys.c.name, id_keys.c.secret)).all()
        return [s for name, s in sorted(rows, key=lambda r: (r[0] != "deployment", r[0]))]

    def count_predictions(self, model: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(predictions)
        if model:
            stmt = stmt.where(predictions.c.model == model)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def read_window(
        self,
        model: str,
        *,
        version: int | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Logged predictions (newest first) with their label joined where feedback has one."""
        stmt = (
            sa.select(predictions, feedback.c.label)
            .select_from(labelled(predictions))
            .where(predictions.c.model == model)
        )
        if version is not None:
            stmt = stmt.where(predictions.c.version == version)
        if since is not None:
            stmt = stmt.where(predictions.c.created_at >= since)
        stmt = stmt.order_by(predictions.c.created_at.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def count_window(self, window: WindowQuery) -> int:
        """The rows `window` holds (before any cap)."""
        return self._size(window, newest=False)[0]

    def window_size(self, window: WindowQuery) -> tuple[int, float | None]:
        """The rows `window` holds (before any cap), and the newest one's time by its clock."""
        return self._size(window, newest=True)

    def _size(self, window: WindowQuery, *, newest: bool) -> tuple[int, float | None]:
        """Count (and with `newest` the newest time of) `window`'s rows, branch by branch; an
        unlabelled window is counted on the predictions alone (a row joins one label at most)."""
        rows = labelled(predictions, inner=True) if window.labelled else predictions
        measures: list[sa.ColumnElement[Any]] = [sa.func.count()]
        if newest:
            measures.append(sa.func.max(_clock_time(window.clock)))
        n, latest = 0, None
        with self.engine.connect() as conn:
            for branch in _branches(window):
                got = conn.execute(sa.select(*measures).select_from(rows).where(*branch)).one()
                n += int(got[0])
                if newest and got[1] is not None:
                    latest = float(got[1]) if latest is None else max(latest, float(got[1]))
        return n, latest

    def read_log_window(
        self,
        window: WindowQuery,
        *,
        cap: int,
        sample_over: int | None = None,
        inputs: bool = True,
        outputs: bool = True,
    ) -> list[LoggedRow]:
        """The log's one window query: the answered predictions (never shadow rows) of
        `window.model` (and version) whose time by `window.clock` falls in (since, until] (`made`:
        at or after `since`), with their labels (only labelled ones with `window.labelled`): `id`,
        `version`, `created_at`, `inputs` (left out without `inputs`), `prediction` and
        `probabilities` (left out without `outputs`: retraining and export use neither) and
        `label` as logged (JSON text; `label` None: no label yet).

        At most `cap` rows, chosen in the database (memory holds `cap` rows at most, however long
        the log): with `sample_over` (the window's size, `count_window`) above the cap, the rows
        whose ids' random low bits fall under the share cap/size, ordered by those bits (every
        row can be drawn, and the same window gives the same sample); otherwise the newest by the
        clock's column, newest first (the `met` clock, which has no one column: by id bits).
        """
        j = labelled(predictions, inner=window.labelled)
        columns = [
            predictions.c.id,
            predictions.c.version,
            predictions.c.created_at,
            *([predictions.c.inputs] if inputs else []),
            *([predictions.c.prediction, predictions.c.probabilities] if outputs else []),
            feedback.c.label,
        ]
        branches = _branches(window)
        sampled = sample_over is not None and sample_over > cap
        if sampled:
            assert sample_over is not None
            branches = [[*b, sampled_ids(predictions.c.id, sample_over, cap)] for b in branches]
        if window.clock == "met":
            rows = sa.union_all(
                *(sa.select(*columns).select_from(j).where(*b) for b in branches)
            ).subquery()
            stmt = sa.select(rows).order_by(id_bits(rows.c.id)).limit(cap)
        else:
            order = id_bits(predictions.c.id) if sampled else _clock_time(window.clock).desc()
            stmt = sa.select(*columns).select_from(j).where(*branches[0]).order_by(order)
            stmt = stmt.limit(cap)
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            keys = tuple(result.keys())  # rows as plain dicts, built without SQLAlchemy's mapping
            return [cast(LoggedRow, dict(zip(keys, r, strict=True))) for r in result]

    def dispose(self) -> None:
        self.engine.dispose()


SAMPLE_HEX = 4
"""The last 4 hex digits of an id (random bits) decide a window's sample."""

Clock = Literal["made", "ingested", "met"]
"""The time a window's (since, until] bounds: `made`, the prediction's (`created_at`: retraining's
and export's windows); `ingested`, when its row reached the store (monitoring's rows windows: a row
that arrives late falls into a later window); `met`, when its label met it, the later of the
label's arrival and the row's ingest (monitoring's labels windows: a late label is judged by the
run that sees it)."""


@dataclass(frozen=True)
class WindowQuery:
    """Which rows of the log a window holds: the answered predictions of `model` (and
    `version`; None: every version) in (since, until] by `clock` (`made`: at or after `since`),
    with a label only when `labelled`."""

    model: str
    version: int | None = None
    since: float | None = None
    until: float | None = None
    clock: Clock = "made"
    labelled: bool = True


class LoggedRow(TypedDict):
    """A logged prediction with its label, as `read_log_window` reads it (JSON text as logged)."""

    id: str
    version: int
    created_at: float
    inputs: NotRequired[str]
    prediction: NotRequired[str]
    probabilities: NotRequired[str | None]
    label: str | None


def id_bits(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """The random low bits of an id (its last `SAMPLE_HEX` hex digits), which samples follow."""
    return sa.func.substr(column, 33 - SAMPLE_HEX, SAMPLE_HEX)


def sampled_ids(column: sa.ColumnElement[str], total: int, cap: int) -> sa.ColumnElement[bool]:
    """Ids whose random low bits fall under the share cap/total: every row can be drawn, and the
    same rows always give the same sample."""
    keep = max(1, int(16**SAMPLE_HEX * cap / total))
    bound = f"{min(keep, 16**SAMPLE_HEX - 1):0{SAMPLE_HEX}x}"
    return id_bits(column) < bound


def met_between(
    since: float | None, until: float | None, rows: sa.FromClause = predictions
) -> list[list[sa.ColumnElement[bool]]]:
    """A label met its prediction at the later of the label's arrival and the prediction's ingest
    (a label can reach the store before a spooled prediction does). Meetings in (since, until] as
    two disjoint sets of conditions each index can serve: labels that arrived in the span (their
    predictions ingested by its end), and predictions ingested in it whose labels came before.
    `rows`: the predictions table or an alias of it."""
    got, ingested = feedback.c.received_at, rows.c.ingested_at
    upper = [] if until is None else [got <= until, ingested <= until]
    if since is None:
        return [upper]
    return [[got > since, *upper], [ingested > since, got <= since, *upper[1:]]]


def _clock_time(clock: Clock) -> sa.ColumnElement[float]:
    """A row's time by `clock`."""
    if clock == "made":
        return predictions.c.created_at
    if clock == "ingested":
        return predictions.c.ingested_at
    got, ingested = feedback.c.received_at, predictions.c.ingested_at
    return sa.case((got > ingested, got), else_=ingested)


def _branches(window: WindowQuery) -> list[list[sa.ColumnElement[bool]]]:
    """`window`'s conditions: one set, or (the `met` clock) two disjoint sets whose rows add up."""
    if window.clock == "met" and not window.labelled:
        raise ValueError("the met clock is a label's: a window by it holds labelled rows only")
    mine = [predictions.c.model == window.model, predictions.c.shadow.is_(False)]
    if window.version is not None:
        mine.append(predictions.c.version == window.version)
    if window.clock == "met":
        return [[*mine, *met] for met in met_between(window.since, window.until)]
    at = _clock_time(window.clock)
    if window.since is not None:
        mine.append(at >= window.since if window.clock == "made" else at > window.since)
    if window.until is not None:
        mine.append(at <= window.until)
    return [mine]


def labelled(rows: sa.FromClause, *, inner: bool = False) -> sa.Join:
    """`rows` (the predictions table or an alias of it) with their labels: a label joins the
    prediction of its own model under its id, never another model's."""
    on = sa.and_(feedback.c.prediction_id == rows.c.id, feedback.c.model == rows.c.model)
    return rows.join(feedback, on) if inner else rows.outerjoin(feedback, on)


def _said_moved(moved: list[tuple[str, str]]) -> None:
    if moved:
        log.warning(
            "the log's tables were missing while a renamed copy held their names; renamed %s",
            ", ".join(f"{old} -> {new}" for old, new in moved),
        )


# The index's own name in its CREATE statement, in any of SQLite's quotings.
_INDEX_NAME = re.compile(
    r"(?is)^(\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?)"
    r'("(?:[^"]|"")*"|\[[^\]]*\]|`[^`]*`|[^\s(]+)'
)


def _free_sqlite_index_names(conn: sa.Connection) -> list[tuple[str, str]]:
    """SQLite: indexes of a table renamed from a log table keep the log's index names, which are
    unique per database, so the log's own could not be created with them. A missing log table's
    index names held by another table are given to that table: the index is dropped and built
    again on it under its name (SQLite cannot rename an index; about 1 s per index per million
    rows). Call in the transaction that creates the tables, which holds the write lock."""
    ours: dict[str, list[str]] = {
        table.name: [str(ix.name) for ix in table.indexes if ix.name]
        for table in (predictions, feedback)
    }
    ours[predictions.name].append(INGESTED_INDEX.split()[0])
    rows = conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master").all()
    tables = {name for kind, name, _, _ in rows if kind == "table"}
    taken = {name for _, name, _, _ in rows}
    moved: list[tuple[str, str]] = []
    for kind, name, holder, sql in rows:
        table = next((t for t, names in ours.items() if name in names), None)
        if kind != "index" or table is None or table in tables or holder == table:
            continue
        m = _INDEX_NAME.match(sql or "")
        if m is None:
            continue
        new = name.replace(table, holder, 1)
        if new == name or new in taken:
            new = f"{name}_of_{holder}"
        while new in taken:
            new += "_"
        quoted = '"' + new.replace('"', '""') + '"'
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.exec_driver_sql(sql[: m.start(2)] + quoted + sql[m.end(2) :])
        taken.add(new)
        moved.append((name, new))
    return moved


def encode(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
