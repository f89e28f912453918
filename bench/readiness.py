"""Start-up to ready with tree models compiled at load, against the same model on scikit-learn.

One `servewatch serve` (one worker) per flights family model (the demo's config, see
bench.common.ensure_family_models), started with SERVEWATCH_COMPILED_TREES=false (before) and
true (after), interleaved `--repeats` times; the time from process start to /readyz answering 200
(which comes after every model is loaded, verified and, after, compiled and checked). Prints the
medians and the ratios to the linear model (the demo's family, which nothing here changes).

    python -m bench.readiness [--registry .bench-registry] [--repeats 3] [--families ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.common import BENCH_FAMILIES, ServeProcess, ensure_family_models, load_average, table

MODES = {"before": "false", "after": "true"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path(".bench-registry"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", default="linear,tree,forest,hgb")
    args = ap.parse_args()
    names = dict(zip(BENCH_FAMILIES, ensure_family_models(args.registry), strict=True))
    families = [f for f in BENCH_FAMILIES if f in args.families.split(",")]
    print(f"load average {load_average()} at the start", flush=True)
    ready: dict[tuple[str, str], list[float]] = {(f, m): [] for f in families for m in MODES}
    for _ in range(args.repeats):  # interleaved: the machine's drift hits every cell alike
        for family in families:
            for mode, flag in MODES.items():
                env = {
                    "SERVEWATCH_MODELS": names[family],
                    "SERVEWATCH_MONITOR_INTERVAL": "0",
                    "SERVEWATCH_COMPILED_TREES": flag,
                }
                server = ServeProcess(args.registry, env=env)
                server.stop()
                ready[(family, mode)].append(server.ready_s)
    med = {k: statistics.median(v) for k, v in ready.items()}
    rows = [
        [
            family,
            f"{med[(family, 'before')]:.2f}",
            f"{med[(family, 'after')]:.2f}",
            f"{med[(family, 'after')] / med[(family, 'before')]:.2f}",
            f"{med[(family, 'after')] / med[('linear', 'after')]:.2f}",
        ]
        for family in families
    ]
    print(
        f"\nStart-up to ready, one model per server, median of {args.repeats} (interleaved); "
        f"load average {load_average()} at the end\n"
    )
    print(
        table(
            ["family", "ready s before", "ready s after", "after ÷ before", "after ÷ linear"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
