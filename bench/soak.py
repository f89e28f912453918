"""Soak: sustained load on `servewatch serve --workers 2`, then a graceful stop; nothing lost.

Prints errors, RSS of every worker at the start and end of the load, and log rows vs answered
predictions. Traffic goes only to 127.0.0.1 and stops by itself.

    python -m bench.soak [--minutes 3] [--connections 32] [--registry registry]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import httpx

from bench.common import ServeProcess, ensure_demo_model, machine, table, wrk
from bench.serving import instances
from predlog.store import PredictionStore


def rss_mb(pid: int) -> dict[int, float]:
    """RSS of the server and its worker processes, in MB."""
    out = subprocess.run(
        ["ps", "-o", "pid=,ppid=,rss=", "-A"], capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        p, pp, rss = (int(x) for x in line.split())
        if p == pid or pp == pid:
            found[p] = rss / 1024
    return found


def answered_requests(exposition: str) -> int:
    """Predict requests answered with 200, summed over versions (and label order)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "servewatch_requests_total"
                and labels.get("endpoint") == "predict"
                and labels.get("status") == "200"
            ):
                total += sample.value
    return int(total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    server = ServeProcess(args.registry, workers=2, env={"SERVEWATCH_MONITOR_INTERVAL": "0"})
    url = f"{server.url}/v1/models/flights/predict"
    body = {"instances": instances(4)}
    db = f"sqlite:///{server.tmp}/log.db"
    try:
        wrk(url, body, connections=args.connections, seconds=10)  # warm-up
        start_rss = rss_mb(server.proc.pid)
        res = wrk(url, body, connections=args.connections, seconds=args.minutes * 60)
        end_rss = rss_mb(server.proc.pid)
        metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        server.proc.terminate()
        server.proc.wait(120)
    rows = PredictionStore(db).count_predictions()
    served = answered_requests(metrics)
    shutil.rmtree(server.tmp, ignore_errors=True)
    print(f"machine: {machine()}")
    print(
        table(
            [
                "minutes",
                "connections",
                "requests/s",
                "errors",
                "answered rows (incl. warm-up)",
                "log rows after SIGTERM",
                "lost",
                "RSS start MB",
                "RSS end MB",
            ],
            [
                [
                    args.minutes,
                    args.connections,
                    f"{res.rps:.0f}",
                    res.errors,
                    served * 4,
                    rows,
                    served * 4 - rows,
                    " / ".join(f"{v:.0f}" for v in start_rss.values()),
                    " / ".join(f"{v:.0f}" for v in end_rss.values()),
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
