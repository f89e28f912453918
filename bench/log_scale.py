"""The prediction log at scale on PostgreSQL: replicas writing, queries at 1M and 10M rows.

    python -m bench.log_scale writers [--seconds 20] [--replicas 1,2,4]
    python -m bench.log_scale queries [--rows 1000000,10000000]

`writers`: N writer processes (each one replica's log writer: `LogWriter` with its spool and a
`PredictionStore`, fed rows as fast as it takes them) write to one database; afterwards every
row is counted (nothing lost), and PostgreSQL's cost per row is read from the WAL position
(`pg_current_wal_lsn`) and the CPU of the writers' backends (/proc). Each layout is the
partitioned log (this release) and the unpartitioned one (the release before: ON CONFLICT on
the primary key), in the same run. The serving path is left out on purpose: on 2 cores, N
`servewatch serve` processes would spend the CPU on HTTP and models long before the log, and
the question here is how far the log and PostgreSQL go.

`queries`: a log of N rows over 10 days (one row in 8 labelled) built in the database with
generate_series, in both layouts; then the median of 3 of a monitoring window read (the
monitoring code's own `read_window`, last hour and last day, 50,000-row cap), a feedback join
over the last day, the oldest-row lookup, and retention of the oldest day (DELETE vs DROP).

Databases `sw_bench_log_*` are created and dropped by the run; check `df -h` first (10M rows
take about 6 GB per layout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import load_average, machine, table

ADMIN_URL = os.environ.get(
    "SERVEWATCH_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
INPUTS = {
    "carrier": "AA",
    "origin": "JFK",
    "dest": "LAX",
    "distance": 2475.0,
    "dep_hour": 14,
    "day_of_week": 3,
    "month": 7,
    "taxi_out": 17.5,
    "weather": "clear",
    "load": 0.82,
}
DAY = 86_400


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def recreate(name: str) -> None:
    admin = sa.create_engine(_sa(ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()


def drop(name: str) -> None:
    admin = sa.create_engine(_sa(ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _sa(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def plain_store(url: str, **kw: Any) -> Any:
    """The release before partitioning: one unpartitioned table, ON CONFLICT on its key."""
    from predlog.store import PredictionStore, metadata

    class PlainStore(PredictionStore):
        def create_schema(self) -> None:
            metadata.create_all(self.engine)
            self._schema_ready = True

        def _copy_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
            now = "extract(epoch from clock_timestamp())"
            from predlog.store import PREDICTION_COLUMNS, _row_values

            cols = ", ".join(PREDICTION_COLUMNS)
            raw = self.engine.raw_connection()
            try:
                cur: Any = raw.cursor()
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS sw_predictions_in "
                    "(LIKE sw_predictions) ON COMMIT DELETE ROWS"
                )
                with cur.copy(f"COPY sw_predictions_in ({cols}) FROM STDIN") as copy:
                    for values in map(_row_values, rows):
                        copy.write_row(values)
                cur.execute(
                    f"INSERT INTO sw_predictions ({cols}, ingested_at) SELECT {cols}, {now} "
                    f"FROM sw_predictions_in ON CONFLICT (id) DO NOTHING"
                )
                cur.close()
                raw.commit()
            finally:
                raw.close()

    return PlainStore(url, **kw)


def make_store(layout: str, url: str) -> Any:
    from predlog.store import PredictionStore

    return plain_store(url) if layout == "plain" else PredictionStore(url)


# ---------------------------------------------------------------- writers


def writer_main(args: argparse.Namespace) -> None:
    """One replica's log writer, fed as fast as it takes rows for `seconds`; prints JSON."""
    from predlog.ids import IdKeys
    from predlog.logwriter import LogWriter, Spool
    from predlog.store import prediction_rows

    store = make_store(args.layout, args.url)
    spool_dir = Path(tempfile.mkdtemp(prefix="sw-bench-spool-"))
    writer = LogWriter(
        store, Spool(spool_dir, 1 << 30), batch_rows=args.batch_rows, flush_s=0.2, max_rows=50_000
    )
    writer.start()
    inputs = [INPUTS] * 50
    probs = [{"yes": 0.31, "no": 0.69}] * 50
    keys = IdKeys("bench-key-0123456789")
    sent = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        rows = prediction_rows(
            ids=keys.new(50, "m"),
            model="m",
            version=1,
            created_at=time.time(),
            inputs=inputs,
            predictions=["no"] * 50,
            probabilities=probs,
            latency_ms=0.4,
        )
        while not writer.try_put(rows):
            time.sleep(0.001)
        sent += len(rows)
    writer.close()
    spooled = sum(len(Spool.read(p)) for p in Spool.all_files(spool_dir))
    shutil.rmtree(spool_dir, ignore_errors=True)
    print(json.dumps({"sent": sent, "spooled": spooled}))
    store.dispose()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def db_backends(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            )
        ]


def run_writers(layout: str, replicas: int, seconds: float, options: str = "") -> dict[str, Any]:
    name = "sw_bench_log_w"
    recreate(name)
    url = db_url(name) + options
    store = make_store(layout, url)
    store.create_schema()
    engine = sa.create_engine(_sa(db_url(name)))
    with engine.connect() as conn:
        lsn0 = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.log_scale",
                "writer",
                "--url",
                url,
                "--layout",
                layout,
                "--seconds",
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(replicas)
    ]
    # Sample the backends' CPU while they live: each writer's connection is one backend.
    cpu: dict[int, float] = {}
    started = time.monotonic()
    while any(p.poll() is None for p in procs):
        for pid in db_backends(engine):
            cpu[pid] = max(cpu.get(pid, 0.0), cpu_seconds(pid))
        time.sleep(0.5)
    wall = time.monotonic() - started
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    with engine.connect() as conn:
        lsn1 = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
        wal = conn.execute(
            sa.text("SELECT pg_wal_lsn_diff(:b, :a)"), {"a": lsn0, "b": lsn1}
        ).scalar_one()
        stored = conn.execute(sa.text("SELECT count(*) FROM sw_predictions")).scalar_one()
        dupes = conn.execute(
            sa.text("SELECT count(*) - count(DISTINCT id) FROM sw_predictions")
        ).scalar_one()
    engine.dispose()
    store.dispose()
    drop(name)
    sent = sum(r["sent"] for r in results)
    return {
        "layout": layout,
        "replicas": replicas,
        "sent": sent,
        "stored": int(stored),
        "spooled": sum(r["spooled"] for r in results),
        "dupes": int(dupes),
        "rows_s": stored / seconds,
        "wal_per_row": float(wal) / max(1, stored),
        "pg_cpu_us_per_row": 1e6 * sum(cpu.values()) / max(1, stored),
        "pg_cores": sum(cpu.values()) / wall,
    }


def writers(args: argparse.Namespace) -> None:
    configs: list[tuple[str, int, str, str]] = []
    for n in args.replicas:
        for layout in ("plain", "partitioned"):
            configs.append((layout, n, "", "on"))
    configs.append(
        ("partitioned", max(args.replicas), "?options=-csynchronous_commit%3Doff", "off")
    )
    rows, by, first = [], {}, args.replicas[0]
    for layout, n, options, sync in configs:
        r = run_writers(layout, n, args.seconds, options)
        by[(layout, n, sync)] = r["rows_s"]
        base = by.get(("plain", n, "on"))
        lost = r["sent"] - r["stored"] - r["spooled"]
        rows.append(
            [
                layout,
                n,
                sync,
                f"{r['sent']:,}",
                f"{r['stored']:,}",
                lost,
                r["dupes"],
                f"{r['rows_s']:,.0f}",
                f"{r['rows_s'] / by[(layout, first, 'on')]:.2f}",
                f"{r['rows_s'] / base:.2f}" if base else "",
                f"{r['wal_per_row']:.0f}",
                f"{r['pg_cpu_us_per_row']:.1f}",
                f"{r['pg_cores']:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    print(f"`{machine()}; load {load_average()}; {args.seconds:.0f} s per cell`")
    print(
        table(
            [
                "layout",
                "replicas",
                "synchronous_commit",
                "rows sent",
                "rows stored",
                "lost",
                "doubled",
                "rows/s",
                "vs 1 replica",
                "vs plain",
                "WAL B/row",
                "PG backend CPU µs/row",
                "PG backend cores",
            ],
            rows,
        )
    )


# ---------------------------------------------------------------- queries

GENERATE = """
INSERT INTO {table} (id, model, version, created_at, inputs, prediction, probabilities,
                     latency_ms, shadow, ref_id, ingested_at)
SELECT lpad(to_hex((t * 1000)::bigint), 12, '0') || lpad(to_hex(g), 20, '0'), 'm', 1, t,
       '{{"carrier": "AA", "origin": "JFK", "dest": "LAX", "distance": ' || (g % 3000) ||
       ', "dep_hour": ' || (g % 24) || ', "day_of_week": 3, "month": 7, "taxi_out": 17.5, '
       '"weather": "clear", "load": 0.82}}',
       CASE WHEN g % 3 = 0 THEN '"yes"' ELSE '"no"' END, '{{"yes": 0.31, "no": 0.69}}', 0.4,
       false, NULL, t
FROM (SELECT g, :start + (g::float8 / :n) * :span AS t FROM generate_series(1, :n) g) s
"""
LABELS = """
INSERT INTO sw_feedback (prediction_id, model, label, received_at)
SELECT id, 'm', '"yes"', ingested_at + 60 FROM sw_predictions WHERE right(id, 1) IN ('0', '8')
"""


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(layout: str, n: int, now: float) -> tuple[str, Any]:
    name = f"sw_bench_log_{layout}"
    recreate(name)
    store = make_store(layout, db_url(name))
    if layout == "partitioned":
        store.partitions_ahead = 1
    store.create_schema()
    start = now - 10 * DAY
    if layout == "partitioned":  # the ten days behind exist before the rows arrive
        with store.engine.begin() as conn:
            from predlog import partitions

            partitions.lock(conn)
            partitions.maintain(conn, interval_s=DAY, ahead=11, retention_s=None, now=start)
    t = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(GENERATE.format(table="sw_predictions")),
            {"start": start, "n": n, "span": 10 * DAY - 120},
        )
        conn.execute(sa.text(LABELS))  # one row in 8 labelled
    gen = time.perf_counter() - t
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    print(f"{layout} {n:,} rows generated in {gen:.0f} s", flush=True)
    return name, store


def query_row(layout: str, n: int, now: float) -> dict[str, float]:
    from monitoring.window import read_window
    from predlog import partitions, retention

    name, store = build(layout, n, now)
    out: dict[str, float] = {}
    for label, span in (("window 1 h", 3600), ("window 1 day", DAY)):
        out[label] = timed(
            lambda span=span: read_window(
                store,
                model="m",
                version=1,
                since=now - span,
                until=now,
                last=None,
                cap=50_000,
                classes=["no", "yes"],
            )
        )
    join = sa.text(
        "SELECT count(*), avg((f.label = p.prediction)::int) FROM sw_predictions p "
        "JOIN sw_feedback f ON f.prediction_id = p.id AND f.model = p.model "
        "WHERE p.model = 'm' AND p.version = 1 "
        "AND p.ingested_at > :since AND p.ingested_at <= :until"
    )

    def feedback_join() -> None:
        with store.engine.connect() as conn:
            conn.execute(join, {"since": now - DAY, "until": now}).one()

    out["feedback join 1 day"] = timed(feedback_join)

    def oldest() -> None:
        with store.engine.connect() as conn:
            if layout == "partitioned":
                partitions.oldest(conn)
            else:
                conn.execute(sa.text("SELECT min(ingested_at) FROM sw_predictions")).scalar()

    out["oldest row"] = timed(oldest)
    engine = sa.create_engine(_sa(db_url(name)))
    with engine.connect() as conn:
        lsn0 = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
    t = time.perf_counter()
    if layout == "partitioned":  # the oldest day's partition goes
        done = retention.maintain(store, 9.0, now=now)
        removed = done.rows_dropped
    else:  # the release before had no retention: what deleting a day by hand costs
        with store.engine.begin() as conn:
            removed = conn.execute(
                sa.text("DELETE FROM sw_predictions WHERE ingested_at < :c"),
                {"c": float(partitions.period_start(now - 10 * DAY, DAY) + DAY)},
            ).rowcount
    out["retention of the oldest day"] = time.perf_counter() - t
    with engine.connect() as conn:
        lsn1 = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
        out["retention WAL MB"] = (
            float(
                conn.execute(
                    sa.text("SELECT pg_wal_lsn_diff(:b, :a)"), {"a": lsn0, "b": lsn1}
                ).scalar_one()
            )
            / 1e6
        )
        out["size GB"] = (
            float(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one())
            / 1e9
        )
    out["rows removed"] = float(removed)
    engine.dispose()
    store.dispose()
    drop(name)
    return out


def queries(args: argparse.Namespace) -> None:
    now = time.time()
    rows = []
    for n in args.rows:
        res = {layout: query_row(layout, n, now) for layout in ("plain", "partitioned")}
        for what in res["plain"]:
            p, q = res["plain"][what], res["partitioned"][what]
            seconds = what not in ("retention WAL MB", "size GB", "rows removed")
            fmt = (lambda v: f"{v * 1000:,.1f} ms") if seconds else (lambda v: f"{v:,.1f}")
            rows.append([f"{n:,}", what, fmt(p), fmt(q), f"{q / p:.3f}" if p else ""])
            print(rows[-1], flush=True)
    print(f"`{machine()}; load {load_average()}; median of 3 (retention: once)`")
    print(
        table(
            [
                "rows in log",
                "measure",
                "unpartitioned",
                "partitioned (daily)",
                "partitioned / unpartitioned",
            ],
            rows,
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("writers")
    w.add_argument("--seconds", type=float, default=20)
    w.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    q = sub.add_parser("queries")
    q.add_argument(
        "--rows", type=lambda s: [int(x) for x in s.split(",")], default=[1_000_000, 10_000_000]
    )
    one = sub.add_parser("writer")
    one.add_argument("--url", required=True)
    one.add_argument("--layout", required=True)
    one.add_argument("--seconds", type=float, required=True)
    one.add_argument("--batch-rows", type=int, default=500)
    args = ap.parse_args()
    {"writers": writers, "queries": queries, "writer": writer_main}[args.cmd](args)


if __name__ == "__main__":
    main()
