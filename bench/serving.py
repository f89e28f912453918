"""Serving benchmark: servewatch over HTTP vs the same model called in-process.

Single-row and 32-row requests at 1, 16 and 64 connections (wrk, a separate process), median of
repeated runs; every answer is first checked against the in-process model. Prints markdown tables.

    python bench/serving.py [--registry registry] [--seconds 5] [--repeats 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
import pandas as pd

from bench.common import ServeProcess, ensure_demo_model, machine, median_run, table, wrk
from core.registry import Registry
from service.model import LoadedModel
from training.demo import FEATURES, load_flights


def instances(n: int) -> list[dict[str, object]]:
    frame = load_flights(months=[5]).head(n)[FEATURES]
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [
        {k: (v if not isinstance(v, float) or v == v else None) for k, v in r.items()} for r in rows
    ]


def in_process(model: LoadedModel, batch: list[dict[str, object]], seconds: float) -> float:
    """Model calls per second on this batch through the same code path the service uses."""
    columns = {k: [r[k] for r in batch] for k in batch[0]}
    end = time.perf_counter() + seconds
    calls = 0
    while time.perf_counter() < end:
        model.predict_columns(columns)
        calls += 1
    return calls / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    reg = Registry(args.registry)
    version = reg.resolve("flights")
    model = LoadedModel.load(reg, "flights", version)
    print(f"machine: {machine()}; model flights v{version} ({model.manifest.model.family})")

    server = ServeProcess(args.registry, workers=args.workers)
    url = f"{server.url}/v1/models/flights/predict"
    rows_out = []
    try:
        for n in (1, 32):
            batch = instances(n)
            body = {"instances": batch}
            answer = httpx.post(url, json=body, timeout=30).json()["predictions"]
            expected = model.predict_columns({k: [r[k] for r in batch] for k in batch[0]})
            for got, want in zip(answer, expected.probabilities or [], strict=True):
                assert all(abs(got["probabilities"][c] - p) < 1e-6 for c, p in want.items()), (
                    "answers differ"
                )
            base_calls = in_process(model, batch, 2.0)
            for conns in (1, 16, 64):
                wrk(url, body, connections=conns, seconds=1)  # warm-up
                res = median_run(
                    [
                        wrk(url, body, connections=conns, seconds=args.seconds)
                        for _ in range(args.repeats)
                    ]
                )
                rows_out.append(
                    [
                        n,
                        conns,
                        f"{res.rps:,.0f}",
                        f"{res.rps * n:,.0f}",
                        f"{res.p50_ms:.1f}",
                        f"{res.p99_ms:.1f}",
                        res.errors,
                        f"{base_calls * n:,.0f}",
                        f"{res.rps / base_calls:.2f}",
                    ]
                )
    finally:
        server.stop()
    print(
        f"\nservewatch --workers {args.workers}, logging and metrics on; start-up to ready "
        f"{server.ready_s:.2f} s; median of {args.repeats} x {args.seconds:.0f} s runs\n"
    )
    print(
        table(
            [
                "rows/request",
                "connections",
                "requests/s",
                "rows/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "in-process rows/s (1 call at a time)",
                "HTTP req/s ÷ in-process calls/s",
            ],
            rows_out,
        )
    )


if __name__ == "__main__":
    pd.options.mode.copy_on_write = True
    main()
