"""The distributed search (issue 31): trials per minute with 1 and 2 workers drawing from one
Optuna study in PostgreSQL, against the in-memory study of the single-process search, and what
the RDB storage costs per trial (a real trial, and an empty one, with its SQL statements).

    python -m bench.distributed_search [--url postgresql://...] [--rows 8000] [--trials 12]
        [--families linear,tree,hgb]

Trials are the flights demo's (random search, 3 folds on `--rows` rows); the machine's load
average is printed beside the figures (the 2-worker ratio needs 2 idle cores). The CPU columns
do not depend on the load: each worker's own CPU time over its trials, and that of the
PostgreSQL backends serving the workers' connections (found by their `application_name` in
`pg_stat_activity`, their CPU read from /proc by a sampling process of its own).
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
from dataclasses import dataclass
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


METHOD = {"method": "random"}
"""The search method of every measured search (`--method`)."""


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
        "method": METHOD["method"],
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
    loaded) before the clock starts, as in a search longer than a process start; prints the CPU
    seconds its trials took."""
    shared = SharedSearch(StudySpec(name, url), 1, "work")
    frame(rows)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    with shared_cores(2):  # as `train --workers 2` limits each of its workers
        family_trials(shared, family, rows, trials, scoring)
    print(f"cpu {time.process_time() - cpu}", flush=True)
    shared.close()


def backends(url: str, app: str) -> None:
    """Run by `timed` in a process of its own (its CPU counted nowhere): every 0.1 s, the CPU
    seconds of each PostgreSQL backend whose `application_name` is `app`, read from /proc, until
    stdin closes; then the CPU they used since this started (a backend alive at the start
    counted from there)."""
    import threading

    import sqlalchemy as sa

    from bench.common import cpu_seconds

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1].split("?")[0])
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    stop = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    query = sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :app")
    started = False
    with engine.connect() as conn:
        while True:
            pids = conn.execute(query, {"app": app}).scalars().all()
            conn.rollback()
            for pid in pids:
                try:
                    last[pid] = cpu_seconds(pid)
                except OSError:
                    continue
                first.setdefault(pid, last[pid] if not started else 0.0)
            if not started:
                started = True
                print("ready", flush=True)
            if stop.is_set():
                break
            time.sleep(0.1)
    engine.dispose()
    print(f"{sum(last[p] - first[p] for p in last)} {len(last)}", flush=True)


class Backends:
    """`backends` in a process of its own: `stop()` gives the CPU seconds and the number of
    PostgreSQL backends seen."""

    def __init__(self, url: str, app: str) -> None:
        code = f"from bench.distributed_search import backends; backends({url!r}, {app!r})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> tuple[float, int]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        cpu, count = self.proc.stdout.readline().split()
        self.proc.wait()
        return float(cpu), int(count)


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


@dataclass
class Timed:
    """One measured search: its seconds and trials, worker 0's SQL statements, the CPU seconds
    of worker 0, of worker 1 and of the PostgreSQL backends serving them."""

    seconds: float
    trials: int
    statements: int
    cpu_w0: float
    cpu_w1: float = 0.0
    cpu_pg: float = 0.0
    backends: int = 0

    @property
    def cpu_all(self) -> float:
        return self.cpu_w0 + self.cpu_w1 + self.cpu_pg


def timed(
    kind: str, url: str, family: str, rows: int, trials: int, scoring: str = "roc_auc"
) -> Timed:
    """The family's trials in memory, from the study with 1 worker or with 2 (`kind`): seconds,
    trials done, SQL statements sent by worker 0, and the CPU the workers and their PostgreSQL
    backends used (what the storage costs, whatever the machine's load)."""
    import sqlalchemy as sa

    name = f"bench-{uuid.uuid4().hex[:6]}"
    url = f"{url}&application_name=sw-{name}"
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    other = None
    if kind == "2 workers":
        code = (
            f"from bench import distributed_search as d; d.METHOD.update({METHOD!r}); "
            f"d.worker({url!r}, {name!r}, {family!r}, {rows}, {trials}, {scoring!r})"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        other = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert other.stdin and other.stdout and other.stdout.readline().strip() == "ready"
    shared = SharedSearch(StudySpec(name, url), 0, "wait")  # once per worker, not per trial
    pg = Backends(url, f"sw-{name}") if kind != "memory" else None
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    start, cpu = time.perf_counter(), time.process_time()
    cpu_w1 = 0.0
    if kind == "memory":
        result = family_trials(None, family, rows, trials, scoring)
    else:
        if other is not None and other.stdin:
            other.stdin.write("go\n")
            other.stdin.close()
        with shared_cores(2 if other is not None else 1):
            result = family_trials(shared, family, rows, trials, scoring)
        if other is not None and other.stdout:
            cpu_w1 = float(other.stdout.readline().split()[1])
            other.wait()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    cpu_pg, seen = pg.stop() if pg is not None else (0.0, 0)
    shared.close()
    return Timed(seconds, len(result.trials), statements, cpu, cpu_w1, cpu_pg, seen)


KINDS = ("memory", "1 worker", "2 workers")


def measure(
    url: str, family: str, rows: int, trials: int, rounds: int, scoring: str = "roc_auc"
) -> dict[str, Timed]:
    """Each kind `rounds` times, alternating their order round to round; per kind the round of
    median CPU per trial (workers and backends)."""
    runs: dict[str, list[Timed]] = {k: [] for k in KINDS}
    for r in range(rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            family_trials(None, family, rows, 1, scoring)  # warm caches
            runs[kind].append(timed(kind, url, family, rows, trials, scoring))
    return {k: sorted(v, key=lambda t: t.cpu_all / t.trials)[len(v) // 2] for k, v in runs.items()}


def family_rows(family: str, got: dict[str, Timed]) -> list[list[Any]]:
    """The table's rows of one family."""
    mem = got["memory"]
    per = {k: t.seconds / t.trials for k, t in got.items()}
    out = []
    for kind, t in got.items():
        study = kind != "memory"
        out.append(
            [
                family,
                kind,
                t.trials,
                f"{t.seconds:.1f}",
                f"{60 * t.trials / t.seconds:.1f}",
                f"{per['memory'] / per[kind]:.2f}x",
                f"{per['1 worker'] / per[kind]:.2f}x" if study else "-",
                f"{t.cpu_w0 / t.trials:.3f}",
                f"{t.cpu_all / t.trials:.3f}",
                f"{1000 * t.cpu_pg / t.trials:.1f}" if study else "-",
                f"{t.cpu_all / t.trials / (mem.cpu_all / mem.trials) - 1:+.1%}"
                if kind == "1 worker"
                else "-",
                f"{t.statements / t.trials:.0f}" if study else "-",
                load_average().split(",")[0],
            ]
        )
    return out


HEADERS = [
    "family",
    "study",
    "trials",
    "seconds",
    "trials/min",
    "vs memory",
    "vs 1 worker",
    "CPU s/trial (w0)",
    "CPU s/trial (all)",
    "PG CPU ms/trial",
    "CPU overhead (all)",
    "SQL/trial (w0)",
    "load 1m",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default=URL)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--families", default="linear,tree,hgb")
    ap.add_argument("--rounds", type=int, default=1, help="each measured this often (median)")
    ap.add_argument("--empty", type=int, default=40, help="near-empty trials (0: none)")
    ap.add_argument("--method", choices=["random", "bayes"], default="random")
    args = ap.parse_args()
    METHOD["method"] = args.method
    url, drop = schema_url(args.url)
    print(machine())
    print(f"load average before: {load_average()}")
    print(f"PostgreSQL round trip (SELECT 1, median): {round_trip_ms(url):.2f} ms")
    try:
        rows: list[list[Any]] = []
        speedups: dict[str, float] = {}
        for family in filter(None, args.families.split(",")):
            got = measure(url, family, args.rows, args.trials, args.rounds)
            rows += family_rows(family, got)
            print(" | ".join(map(str, rows[-1])), flush=True)
            one, two = got["1 worker"], got["2 workers"]
            speedups[family] = (one.seconds / one.trials) / (two.seconds / two.trials)
        print(table(HEADERS, rows))
        if speedups:
            mean = float(np.exp(np.mean(np.log(list(speedups.values())))))
            print(
                "2 workers against 1 worker (trials per minute): "
                + ", ".join(f"{f} {v:.2f}x" for f, v in speedups.items())
                + f"; geometric mean {mean:.2f}x (goal >= 1.7x; needs 2 idle cores)"
            )
        if args.empty:  # the storage's own cost: a constant scorer on 60 rows
            got = measure(url, "linear", 60, args.empty, args.rounds, scoring="neg_log_loss")
            print("\nnear-empty trials (linear on 60 rows): the storage's cost per trial")
            print(
                table(
                    [
                        "study",
                        "trials",
                        "ms/trial",
                        "CPU ms/trial (w0)",
                        "CPU ms/trial (all)",
                        "PG CPU ms/trial",
                        "SQL/trial (w0)",
                        "backends",
                    ],
                    [
                        [
                            k,
                            t.trials,
                            f"{1000 * t.seconds / t.trials:.1f}",
                            f"{1000 * t.cpu_w0 / t.trials:.1f}",
                            f"{1000 * t.cpu_all / t.trials:.1f}",
                            f"{1000 * t.cpu_pg / t.trials:.1f}",
                            f"{t.statements / t.trials:.0f}" if k != "memory" else "-",
                            t.backends,
                        ]
                        for k, t in got.items()
                    ],
                )  # fmt: skip
            )
        print(f"PostgreSQL round trip (SELECT 1, median): {round_trip_ms(url):.2f} ms")
        print(f"load average after: {load_average()}")
    finally:
        drop()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
