"""Cost of /explain per row for the demo model, in-process and over HTTP, against /predict.

python -m bench.explain [--registry registry]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import ServeProcess, ensure_demo_model, machine, median_run, table, wrk
from bench.serving import instances
from core.registry import Registry
from service.inference.model import LoadedModel


def per_call_ms(fn, columns, seconds: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    fn(columns)
    end, calls = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        fn(columns)
        calls += 1
    return seconds / calls * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    reg = Registry(args.registry)
    model = LoadedModel.load(reg, "flights", reg.resolve("flights"))
    rows = []
    server = ServeProcess(args.registry, env={"SERVEWATCH_MONITOR_INTERVAL": "0"})
    try:
        for n in (1, 32):
            batch = instances(n)
            cols = {k: [r[k] for r in batch] for k in batch[0]}
            pred_ms = per_call_ms(model.predict_columns, cols)
            exp_ms = per_call_ms(model.explain_columns, cols)
            http = {}
            for route in ("predict", "explain"):
                url = f"{server.url}/v1/models/flights/{route}"
                wrk(url, {"instances": batch}, connections=8, seconds=1)
                http[route] = median_run(
                    [wrk(url, {"instances": batch}, connections=8, seconds=3) for _ in range(3)]
                )
            rows.append(
                [
                    n,
                    f"{pred_ms:.2f}",
                    f"{exp_ms:.2f}",
                    f"{exp_ms / n:.3f}",
                    f"{http['predict'].rps:.0f}",
                    f"{http['explain'].rps:.0f}",
                    f"{http['explain'].rps / http['predict'].rps:.2f}",
                ]
            )
    finally:
        server.stop()
    print(f"machine: {machine()}; explainer: {model.explainer().method}")
    print(
        table(
            [
                "rows/request",
                "predict ms/call",
                "explain ms/call",
                "explain ms/row",
                "HTTP predict req/s (8 conns)",
                "HTTP explain req/s",
                "explain ÷ predict",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
