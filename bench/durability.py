"""Cost of durable prediction logging: SERVEWATCH_LOG_DURABILITY=sync vs async, and logging off.

"Off" points the log at a store that is never flushed during the run (a 10-minute flush interval
and a queue larger than the run), so it measures serving without the write path.

    python -m bench.durability [--seconds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench.common import ServeProcess, ensure_demo_model, machine, median_run, table, wrk
from bench.serving import instances

MODES = {
    "async (default)": {"SERVEWATCH_LOG_DURABILITY": "async"},
    "sync (group commit)": {"SERVEWATCH_LOG_DURABILITY": "sync"},
    "writes deferred": {
        "SERVEWATCH_LOG_FLUSH_MS": "600000",
        "SERVEWATCH_LOG_BATCH_ROWS": "1000000",
        "SERVEWATCH_LOG_QUEUE_ROWS": "5000000",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    body = {"instances": instances(1)}
    results: dict[tuple[str, int], float] = {}
    rows = []
    for mode, env in MODES.items():
        server = ServeProcess(args.registry, env={**env, "SERVEWATCH_MONITOR_INTERVAL": "0"})
        url = f"{server.url}/v1/models/flights/predict"
        try:
            for conns in (16, 64):
                wrk(url, body, connections=conns, seconds=1)
                res = median_run(
                    [
                        wrk(url, body, connections=conns, seconds=args.seconds)
                        for _ in range(args.repeats)
                    ]
                )
                results[(mode, conns)] = res.rps
                rows.append(
                    [
                        mode,
                        conns,
                        f"{res.rps:.0f}",
                        f"{res.p50_ms:.1f}",
                        f"{res.p99_ms:.1f}",
                        res.errors,
                    ]
                )
        finally:
            server.proc.kill()  # the deferred mode would flush for a long time on SIGTERM
            server.proc.wait()
            shutil.rmtree(server.tmp, ignore_errors=True)
    for row in rows:
        row.append(f"{results[(row[0], row[1])] / results[('writes deferred', row[1])]:.2f}")
    print(f"machine: {machine()}; single-row requests, --workers 1")
    print(
        table(
            [
                "logging",
                "connections",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "throughput vs writes deferred",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
