"""Training data read where it lives: a PostgreSQL query or table, a Parquet dataset folder."""

from __future__ import annotations

import decimal
import hashlib
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from core.errors import first_line
from training.config import SourceOptions
from training.errors import TrainingError

POSTGRES_PREFIXES = ("postgresql://", "postgres://")
WORKING_COPIES = 4
"""A run holds the rows read several times over (the frame as read, kept for the fingerprints,
its typed copy, the split's parts, the fingerprinted rows): the memory check asks for this many
frames' worth."""
BATCH_ROWS = 10_000
"""Rows of a Parquet row group decoded at a time when sampling it."""
WIDTH_ROWS = 1000
"""Rows read first to measure a row's width in memory (pandas, strings included)."""
HOLD_OUT_MARGIN = 1.1
"""The search's sample is drawn only when the rows outside it can hold validation and test at
their shares, with 10% to spare (a pinned row takes its copies to train; stratified shares
round up per class)."""
TARGET_VALUES = 1000
"""Values of the target counted in the source at most (a classifier with more classes reads
every row for its search)."""
STRATUM_FLOOR = 30
"""A classification search's sample holds at least this many rows of each class (fewer when
the class has fewer: at most its train share, and never so many that fewer than
quality.MIN_CLASS_ROWS are left for validation and test)."""
MAX_TOPPED = 50
"""Classes under their floor drawn one by one (one query or Arrow scan each) at most; past it,
the sample is not stratified."""
MIN_LEFT = 5
"""Rows of a class the sample always leaves for validation and test (quality.MIN_CLASS_ROWS)."""
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_PLAIN = (str, int, float, bool, decimal.Decimal, np.generic, pd.Timestamp)


class Source(Protocol):
    """Where rows come from: counted, measured, read whole or sampled in place."""

    def count(self) -> int: ...
    def head(self, n: int) -> pd.DataFrame: ...
    def read(self) -> pd.DataFrame: ...
    def sample(self, n: int, seed: int) -> pd.DataFrame: ...
    def counts(self, column: str, limit: int) -> pd.Series: ...
    def stratum(self, column: str, value: Any, n: int, seed: int) -> pd.DataFrame: ...
    def record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Loaded:
    """Rows read from a source and what the manifest says of where they came from."""

    frame: pd.DataFrame
    record: dict[str, Any]


def is_source(data: str) -> bool:
    """True for what `open_source` reads: a PostgreSQL URL or a folder (a Parquet dataset)."""
    return data.startswith(POSTGRES_PREFIXES) or Path(data).is_dir()


def without_password(url: str) -> str:
    """The URL with its password taken out, from the user part and the `password=` parameter
    (it would land in the manifest): libpq then takes it from PGPASSWORD or ~/.pgpass."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")  # the host as written: [::1] keeps brackets
    netloc = f"{user.partition(':')[0]}@{host}" if at else host
    params = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in params if k != "password"]
    query = urlencode(kept) if len(kept) < len(params) else parts.query
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def open_source(data: str, options: SourceOptions) -> Source:
    """The Source `data` names; TrainingError when the options do not fit it."""
    if data.startswith(POSTGRES_PREFIXES):
        if (options.query is None) == (options.table is None):
            raise TrainingError(
                f"data {without_password(data)}: a PostgreSQL source needs exactly one of "
                "source.query (--query) and source.table (--table)"
            )
        if options.table is not None and not _TABLE.fullmatch(options.table):
            raise TrainingError(
                f"source.table {options.table!r}: not a table name (letters, digits and _, "
                "optionally schema.table)"
            )
        return PostgresSource(data, options.query, options.table)
    if options.query or options.table:
        raise TrainingError(
            f"source.query and source.table apply to a postgresql:// --data only, not to {data!r}"
        )
    return ParquetDataset(Path(data))


def load(data: str, options: SourceOptions, seed: int) -> Loaded:
    """Every row of the source, or (over `source.max_rows`) a sample of that many drawn in the
    source; fails before reading when the rows would not fit in memory."""
    source = open_source(data, options)
    rows = source.count()
    if rows == 0:
        raise TrainingError(f"data {_name(data, options)}: no rows")
    wanted = rows if options.max_rows is None else min(rows, options.max_rows)
    check_memory(data, options, rows, wanted, row_bytes(source.head(WIDTH_ROWS)))
    frame = source.read() if wanted == rows else source.sample(wanted, seed)
    if frame.empty:
        raise TrainingError(f"data {_name(data, options)}: no rows")
    record = {**source.record(), "rows_in_source": rows, "rows_read": len(frame)}
    if wanted < rows:
        record["sampled_in_source"] = {"rows": wanted, "seed": seed}
    return Loaded(frame, record)


def search_sample(
    data: str,
    options: SourceOptions,
    rows: int,
    seed: int,
    *,
    held: float,
    classes: tuple[str, pd.Series] | str | None = None,
) -> Loaded | None:
    """`rows` rows drawn in the source (the search's), without reading the others; None when
    the final fit's rows (the source's, or `source.max_rows`) less these could not hold the
    share `held` of them that validation and test take (HOLD_OUT_MARGIN to spare): every
    sample row goes to train, so the hold-out comes from the rest.

    `classes` (a classification's target column and its rows per class in the source,
    `target_counts`) stratifies the sample by the target (`stratify`: each class keeps its
    floor); a text says why it is not stratified. The record's `sampled_in_source.stratified`
    says which."""
    source = open_source(data, options)
    total = source.count()
    final = total if options.max_rows is None else min(total, options.max_rows)
    if final - rows < math.ceil(final * held * HOLD_OUT_MARGIN):
        return None
    check_memory(data, options, total, rows, row_bytes(source.head(WIDTH_ROWS)))
    frame = source.sample(rows, seed)
    if isinstance(classes, tuple):
        frame, stratified = stratify(
            source, frame, *classes, seed=seed, share=rows / total, held=held
        )
    else:
        stratified = {"by": None, "why": classes or "not asked"}
    record = {**source.record(), "rows_in_source": total, "rows_read": len(frame)}
    drawn = {"rows": rows, "seed": seed, "stratified": stratified}
    return Loaded(frame, {**record, "sampled_in_source": drawn})


def floors(counts: pd.Series, share: float, held: float) -> pd.DataFrame:
    """Per class of the target (not NULL), the rows a stratified sample must hold (`floor`:
    STRATUM_FLOOR, at most the class's train share, 1 - `held`, and never leaving fewer than
    MIN_LEFT of its rows out) and those it draws of a class under that (`draw`: its share of
    the class, at least the floor, within the same limits)."""
    counts = counts[counts.index.notna()]
    rows = counts.to_numpy(dtype=float)
    most = np.minimum(np.floor(rows * (1 - held)), rows - MIN_LEFT).clip(min=0)
    floor = np.minimum(STRATUM_FLOOR, most).astype("int64")
    draw = np.minimum(np.ceil(rows * share).clip(min=STRATUM_FLOOR), most).astype("int64")
    return pd.DataFrame({"floor": floor, "draw": draw}, index=counts.index)


def stratify(
    source: Source,
    frame: pd.DataFrame,
    column: str,
    counts: pd.Series,
    *,
    seed: int,
    share: float,
    held: float,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The sample `frame` with each class under its floor (`floors`: a rare class the sample
    drew too few of, or none) drawn again in the source on its own (`Source.stratum`: a keyed
    sample of that class in SQL, that class's rows filtered in Arrow) and put in place of the
    rows the sample drew of it; the others are as drawn. The frame, and what the manifest
    records; unchanged, with the reason, when it cannot be done."""
    if column not in frame.columns:
        return frame, {"by": None, "why": f"the sample has no column {column!r}"}
    want = floors(counts, share, held)
    drawn = frame[column].value_counts()
    least: dict[Any, int] = want["floor"].to_dict()
    draw: dict[Any, int] = want["draw"].to_dict()
    short = [v for v in want.index if drawn.get(v, 0) < least[v]]
    done: dict[str, Any] = {"by": column, "floor": STRATUM_FLOOR, "topped_up": {}}
    if len(short) > MAX_TOPPED:
        return frame, {
            "by": None,
            "why": f"{len(short)} classes under their floor, more than {MAX_TOPPED} to draw "
            "one by one",
        }
    parts = [frame[~frame[column].isin(short)]]
    for value in short:
        try:
            rows = source.stratum(column, _plain(value), int(draw[value]), seed)
        except TrainingError as exc:
            return frame, {"by": None, "why": f"class {value!r} cannot be drawn alone ({exc})"}
        parts.append(rows)
        done["topped_up"][str(value)] = len(rows)
    if not short:
        return frame, done
    return pd.concat(parts, ignore_index=True), done


def _plain(value: Any) -> Any:
    """A class value as the drivers take it (a numpy scalar as Python's)."""
    return value.item() if isinstance(value, np.generic) else value


def target_counts(data: str, options: SourceOptions, column: str) -> pd.Series:
    """The rows of each value of `column` in the source (NULL included), read without reading
    the other columns, indexed by the values as a whole read types them (a NULL makes an int
    column float); at most TARGET_VALUES + 1 values (more: the column has too many to list)."""
    counts = open_source(data, options).counts(column, TARGET_VALUES + 1)
    return counts[counts > 0]  # a categorical column lists its unused categories


def row_bytes(head: pd.DataFrame) -> float:
    """Bytes one row takes in memory, measured on the first rows read."""
    if head.empty:
        return 0.0
    return float(head.memory_usage(deep=True, index=False).sum()) / len(head)


def available_memory() -> int:
    """Memory this process may still fill: the cgroup's limit less its use (a pod's limit), or
    MemAvailable."""
    meminfo = Path("/proc/meminfo")
    free = 0
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    limit, used = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    if limit.exists() and used.exists():
        text = limit.read_text().strip()
        if text != "max":
            room = int(text) - int(used.read_text().strip())
            free = min(free, room) if free else room
    return free or (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_memory(data: str, options: SourceOptions, rows: int, wanted: int, width: float) -> None:
    """TrainingError, before any row is read, when `wanted` rows of `width` bytes would not fit
    (WORKING_COPIES of them) in `source.memory_bytes` or the memory available."""
    room = options.memory_bytes or available_memory()
    need = wanted * width * WORKING_COPIES
    if need <= room:
        return
    fits = max(0, math.floor(room / (width * WORKING_COPIES))) if width else wanted
    limit = "source.memory_bytes" if options.memory_bytes else "the memory available"
    raise TrainingError(
        f"data {_name(data, options)}: {wanted:,} of its {rows:,} rows at ~{width:,.0f} bytes "
        f"each need ~{_gb(need)} in memory (x{WORKING_COPIES} working copies), more than "
        f"{_gb(room)} ({limit}); set source.max_rows (the final fit's row limit) to at most "
        f"{fits:,} to read a sample drawn in the source. The search needs only "
        f"search.max_rows of them."
    )


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _name(data: str, options: SourceOptions) -> str:
    if data.startswith(POSTGRES_PREFIXES):
        what = f"table {options.table}" if options.table else "query"
        return f"{without_password(data)} ({what})"
    return data


class PostgresSource:
    """A SQL query's or a table's rows, read in a read-only transaction."""

    def __init__(self, url: str, query: str | None, table: str | None) -> None:
        self.url, self.query, self.table = url, query, table

    @property
    def _from(self) -> str:
        """The FROM item: the table (an unquoted name folds to lower case, as in SQL) or the
        query as a subquery (its `%` doubled: every statement is sent with parameters; a line
        break before the `)` so a trailing `-- comment` ends there)."""
        if self.table is not None:
            return ".".join(f'"{part.lower()}"' for part in self.table.split("."))
        assert self.query is not None
        return f"({self.query.strip().rstrip(';').replace('%', '%%')}\n) AS q"

    def _what(self) -> str:
        return _name(self.url, SourceOptions(query=self.query, table=self.table))

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        import psycopg

        try:
            conn = psycopg.connect(self.url, connect_timeout=10)
        except psycopg.Error as exc:
            raise TrainingError(
                f"data {self._what()}: cannot connect ({first_line(exc, None, named=True)})"
            ) from None
        try:
            conn.read_only = True  # a query can read, never write
            with conn.cursor() as cur:
                yield cur
        except psycopg.errors.UndefinedTable as exc:
            raise TrainingError(
                f"data {self._what()}: no such table ({first_line(exc, None, named=True)})"
            ) from None
        except psycopg.Error as exc:
            if "multiple commands" in str(exc):  # a `;` then more: a COMMIT would end read-only
                raise TrainingError(
                    f"data {self._what()}: source.query (--query) must be one SQL statement "
                    "(it holds several)"
                ) from None
            raise TrainingError(
                f"data {self._what()}: the query fails "
                f"({type(exc).__name__}: {first_line(exc, None, named=True)})"
            ) from None
        finally:
            conn.close()

    @staticmethod
    def _execute(cur: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Every statement prepared, with parameters: the server then takes one statement only
        (the simple protocol would run `...; COMMIT; DELETE ...` after the read-only one)."""
        cur.execute(sql, params, prepare=True)

    def count(self) -> int:
        with self._cursor() as cur:
            self._execute(cur, f"SELECT count(*) FROM {self._from}")
            return int(cur.fetchone()[0])

    def _frame(self, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
        chunks: list[pd.DataFrame] = []
        with self._cursor() as cur:
            self._execute(cur, sql, params)
            columns = [d.name for d in cur.description]
            numeric = [d.name for d in cur.description if d.type_code == 1700]  # numeric/decimal
            while batch := cur.fetchmany(50_000):
                chunk = pd.DataFrame.from_records(batch, columns=columns)
                for col in numeric:
                    chunk[col] = pd.to_numeric(chunk[col].astype(float))
                chunks.append(chunk)
        if not chunks:
            return pd.DataFrame(columns=columns)
        frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
        _plain_values(frame, self._what())
        return frame

    def head(self, n: int) -> pd.DataFrame:
        return self._frame(f"SELECT * FROM {self._from} LIMIT %s", (n,))

    def read(self) -> pd.DataFrame:
        return self._frame(f"SELECT * FROM {self._from}")

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        """A table: TABLESAMPLE BERNOULLI (a share a little over n, REPEATABLE) then the n rows
        lowest by a seeded hash of the row; a query or a view: that keyed hash over every row (a
        top-n sort, never more than n rows held). The same rows for the same seed and data; on a
        table, TABLESAMPLE's draw also depends on where the rows lie on disk, so an UPDATE (even
        one changing nothing) or a VACUUM FULL can change the sample."""
        key = "hashtextextended(s::text, %s)"
        if self.table is not None and self._samplable():
            total = max(1, self.count())
            share = min(100.0, 100.0 * (1.1 * n + 10 * math.sqrt(n) + 100) / total)
            sql = (
                f"SELECT * FROM (SELECT * FROM {self._from} TABLESAMPLE BERNOULLI (%s) "
                f"REPEATABLE (%s)) AS s ORDER BY {key} LIMIT %s"
            )
            frame = self._frame(sql, (share, seed, seed, n))
            if len(frame) == n or share >= 100.0:
                return frame
        sql = f"SELECT * FROM (SELECT * FROM {self._from}) AS s ORDER BY {key} LIMIT %s"
        return self._frame(sql, (seed, n))

    def counts(self, column: str, limit: int) -> pd.Series:
        """Rows per value of `column` (GROUP BY in the server), at most `limit` values."""
        name = '"' + column.replace('"', '""') + '"'
        sql = f"SELECT {name}, count(*) FROM {self._from} GROUP BY 1 LIMIT %s"
        frame = self._frame(sql, (limit,))
        values, rows = frame.iloc[:, 0], frame.iloc[:, 1].astype("int64")
        return pd.Series(rows.to_numpy(), index=pd.Index(values), name=column)

    def stratum(self, column: str, value: Any, n: int, seed: int) -> pd.DataFrame:
        """`n` rows whose `column` is `value`, drawn by the keyed hash among that class's rows
        (one scan of the source, a top-n sort over the class)."""
        name = '"' + column.replace('"', '""') + '"'
        sql = (
            f"SELECT * FROM (SELECT * FROM {self._from}) AS s WHERE s.{name} = %s "
            "ORDER BY hashtextextended(s::text, %s) LIMIT %s"
        )
        return self._frame(sql, (value, seed, n))

    def _samplable(self) -> bool:
        """True for a table or materialized view (TABLESAMPLE applies to them, not to a view or
        a foreign table)."""
        with self._cursor() as cur:
            self._execute(
                cur, "SELECT relkind FROM pg_class WHERE oid = %s::regclass", (self._from,)
            )
            return cur.fetchone()[0] in ("r", "m", "p")

    def record(self) -> dict[str, Any]:
        return {
            "kind": "postgresql",
            "url": without_password(self.url),
            **({"query": self.query} if self.query is not None else {"table": self.table}),
        }


def _plain_values(frame: pd.DataFrame, what: str) -> None:
    """TrainingError for a column of values a model cannot take (json, arrays, bytes), judged
    on its first values."""
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        values = frame[col].dropna().head(WIDTH_ROWS)  # a SQL column holds one type
        odd = values[~values.map(lambda v: isinstance(v, _PLAIN) or _is_time(v))]
        if len(odd):
            kind = type(odd.iloc[0]).__name__
            raise TrainingError(
                f"data {what}: column {col!r} holds {kind} values (json, array or bytea?); "
                "select it cast to text or a number"
            )


def _is_time(value: object) -> bool:
    import datetime as dt

    return isinstance(value, dt.date | dt.time | dt.timedelta)


class ParquetDataset:
    """A folder of Parquet files (hive partitions `key=value/` become columns), read by pyarrow."""

    def __init__(self, path: Path) -> None:
        import pyarrow.dataset as ds

        self.path = path
        try:
            self.dataset = ds.dataset(path, format="parquet", partitioning="hive")
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise TrainingError(
                f"data {path}: not a Parquet dataset ({first_line(exc, None, named=True)})"
            ) from None
        self.files = sorted(self.dataset.files)
        if not self.files:
            raise TrainingError(f"data {path}: the folder holds no Parquet files")

    def count(self) -> int:
        return int(self.dataset.count_rows())

    def head(self, n: int) -> pd.DataFrame:
        return self._pandas(self.dataset.head(n))

    def read(self) -> pd.DataFrame:
        return self._pandas(self.dataset.to_table())

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        """Row groups drawn at random (seeded, in file order) until they hold twice n rows, then
        n of their rows at random: only those row groups are read, streamed a few pages at a time
        with only the rows drawn kept (a row group of millions of rows is never held whole)."""
        import pyarrow as pa

        groups = [
            (f, g.id, g.num_rows)
            for f in sorted(self.dataset.get_fragments(), key=lambda f: f.path)
            for g in f.row_groups
        ]
        rng = np.random.default_rng(seed)
        picked, held = [], 0
        for i in rng.permutation(len(groups)):
            if held >= 2 * n:
                break
            picked.append(int(i))
            held += groups[i][2]
        keep = np.sort(rng.choice(held, min(n, held), replace=False))
        parts, start = [], 0
        for i in sorted(picked):
            fragment, group, rows = groups[i]
            mine = keep[(keep >= start) & (keep < start + rows)] - start
            if len(mine):
                parts.append(self._rows_of(fragment, group, mine))
            start += rows
        return self._pandas(pa.concat_tables(parts))

    def counts(self, column: str, limit: int) -> pd.Series:
        """Rows per value of `column`, that one column read (Arrow), at most `limit` values."""
        values = self._pandas(self.dataset.to_table(columns=[column]))[column]
        return values.value_counts(dropna=False, sort=False).head(limit)

    def stratum(self, column: str, value: Any, n: int, seed: int) -> pd.DataFrame:
        """`n` rows whose `column` is `value`, drawn at random (seeded) among that class's rows,
        which Arrow filters while it scans (only the class's rows are held)."""
        import pyarrow.dataset as ds

        try:
            # one thread: the rows in file order, so every worker draws the same ones
            table = self.dataset.to_table(filter=ds.field(column) == value, use_threads=False)
        except Exception as exc:  # pyarrow: ArrowInvalid, ArrowNotImplementedError, ...
            raise TrainingError(
                f"data {self.path}: cannot filter {column!r} ({first_line(exc, None, named=True)})"
            ) from None
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(table.num_rows, min(n, table.num_rows), replace=False))
        return self._pandas(table.take(keep))

    def _rows_of(self, fragment: Any, group: int, rows: Any) -> Any:
        """The rows at positions `rows` (sorted) of one row group, as a table of the dataset's
        schema (hive keys included), read in batches of BATCH_ROWS."""
        import pyarrow as pa
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        schema = self.dataset.schema
        kept, start = [], 0
        file = pq.ParquetFile(fragment.path, buffer_size=1 << 20, pre_buffer=False)
        names = [c for c in schema.names if c in file.schema_arrow.names]
        for batch in file.iter_batches(BATCH_ROWS, row_groups=[group], columns=names):
            mine = rows[(rows >= start) & (rows < start + batch.num_rows)] - start
            if len(mine):
                kept.append(batch.take(pa.array(mine)))
            start += batch.num_rows
        own = pa.schema([file.schema_arrow.field(c) for c in names])
        table = pa.Table.from_batches(kept, schema=own)
        keys = ds.get_partition_keys(fragment.partition_expression)
        columns = [
            table[c].cast(schema.field(c).type)
            if c in names
            else pa.array([keys.get(c)] * len(table), schema.field(c).type)
            for c in schema.names
        ]
        return pa.Table.from_arrays(columns, schema=schema)

    def _pandas(self, table: Any) -> pd.DataFrame:
        try:
            return table.to_pandas()  # type: ignore[no-any-return]
        except Exception as exc:
            raise TrainingError(
                f"data {self.path}: cannot read it ({first_line(exc, None, named=True)})"
            ) from None

    def record(self) -> dict[str, Any]:
        return {
            "kind": "parquet_dataset",
            "path": str(self.path),
            "files": len(self.files),
            "fingerprint": self.fingerprint(),
        }

    def fingerprint(self) -> str:
        """SHA-256 over every file's relative path, size and Parquet footer (row counts, row
        groups' statistics): a changed, added or removed file changes it; no row is read."""
        import pyarrow.parquet as pq

        digest = hashlib.sha256()
        for name in self.files:
            path = Path(name)
            meta = pq.ParquetFile(path).metadata
            digest.update(str(path.relative_to(self.path)).encode())
            digest.update(str(path.stat().st_size).encode())
            digest.update(str(meta.to_dict()).encode())
        return digest.hexdigest()
