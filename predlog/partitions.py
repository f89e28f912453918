"""PostgreSQL time partitions of the prediction log: made ahead, moved out of DEFAULT, dropped.

`sw_predictions` is partitioned by RANGE (`ingested_at`), the column monitoring windows and
retention use; `sw_feedback` by RANGE (`prediction_id`): ids start with their issue time in
milliseconds, so a label lives in the partition of the day its prediction was made and a
relabel (ON CONFLICT on the id) stays in place. Every partition DDL runs in one transaction
under an advisory lock, so several workers (and the CronJob) may call it at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

PREDICTIONS = "sw_predictions"
FEEDBACK = "sw_feedback"
DEFAULT_SUFFIX = "_default"
LEGACY_SUFFIX = "_legacy"
DB_NOW = "extract(epoch from clock_timestamp())"
LOCK_TIMEOUT = "5s"
"""Longest partition DDL waits for a table lock. Attaching a partition locks DEFAULT, and
dropping one locks the parent, exclusively: while such a lock waits behind a long read (a
monitoring window), every insert that needs the table queues behind it. So the pass gives up
(its transaction rolls back whole) and the next pass tries again."""

PREDICTIONS_DDL = f"""
CREATE TABLE {PREDICTIONS} (
    id VARCHAR(32) NOT NULL,
    model VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL,
    created_at FLOAT NOT NULL,
    inputs TEXT NOT NULL,
    prediction TEXT NOT NULL,
    probabilities TEXT,
    latency_ms FLOAT NOT NULL,
    shadow BOOLEAN NOT NULL DEFAULT false,
    ref_id VARCHAR(32),
    ingested_at FLOAT NOT NULL DEFAULT {DB_NOW},
    CONSTRAINT {PREDICTIONS}_pkey PRIMARY KEY (id, ingested_at)
) PARTITION BY RANGE (ingested_at)
"""
# Same names as the unpartitioned table's indexes (predlog.store), one per partition.
PREDICTIONS_INDEXES = (
    f"CREATE INDEX ix_{PREDICTIONS}_model_time ON {PREDICTIONS} (model, version, created_at)",
    f"CREATE INDEX ix_{PREDICTIONS}_model_ingested ON {PREDICTIONS} (model, version, ingested_at)",
)
FEEDBACK_DDL = f"""
CREATE TABLE {FEEDBACK} (
    prediction_id VARCHAR(32) NOT NULL,
    model VARCHAR(64) NOT NULL,
    label TEXT NOT NULL,
    received_at FLOAT NOT NULL,
    CONSTRAINT {FEEDBACK}_pkey PRIMARY KEY (prediction_id)
) PARTITION BY RANGE (prediction_id)
"""
FEEDBACK_INDEXES = (f"CREATE INDEX ix_{FEEDBACK}_model_time ON {FEEDBACK} (model, received_at)",)
INDEX_SUFFIXES = {PREDICTIONS: ("model_time", "model_ingested"), FEEDBACK: ("model_time",)}
"""The suffixes of the indexes above (`ix_<table>_<suffix>`)."""
FEEDBACK_COLUMNS = "prediction_id, model, label, received_at"
MAX_PERIOD_START = 253_402_300_800  # 10000-01-01: datetime's limit


def id_bound(t: float) -> str:
    """The smallest prediction id issued at Unix second `t` (ids: 12 hex ms + 20 hex random)."""
    return f"{max(0, int(round(t * 1000))):012x}" + "0" * 20


def period_start(t: float, interval_s: int) -> int:
    return int(t // interval_s) * interval_s


def partition_name(table: str, start: int) -> str:
    """`<table>_pYYYYMMDD_HHMM`; a period before the epoch or past year 9999 has no partition
    (maintenance never asks for one: `_default_periods`)."""
    if not 0 <= start < MAX_PERIOD_START:
        raise ValueError(f"no partition for a period starting at {start} (Unix s)")
    return f"{table}_p{datetime.fromtimestamp(start, UTC):%Y%m%d_%H%M}"


@dataclass(frozen=True)
class Partition:
    name: str
    lo: float | None  # None: MINVALUE
    hi: float | None  # None: MAXVALUE; both None: the DEFAULT partition

    @property
    def is_default(self) -> bool:
        return self.name.endswith(DEFAULT_SUFFIX)


@dataclass
class Maintenance:
    """What one maintenance pass did and found."""

    created: list[str] = field(default_factory=list)
    rows_moved: int = 0
    labels_moved: int = 0
    dropped: list[str] = field(default_factory=list)
    rows_dropped: int = 0
    labels_dropped: int = 0
    oldest_ingested_at: float | None = None
    migration: str = ""
    """"partitioned" when this pass partitioned the log; "deferred" when writers of an earlier
    release kept it from doing so (`earlier_writers`)."""
    earlier_writers: int = 0


def lock(conn: Connection) -> None:
    """Serialise partition DDL per schema for the rest of the transaction; table locks taken
    after it wait at most `LOCK_TIMEOUT`."""
    conn.exec_driver_sql(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.sw_partitions'))"
    )
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")


def relkind(conn: Connection, table: str) -> str | None:
    """'p' partitioned, 'r' plain table, None when `table` does not exist (search_path aware)."""
    row = conn.exec_driver_sql(
        "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (table,)
    ).first()
    return None if row is None else str(row[0])


_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)")


def _value(text: str, table: str) -> float | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    raw = text.strip("'")
    if table == FEEDBACK:  # ids: the issue time in the first 12 hex digits
        return int(raw[:12], 16) / 1000.0
    return float(raw)


def partitions(conn: Connection, table: str) -> list[Partition]:
    """The partitions of `table`, oldest first (MINVALUE first), the DEFAULT one last."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        (table,),
    ).all()
    found = []
    for name, bound in rows:
        m = _BOUND.search(bound)
        if m is None:
            found.append(Partition(name, None, None))
        else:
            found.append(Partition(name, _value(m.group(1), table), _value(m.group(2), table)))
    return sorted(
        found,
        key=lambda p: (p.is_default, -1e300 if p.lo is None else p.lo),
    )


# Relations in the current schema under one of the names the log's own DDL gives (`%(names)s`
# exactly, or a time partition's name), with the top-level table each belongs to now, found by
# walking up from the relation's table (an index's: the table it indexes) through pg_inherits.
# Top-level tables themselves are left out: only what a renamed table took along is listed.
_HELD_NAMES = """
WITH RECURSIVE named AS (
    SELECT c.oid, c.relname, c.relkind,
           CASE WHEN c.relkind IN ('i', 'I') THEN x.indrelid ELSE c.oid END AS tbl
    FROM pg_class c LEFT JOIN pg_index x ON x.indexrelid = c.oid
    WHERE c.relnamespace = current_schema()::regnamespace
      AND (c.relname = ANY(%(names)s) OR c.relname ~ %(pattern)s)
), up AS (
    SELECT oid, tbl FROM named
    UNION ALL
    SELECT up.oid, i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.tbl
)
SELECT n.oid, n.relname, n.relkind, r.relname
FROM named n
JOIN up u ON u.oid = n.oid
JOIN pg_class r ON r.oid = u.tbl
WHERE NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = u.tbl) AND r.oid <> n.oid
"""
MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def quoted(name: str) -> str:
    """`name` as an SQL identifier, whatever it holds (case, spaces, quotes)."""
    return '"' + name.replace('"', '""') + '"'


def _taken(conn: Connection, name: str) -> bool:
    return (
        conn.exec_driver_sql(
            "SELECT 1 FROM pg_class WHERE relname = %s "
            "AND relnamespace = current_schema()::regnamespace",
            (name,),
        ).first()
        is not None
    )


def free_names(conn: Connection, table: str) -> list[tuple[str, str]]:
    """`table` is missing, but a table renamed from it (by a person, a failed migration) took
    its key, its indexes and its partitions along under the names the log's DDL gives, which
    are unique per schema: rename each after the table it belongs to now
    (`sw_predictions_p20261129_0000` of `sw_saved` becomes `sw_saved_p20261129_0000`), so the
    log can be created again. Only those names are touched (a partition's own indexes, named
    by PostgreSQL, never collide), and never a top-level table. Returns (old, new) names. Call
    under `lock`."""
    names = [
        f"{table}_pkey",
        f"{table}{DEFAULT_SUFFIX}",
        f"{table}{LEGACY_SUFFIX}",
        *(f"ix_{table}_{suffix}" for suffix in INDEX_SUFFIXES[table]),
    ]
    pattern = f"^{table}_p[0-9]{{8}}_[0-9]{{4}}$"
    moved = []
    held = conn.exec_driver_sql(_HELD_NAMES, {"names": names, "pattern": pattern}).all()
    for oid, name, kind, root in held:
        new = name.replace(table, root, 1)
        if len(new.encode()) > MAX_NAME_BYTES or _taken(conn, new):
            new = f"{name}_{oid}"  # a log name is short: this fits, and no log name has a suffix
        what = "INDEX" if kind in ("i", "I") else "TABLE"
        conn.exec_driver_sql(f"ALTER {what} {quoted(name)} RENAME TO {quoted(new)}")
        moved.append((name, new))
    return moved


def create_tables(conn: Connection) -> list[tuple[str, str]]:
    """The partitioned tables and their DEFAULT partitions (the safety net: no row is refused);
    the names `free_names` moved out of the way, if any."""
    moved = []
    if relkind(conn, PREDICTIONS) is None:
        moved += free_names(conn, PREDICTIONS)
        conn.exec_driver_sql(PREDICTIONS_DDL)
        for ddl in PREDICTIONS_INDEXES:
            conn.exec_driver_sql(ddl)
    if relkind(conn, FEEDBACK) is None:
        moved += free_names(conn, FEEDBACK)
        conn.exec_driver_sql(FEEDBACK_DDL)
        for ddl in FEEDBACK_INDEXES:
            conn.exec_driver_sql(ddl)
    for table in (PREDICTIONS, FEEDBACK):
        if relkind(conn, table + DEFAULT_SUFFIX) is None:
            conn.exec_driver_sql(
                f"CREATE TABLE {table}{DEFAULT_SUFFIX} PARTITION OF {table} DEFAULT"
            )
    return moved


def add_columns(conn: Connection) -> None:
    """An unpartitioned log gains the columns later releases added (older rows count as
    ingested when they were made) and the database's clock as the ingest time's default, so
    rows COPYed without it, or inserted by an older release, are stamped."""
    cols = {
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attnum > 0 AND NOT attisdropped",
            (PREDICTIONS,),
        )
    }
    if "ref_id" not in cols:
        conn.exec_driver_sql(f"ALTER TABLE {PREDICTIONS} ADD COLUMN ref_id VARCHAR(32)")
    if "ingested_at" not in cols:
        conn.exec_driver_sql(f"ALTER TABLE {PREDICTIONS} ADD COLUMN ingested_at FLOAT")
        conn.exec_driver_sql(f"UPDATE {PREDICTIONS} SET ingested_at = created_at")
    conn.exec_driver_sql(f"ALTER TABLE {PREDICTIONS} ALTER COLUMN ingested_at SET DEFAULT {DB_NOW}")
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS ix_{PREDICTIONS}_model_ingested "
        f"ON {PREDICTIONS} (model, version, ingested_at)"
    )


EARLIER_STAGING = "sw_predictions_in"
"""The temporary table through which every release before the partitioned log (those since
2026-11-28) COPYs its rows on PostgreSQL: one per session that has written, kept until the
session ends."""


def earlier_writers(conn: Connection) -> int:
    """Sessions of a release before the partitioned log that write to this database (the pods
    of the previous release during a rolling update): each holds its staging table. They insert
    with `ON CONFLICT (id)`, which a partitioned table (key: id, ingested_at) refuses, and spool
    the refused rows as bad: `migrate` must wait until they are gone. The unpartitioned log
    tables are locked first, for the rest of the transaction: a write of theirs in flight
    (its staging table not committed yet) finishes first and is counted, and none starts until
    the migration has committed. Not seen: a process of theirs that has not logged a prediction
    since it started (it has no staging table yet). Call under `lock`."""
    plain = [t for t in (PREDICTIONS, FEEDBACK) if relkind(conn, t) == "r"]
    if plain:
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(plain)} IN ACCESS EXCLUSIVE MODE")
    found = conn.exec_driver_sql(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s AND c.relkind = 'r' AND n.nspname ~ '^pg_temp_[0-9]+$' "
        "AND n.oid IS DISTINCT FROM pg_my_temp_schema()",
        (EARLIER_STAGING,),
    ).scalar_one()
    return int(found)


def migrate(conn: Connection, interval_s: int) -> bool:
    """Turn an unpartitioned log (rows kept) into the partitioned one; False when there was
    nothing to do. Call under `lock`.

    No row is copied: the old table is renamed `sw_predictions_legacy` and attached as the
    partition FROM (MINVALUE) TO (the end of the current period), and likewise the old
    `sw_feedback`. The cost is building the new primary key's index on it, under the lock.
    Retention drops the legacy partition whole once its newest row is older than the setting.
    """
    kinds = {t: relkind(conn, t) for t in (PREDICTIONS, FEEDBACK)}
    if "r" not in kinds.values():
        return False
    bound = None
    if kinds[PREDICTIONS] == "r":
        add_columns(conn)
        conn.exec_driver_sql(
            f"UPDATE {PREDICTIONS} SET ingested_at = created_at WHERE ingested_at IS NULL"
        )
        newest = conn.exec_driver_sql(
            f"SELECT greatest(max(ingested_at), {DB_NOW}) FROM {PREDICTIONS}"
        ).scalar_one()
        bound = period_start(float(newest), interval_s) + interval_s
        legacy = PREDICTIONS + LEGACY_SUFFIX
        conn.exec_driver_sql(f"ALTER TABLE {PREDICTIONS} ALTER COLUMN ingested_at SET NOT NULL")
        conn.exec_driver_sql(f"ALTER TABLE {PREDICTIONS} ALTER COLUMN shadow SET DEFAULT false")
        conn.exec_driver_sql(f"ALTER TABLE {PREDICTIONS} RENAME TO {legacy}")
        # The partitioned table's key holds the partition key: (id) becomes (id, ingested_at).
        conn.exec_driver_sql(
            f"ALTER TABLE {legacy} DROP CONSTRAINT {PREDICTIONS}_pkey, "
            f"ADD CONSTRAINT {legacy}_pkey PRIMARY KEY (id, ingested_at)"
        )
        for suffix in ("model_time", "model_ingested"):
            conn.exec_driver_sql(
                f"ALTER INDEX IF EXISTS ix_{PREDICTIONS}_{suffix} RENAME TO ix_{legacy}_{suffix}"
            )
    if bound is None:
        now = float(conn.exec_driver_sql(f"SELECT {DB_NOW}").scalar_one())
        bound = period_start(now, interval_s) + interval_s
    if kinds[FEEDBACK] == "r":
        conn.exec_driver_sql(f"ALTER TABLE {FEEDBACK} RENAME TO {FEEDBACK}{LEGACY_SUFFIX}")
        conn.exec_driver_sql(
            f"ALTER TABLE {FEEDBACK}{LEGACY_SUFFIX} RENAME CONSTRAINT {FEEDBACK}_pkey "
            f"TO {FEEDBACK}{LEGACY_SUFFIX}_pkey"
        )
        conn.exec_driver_sql(
            f"ALTER INDEX IF EXISTS ix_{FEEDBACK}_model_time "
            f"RENAME TO ix_{FEEDBACK}{LEGACY_SUFFIX}_model_time"
        )
    create_tables(conn)
    if kinds[PREDICTIONS] == "r":
        conn.exec_driver_sql(
            f"ALTER TABLE {PREDICTIONS} ATTACH PARTITION {PREDICTIONS}{LEGACY_SUFFIX} "
            f"FOR VALUES FROM (MINVALUE) TO ({bound})"
        )
    if kinds[FEEDBACK] == "r":
        legacy = FEEDBACK + LEGACY_SUFFIX
        # Labels whose ids lie past the bound (or are not ours) wait in DEFAULT until their
        # partition exists; the rest stay where they are.
        conn.exec_driver_sql(
            f"WITH m AS (DELETE FROM {legacy} WHERE prediction_id >= %s "
            f"RETURNING {FEEDBACK_COLUMNS}) "
            f"INSERT INTO {FEEDBACK}{DEFAULT_SUFFIX} ({FEEDBACK_COLUMNS}) "
            f"SELECT {FEEDBACK_COLUMNS} FROM m",
            (id_bound(bound),),
        )
        conn.exec_driver_sql(
            f"ALTER TABLE {FEEDBACK} ATTACH PARTITION {legacy} "
            f"FOR VALUES FROM (MINVALUE) TO ('{id_bound(bound)}')"
        )
    return True


def _literal(table: str, t: int) -> str:
    return f"'{id_bound(t)}'" if table == FEEDBACK else str(t)


def _key(table: str) -> str:
    return "prediction_id" if table == FEEDBACK else "ingested_at"


def _gaps(parts: list[Partition], start: float, end: float) -> list[tuple[float, float]]:
    """The parts of [start, end) no partition covers (partitions of another interval, made
    before the setting changed, or the legacy one, are never overlapped)."""
    gaps = [(start, end)]
    for p in parts:
        if p.is_default:
            continue
        lo = -1e300 if p.lo is None else p.lo
        hi = 1e300 if p.hi is None else p.hi
        gaps = [
            piece
            for s, e in gaps
            for piece in ((s, min(e, lo)), (max(s, hi), e))
            if piece[0] < piece[1]
        ]
    return gaps


def ensure_period(conn: Connection, table: str, start: int, end: int) -> tuple[str, int]:
    """Create the partition [start, end) of `table`, moving the rows the DEFAULT partition
    holds for it; returns its name and the rows moved. Call under `lock`."""
    name = partition_name(table, start)
    default = table + DEFAULT_SUFFIX
    key = _key(table)
    lo, hi = _literal(table, start), _literal(table, end)
    conn.exec_driver_sql(f"LOCK TABLE {default} IN EXCLUSIVE MODE")  # no insert slips in
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
    moved = conn.exec_driver_sql(
        f"WITH m AS (DELETE FROM {default} WHERE {key} >= {lo} AND {key} < {hi} RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM m"
    ).rowcount
    conn.exec_driver_sql(
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
    )
    return name, int(moved or 0)


ID_SHAPE_SQL = "^[0-9a-f]{12}[0-9a-v]{20}$"
"""An id of ours, as a PostgreSQL regular expression (predlog.ids.SHAPE)."""


def _default_periods(conn: Connection, table: str, interval_s: int, last: int) -> set[int]:
    """The periods of the rows waiting in `table`'s DEFAULT partition, from the epoch to the
    period starting at `last` (and before year 10000): rows dated outside (ids dated ahead,
    which feedback refuses, or not ours) never get a partition; they wait in DEFAULT, where
    retention removes them (see `_drop_behind`)."""
    if table == FEEDBACK:
        expr = (
            "floor(('x' || lpad(substr(prediction_id, 1, 12), 16, '0'))::bit(64)::bigint "
            f"/ 1000.0 / {interval_s})"
        )
        where = f"WHERE prediction_id ~ '{ID_SHAPE_SQL}'"  # other ids stay in DEFAULT
    else:
        expr, where = f"floor(ingested_at / {interval_s})", ""
    rows = conn.exec_driver_sql(
        f"SELECT DISTINCT {expr} FROM {table}{DEFAULT_SUFFIX} {where}"
    ).all()
    periods = {int(r[0]) * interval_s for r in rows}
    return {p for p in periods if 0 <= p <= last and p + interval_s < MAX_PERIOD_START}


def maintain(
    conn: Connection,
    *,
    interval_s: int,
    ahead: int,
    retention_s: float | None,
    now: float | None = None,
) -> Maintenance:
    """Partitions for the current period and `ahead` more, partitions for any rows waiting in
    DEFAULT (moved there), and, with `retention_s`, the drop of every partition whose rows are
    ALL older than it. Call under `lock`, after `create_tables`."""
    if now is None:
        now = float(conn.exec_driver_sql(f"SELECT {DB_NOW}").scalar_one())
    done = Maintenance()
    first = period_start(now, interval_s)
    last = first + ahead * interval_s
    for table in (PREDICTIONS, FEEDBACK):
        wanted = {first + k * interval_s for k in range(ahead + 1)}
        # labels: ids are dated by the service's clock, never ahead (feedback refuses them);
        # rows: by the database's, whatever it says
        until = last if table == FEEDBACK else MAX_PERIOD_START
        wanted |= _default_periods(conn, table, interval_s, until)
        for start in sorted(wanted):
            for lo, hi in _gaps(partitions(conn, table), start, start + interval_s):
                name, moved = ensure_period(conn, table, int(lo), int(hi))
                done.created.append(name)
                if table == FEEDBACK:
                    done.labels_moved += moved
                else:
                    done.rows_moved += moved
    if retention_s is not None:
        _drop_behind(conn, now - retention_s, last + interval_s, done)
    done.oldest_ingested_at = oldest(conn)
    return done


# Labels of a partition (or DEFAULT) received before the cutoff that join no prediction row of
# their model: what retention removes from DEFAULT and from partitions dated past the horizon.
_ORPHAN_LABELS = (
    "DELETE FROM {name} f WHERE f.received_at < %s AND NOT EXISTS (SELECT 1 FROM "
    + PREDICTIONS
    + " p WHERE p.id = f.prediction_id AND p.model = f.model)"
)


def _drop_behind(conn: Connection, cutoff: float, horizon: float, done: Maintenance) -> None:
    """Drop prediction partitions that end at or before `cutoff` (every row in them is older
    than the setting), then label partitions whose predictions are all gone. DEFAULT is kept
    too: its rows ingested before the cutoff are deleted, and so are its labels received
    before it that join no row, as are those of label partitions dated past `horizon` (made by
    releases that let future-dated ids in), each dropped once empty.
    """
    for p in partitions(conn, PREDICTIONS):
        if p.is_default:
            n = conn.exec_driver_sql(
                f"DELETE FROM {p.name} WHERE ingested_at < %s", (cutoff,)
            ).rowcount
            done.rows_dropped += int(n or 0)
            continue
        if p.hi is None or p.hi > cutoff:
            continue
        rows = conn.exec_driver_sql(f"SELECT count(*) FROM {p.name}").scalar_one()
        conn.exec_driver_sql(f"DROP TABLE {p.name}")
        done.dropped.append(p.name)
        done.rows_dropped += int(rows)
    for p in partitions(conn, FEEDBACK):
        if p.is_default or (p.lo is not None and p.lo >= horizon):
            n = conn.exec_driver_sql(_ORPHAN_LABELS.format(name=p.name), (cutoff,)).rowcount
            done.labels_dropped += int(n or 0)
            empty = conn.exec_driver_sql(f"SELECT 1 FROM {p.name} LIMIT 1").first() is None
            if not p.is_default and empty:
                conn.exec_driver_sql(f"DROP TABLE {p.name}")
                done.dropped.append(p.name)
            continue
        if p.hi is None or p.hi > cutoff:
            continue
        lo = "" if p.lo is None else f"id >= '{id_bound(p.lo)}' AND "
        joined = conn.exec_driver_sql(
            f"SELECT 1 FROM {PREDICTIONS} WHERE {lo}id < '{id_bound(p.hi)}' LIMIT 1"
        ).first()
        if joined is not None:  # a row ingested late still joins these labels: keep them
            continue
        labels = conn.exec_driver_sql(f"SELECT count(*) FROM {p.name}").scalar_one()
        conn.exec_driver_sql(f"DROP TABLE {p.name}")
        done.dropped.append(p.name)
        done.labels_dropped += int(labels)


def oldest(conn: Connection) -> float | None:
    """The oldest `ingested_at` in the log: the minimum of the oldest non-empty partition."""
    for p in partitions(conn, PREDICTIONS):
        value: Any = conn.exec_driver_sql(f"SELECT min(ingested_at) FROM {p.name}").scalar_one()
        if value is not None:
            return float(value)
    return None
