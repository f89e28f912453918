"""Training data where it lives: drawing the search's sample in the source against reading it whole.

One data set of `--rows` rows (7 columns: 3 numbers, 3 strings, a timestamp) in a PostgreSQL
table and in a hive-partitioned Parquet folder (a file per month partition, 50,000-row row
groups). Each measurement runs in its own process so its peak memory (VmHWM) is its own; the
process's RSS after the imports is given too (what the reading added is the difference).

    python -m bench.sources [--rows 2000000] [--sample 20000] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import load_average, machine, table

SCHEMA = "bench_sources"
KINDS = {
    "pg-whole": "PostgreSQL table, every row",
    "pg-table-sample": "PostgreSQL table, TABLESAMPLE + keyed hash",
    "pg-query-sample": "PostgreSQL query, keyed hash (top-n)",
    "pq-whole": "Parquet dataset, every row",
    "pq-sample": "Parquet dataset, row groups sampled",
}


def build(url: str, rows: int, folder: Path) -> None:
    """The table and the Parquet dataset, the same rows."""
    import numpy as np
    import pandas as pd
    import psycopg

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=rows),
            "x2": rng.uniform(0, 10, rows),
            "x3": rng.integers(0, 1000, rows).astype(float),
            "color": rng.choice(["red", "green", "blue"], rows),
            "city": rng.choice([f"city-{i}" for i in range(50)], rows),
            "when": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 86400, rows), "s"),
            "label": rng.choice(["yes", "no"], rows),
        }
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.rides (x1 float8, x2 float8, x3 float8, color text, "
            'city text, "when" timestamp, label text)'
        )
        step = 500_000
        with conn.cursor() as cur:
            for start in range(0, rows, step):
                buf = io.StringIO()
                frame.iloc[start : start + step].to_csv(buf, index=False, header=False)
                with cur.copy(f"COPY {SCHEMA}.rides FROM STDIN (FORMAT csv)") as copy:
                    copy.write(buf.getvalue())
        conn.execute(f"ANALYZE {SCHEMA}.rides")
    frame["month"] = frame["when"].dt.month
    frame.to_parquet(folder, partition_cols=["month"], row_group_size=50_000, index=False)


def high_water_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss on Linux keeps the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(kind: str, url: str, folder: str, sample: int) -> dict[str, float]:
    """One measurement, in this process: seconds, rows, peak RSS and RSS after the imports."""
    import pandas  # noqa: F401  (imported before the baseline RSS)
    import pyarrow.dataset  # noqa: F401

    from training import sources
    from training.config import SourceOptions

    base = high_water_mb()
    t0 = time.perf_counter()
    if kind.startswith("pg"):
        table_opts = SourceOptions(table=f"{SCHEMA}.rides")
        query_opts = SourceOptions(query=f"SELECT * FROM {SCHEMA}.rides WHERE x3 >= 0")
        src = sources.open_source(url, query_opts if kind == "pg-query-sample" else table_opts)
    else:
        src = sources.open_source(folder, SourceOptions())
    frame = src.read() if kind.endswith("whole") else src.sample(sample, 0)
    seconds = time.perf_counter() - t0
    peak = high_water_mb()
    return {"seconds": seconds, "rows": len(frame), "peak_mb": peak, "base_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "FOLDER", "SAMPLE"))
    args = parser.parse_args()
    if args.one:
        kind, folder, sample = args.one
        print(json.dumps(measure(kind, args.url, folder, int(sample))))
        return
    folder = Path(tempfile.mkdtemp(prefix="sw-bench-sources-")) / "rides"
    t0 = time.perf_counter()
    build(args.url, args.rows, folder)
    print(f"built {args.rows:,} rows in PostgreSQL and {folder} in {time.perf_counter() - t0:.0f}s")
    results = {}
    try:
        for kind in KINDS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.sources", "--url", args.url, "--one", kind,
                 str(folder), str(args.sample)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        import psycopg

        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        shutil.rmtree(folder.parent)
    print(f"\n{machine()}; load {load_average()}")
    print(f"{args.rows:,} rows, search sample {args.sample:,} (search.max_rows)\n")
    rows = []
    for kind, label in KINDS.items():
        r = results[kind]
        whole = results["pg-whole" if kind.startswith("pg") else "pq-whole"]
        rows.append(
            [
                label,
                f"{r['rows']:,}",
                f"{r['seconds']:.2f}",
                f"{whole['seconds'] / r['seconds']:.1f}x",
                f"{r['peak_mb']:.0f}",
                f"{r['peak_mb'] - r['base_mb']:.0f}",
            ]
        )
    print(
        table(
            ["read", "rows", "seconds", "faster than whole", "peak RSS MB", "added by reading MB"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
