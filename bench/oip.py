"""/v2 (Open Inference Protocol) beside /v1 on one servewatch process, in one run.

The same flights rows as /v1 instances and as one tensor per feature (FP64 numbers, BYTES
categories, nulls for missing values); answers are first checked equal, then wrk drives each
route in turn (the order alternates per repeat, so drift in the machine's load falls on both),
median of the repeats. Beside requests per second (which other work on a shared machine moves a
lot), the server's own CPU time per answered request (utime + stime of the serving process and
its children, from /proc) is the steadier measure of what /v2 costs. The goal: /v2 costs at most
10% extra (CPU per request ratio <= 1.10).

    python -m bench.oip [--registry registry] [--seconds 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import (
    ServeProcess,
    WrkResult,
    ensure_demo_model,
    load_average,
    machine,
    median_run,
    table,
    wrk,
)
from bench.serving import instances
from core.registry import Registry
from service.protocols.oip import DESCRIBED

GOAL = 1.10


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    family, frontier = {pid}, [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier and p not in family]
        family.update(kids)
        frontier = kids
    return sum(times.get(p, 0.0) for p in family)


def tensors(rows: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": k,
                "datatype": DESCRIBED[kind],
                "shape": [len(rows)],
                "data": [r[k] for r in rows],
            }
            for k, kind in kinds.items()
        ]
    }


def check_same(url: str, rows: list[dict[str, Any]], kinds: dict[str, str]) -> None:
    one = httpx.post(f"{url}/v1/models/flights/predict", json={"instances": rows}).json()
    two = httpx.post(f"{url}/v2/models/flights/infer", json=tensors(rows, kinds)).json()
    outs = {o["name"]: o for o in two["outputs"]}
    assert outs["predict"]["data"] == [p["prediction"] for p in one["predictions"]]
    classes = orjson.loads(outs["predict_proba"]["parameters"]["classes"])
    want = [p["probabilities"][c] for p in one["predictions"] for c in classes]
    assert outs["predict_proba"]["data"] == want


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    reg = Registry(args.registry)
    version = reg.resolve("flights")
    kinds = {f.name: f.kind for f in reg.manifest("flights", version).features}
    print(f"machine: {machine()}; model flights v{version}; load before: {load_average()}")
    server = ServeProcess(args.registry)
    results = []
    try:
        for n, conns in ((1, 16), (32, 16), (1, 64)):
            rows = instances(n)
            check_same(server.url, rows, kinds)
            routes = {
                "/v1": (f"{server.url}/v1/models/flights/predict", {"instances": rows}),
                "/v2": (f"{server.url}/v2/models/flights/infer", tensors(rows, kinds)),
            }
            for url, body in routes.values():  # warm-up
                wrk(url, body, connections=conns, seconds=1)
            runs: dict[str, list[WrkResult]] = {"/v1": [], "/v2": []}
            cpu: dict[str, list[float]] = {"/v1": [], "/v2": []}  # server CPU us per request
            for rep in range(args.repeats):
                order = ["/v1", "/v2"] if rep % 2 == 0 else ["/v2", "/v1"]
                for route in order:
                    url, body = routes[route]
                    before = cpu_seconds(server.proc.pid)
                    run = wrk(url, body, connections=conns, seconds=args.seconds)
                    used = cpu_seconds(server.proc.pid) - before
                    runs[route].append(run)
                    cpu[route].append(used / (run.rps * round(args.seconds)) * 1e6)
            one, two = median_run(runs["/v1"]), median_run(runs["/v2"])
            ratios = sorted(b / a for a, b in zip(cpu["/v1"], cpu["/v2"], strict=True))
            cpu_one, cpu_two = statistics.median(cpu["/v1"]), statistics.median(cpu["/v2"])
            results.append((n, conns, one, two, cpu_one, cpu_two, ratios))
    finally:
        server.stop()
    rows_out = [
        [
            n,
            conns,
            f"{cpu_one:.0f}",
            f"{cpu_two:.0f}",
            f"{cpu_two / cpu_one:.2f}",
            f"{ratios[0]:.2f}-{ratios[-1]:.2f}",
            f"{one.rps:,.0f}",
            f"{two.rps:,.0f}",
            f"{two.rps / one.rps:.2f}",
            f"{one.p99_ms:.1f}",
            f"{two.p99_ms:.1f}",
            one.errors + two.errors,
        ]
        for n, conns, one, two, cpu_one, cpu_two, ratios in results
    ]
    headers = ["rows", "conns", "/v1 CPU us/req", "/v2 CPU us/req", "CPU /v2 / /v1",
               "paired CPU ratios", "/v1 req/s", "/v2 req/s", "req/s /v2 / /v1",
               "/v1 p99 ms", "/v2 p99 ms", "errors"]  # fmt: skip
    print(table(headers, rows_out))
    worst = max(r[5] / r[4] for r in results)
    print(
        f"\n{args.repeats} paired runs of {args.seconds:.0f} s per row, one worker, SQLite log, "
        f"wrk on the same 2 cores; load after: {load_average()}.\ngoal /v2 CPU per request "
        f"<= {GOAL:.2f}x /v1's: {'met' if worst <= GOAL else 'NOT met'} (worst {worst:.2f})"
    )


if __name__ == "__main__":
    main()
