"""Full retrain vs incremental update on the flights months (dry runs: nothing is published).

The registry's flights model (trained on January to April) is the champion; labelled traffic from
May to August is logged; both kinds of retraining are timed and gated on the newest 30%.

    python -m bench.retrain [--registry registry] [--rows 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import ensure_demo_model, machine, table
from core.registry import Registry
from predlog.backfill import backfill
from predlog.store import PredictionStore
from servewatch.retrain import retrain
from service.inference.model import LoadedModel
from training.demo import FEATURES, TARGET, load_flights
from training.errors import TrainingError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = PredictionStore(f"sqlite:///{tmp}/log.db")
        store.create_schema()
        reg = Registry(args.registry)
        champion = LoadedModel.load(reg, "flights", reg.resolve("flights"))
        later = (
            load_flights([5, 6, 7, 8]).sample(args.rows, random_state=1).sort_values("time_hour")
        )
        rows_in = later[FEATURES].astype(object).where(later[FEATURES].notna(), None)
        backfill(
            store,
            champion,
            rows_in.to_dict(orient="records"),
            labels=[str(y) for y in later[TARGET]],
            start=time.time() - args.rows,
        )
        for kind, incremental in (("full retrain", False), ("incremental update", True)):
            start = time.perf_counter()
            try:
                result = retrain(
                    registry=Registry(args.registry),
                    store=store,
                    model="flights",
                    incremental=incremental,
                    dry_run=True,
                )
            except TrainingError as exc:  # e.g. an HGB champion cannot be updated incrementally
                rows.append([kind, "-", "-", "-", "-", "-", f"not run: {exc}"])
                continue
            seconds = time.perf_counter() - start
            g = result.manifest["gate"]
            rec, orig = g["checks"]["recent_window"], g["checks"]["original_test"]
            rows.append(
                [
                    kind,
                    f"{seconds:.0f}",
                    f"{rec['champion']:.4f}",
                    f"{rec['challenger']:.4f}",
                    f"{orig['champion']:.4f}",
                    f"{orig['challenger']:.4f}",
                    "passed" if g["passed"] else "refused",
                ]
            )
    print(f"machine: {machine()}; {args.rows} labelled May-August flights logged; metric ROC AUC")
    print(
        table(
            [
                "kind",
                "seconds",
                "recent: champion",
                "recent: challenger",
                "original test: champion",
                "original test: challenger",
                "gate",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
