"""The distributed search (issue 31): trials per minute with 1 and 2 workers drawing from one
Optuna study in PostgreSQL, against the in-memory study of the single-process search, and what
the RDB storage costs per trial (a real trial, and an empty one, with its SQL statements).

    python -m bench.distributed_search [--url postgresql://...] [--rows 8000] [--trials 12]
        [--families linear,tree,hgb]

Trials are the flights demo's (random search, 3 folds on `--rows` rows); the machine's load
average is printed beside the figures (the 2-worker ratio needs 2 idle cores).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, load_average, machine, table
from training.candidates import default_params, make_estimator, model_space
from training.config import Preprocessing
from training.data import FeatureKinds
from training.distributed import SharedSearch, StudySpec, shared_cores
from training.pipeline import build_pipeline
from training.search import FamilyResult, make_cv, search_family

URL = os.environ.get("SERVEWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def frame(rows: int) -> tuple[pd.DataFrame, pd.Series, FeatureKinds]:
    from training.demo import FEATURES, TARGET, load_flights

    data = load_flights([1, 2]).sample(rows, random_state=0)
    x = data[FEATURES]
    cats = [c for c in FEATURES if x[c].dtype == object]
    kinds = FeatureKinds([c for c in FEATURES if c not in cats], cats, [])
    return x, data[TARGET].astype(str), kinds


def family_trials(
    shared: SharedSearch | None, family: str, rows: int, trials: int, scoring: str
) -> FamilyResult:
    """`trials` trials of `family`: in memory (search_family), or drawn from the shared study
    (the finishing worker waits for the others' last trials)."""
    x, y, kinds = frame(rows)
    space = model_space(family, "classification")

    def build(params: dict[str, Any]) -> Any:
        est = make_estimator(family, "classification", params, 0)
        return build_pipeline(kinds, est, family=family, prep=Preprocessing())

    args = (family, space, build, x, y)
    options: dict[str, Any] = {
        "method": "random",
        "cv": make_cv("classification", 3, False, 0),
        "scoring": scoring,
        "seed": 0,
        "default": default_params(family, "classification", space),
    }
    deadline = time.monotonic() + 3600
    search = search_family if shared is None else shared.search_family
    result: FamilyResult = search(*args, trials=trials, deadline=deadline, **options)
    return result


def worker(url: str, name: str, family: str, rows: int, trials: int, scoring: str) -> None:
    """A second worker process (run by this script with `python -c`): ready (imports and data
    loaded) before the clock starts, as in a search longer than a process start."""
    shared = SharedSearch(StudySpec(name, url), 1, "work")
    frame(rows)
    print("ready", flush=True)
    sys.stdin.readline()
    with shared_cores(2):  # as `train --workers 2` limits each of its workers
        family_trials(shared, family, rows, trials, scoring)
    shared.close()


def schema_url(url: str) -> tuple[str, Callable[[], None]]:
    """`url` in a fresh schema, and the call that drops it."""
    import sqlalchemy as sa

    schema = f"sw_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()

    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", drop


def round_trip_ms(url: str, n: int = 200) -> float:
    """Median milliseconds of one `SELECT 1` round trip to the study's PostgreSQL."""
    import statistics

    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    times = []
    with engine.connect() as conn:
        for _ in range(n):
            t = time.perf_counter()
            conn.execute(sa.text("SELECT 1"))
            times.append(1000 * (time.perf_counter() - t))
    engine.dispose()
    return statistics.median(times)


def timed(
    kind: str, url: str, family: str, rows: int, trials: int, scoring: str = "roc_auc"
) -> tuple[float, int, int, float]:
    """Seconds for the family's trials, trials done, SQL statements sent by this process, and
    this process's CPU seconds (what the storage costs a worker, whatever the machine's load)."""
    import sqlalchemy as sa

    name = f"bench-{uuid.uuid4().hex[:6]}"
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    other = None
    if kind == "2 workers":
        code = (
            "from bench.distributed_search import worker; "
            f"worker({url!r}, {name!r}, {family!r}, {rows}, {trials}, {scoring!r})"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        other = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert other.stdin and other.stdout and other.stdout.readline().strip() == "ready"
    shared = SharedSearch(StudySpec(name, url), 0, "wait")  # once per worker, not per trial
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    start, cpu = time.perf_counter(), time.process_time()
    if kind == "memory":
        result = family_trials(None, family, rows, trials, scoring)
    else:
        if other is not None and other.stdin:
            other.stdin.write("go\n")
            other.stdin.close()
        with shared_cores(2 if other is not None else 1):
            result = family_trials(shared, family, rows, trials, scoring)
        if other is not None:
            other.wait()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    shared.close()
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    return seconds, len(result.trials), statements, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default=URL)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--families", default="linear,tree,hgb")
    args = ap.parse_args()
    url, drop = schema_url(args.url)
    print(machine())
    print(f"load average before: {load_average()}")
    print(f"PostgreSQL round trip (SELECT 1, median): {round_trip_ms(url):.2f} ms")
    try:
        rows: list[list[Any]] = []
        speedups: dict[str, float] = {}
        for family in filter(None, args.families.split(",")):
            times: dict[str, float] = {}
            cpus: dict[str, float] = {}
            for kind in ("memory", "1 worker", "2 workers"):
                family_trials(None, family, args.rows, 1, "roc_auc")  # warm caches
                seconds, done, sql, cpu = timed(kind, url, family, args.rows, args.trials)
                times[kind], cpus[kind] = seconds / done, cpu / done
                rows.append(
                    [
                        family,
                        kind,
                        done,
                        f"{seconds:.1f}",
                        f"{60 * done / seconds:.1f}",
                        f"{times['memory'] / times[kind]:.2f}x",
                        f"{times['1 worker'] / times[kind]:.2f}x" if kind != "memory" else "-",
                        f"{cpus[kind]:.3f}",
                        f"{cpus[kind] / cpus['memory'] - 1:+.1%}" if kind == "1 worker" else "-",
                        sql if kind != "memory" else "-",
                        load_average().split(",")[0],
                    ]
                )
                print(" | ".join(map(str, rows[-1])), flush=True)
            speedups[family] = times["1 worker"] / times["2 workers"]
        print(
            table(
                [
                    "family",
                    "study",
                    "trials",
                    "seconds",
                    "trials/min",
                    "vs memory",
                    "vs 1 worker",
                    "CPU s/trial (w0)",
                    "CPU overhead",
                    "SQL (w0)",
                    "load 1m",
                ],
                rows,
            )  # fmt: skip
        )
        mean = float(np.exp(np.mean(np.log(list(speedups.values())))))
        print(
            "2 workers against 1 worker (trials per minute): "
            + ", ".join(f"{f} {v:.2f}x" for f, v in speedups.items())
            + f"; geometric mean {mean:.2f}x (goal >= 1.7x; needs 2 idle cores)"
        )
        # The storage's own cost: an empty trial (a constant scorer on 60 rows, one fold).
        empty = []
        for kind in ("memory", "1 worker", "2 workers"):
            seconds, done, sql, cpu = timed(kind, url, "linear", 60, 40, scoring="neg_log_loss")
            empty.append([kind, done, f"{1000 * seconds / done:.1f}", f"{1000 * cpu / done:.1f}",
                          f"{done / seconds:.1f}",
                          f"{sql / done:.0f}" if kind != "memory" else "-"])  # fmt: skip
        print("\nnear-empty trials (linear on 60 rows): the storage's cost per trial")
        print(
            table(
                ["study", "trials", "ms/trial", "CPU ms/trial (w0)", "trials/s", "SQL/trial (w0)"],
                empty,
            )
        )
        print(f"PostgreSQL round trip (SELECT 1, median): {round_trip_ms(url):.2f} ms")
        print(f"load average after: {load_average()}")
    finally:
        drop()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
