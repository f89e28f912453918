"""Copied rows and the test score (issue 34): the manifest's test AUC against fresh rows.

8,000 flights of January to April 2013 (shuffled, no time column) with 2,000 of them copied (a
quarter of the rows duplicated), trained as a forest, once with `split.keep_copies_together`
(the default) and once without (the split before issue 34). Each model is scored on 4,000 other
flights: the test AUC should match theirs within its noise (the standard deviation of the AUC over
fresh samples of the test set's size).

    nice -n 19 python -m bench.copies [--rows 8000] [--copies 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bench.common import machine, table
from core.registry import Registry
from training.config import TrainConfig
from training.demo import FEATURES, TARGET, load_flights
from training.train import train_candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--copies", type=int, default=2000)
    args = parser.parse_args()
    flights = load_flights().drop(columns=["time_hour"])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(flights))
    base = flights.iloc[order[: args.rows]].reset_index(drop=True)
    fresh = flights.iloc[order[args.rows : args.rows + 4000]]
    copies = base.iloc[rng.choice(args.rows, args.copies, replace=False)]
    frame = pd.concat([base, copies], ignore_index=True).sample(frac=1.0, random_state=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flights.csv"
        frame.to_csv(path, index=False)
        for keep in (True, False):
            config = TrainConfig.model_validate(
                {
                    "data": str(path),
                    "target": TARGET,
                    "models": ["forest"],
                    "search": {"trials": 3, "budget_seconds": 60},
                    "ensemble": {"enabled": False},
                    "calibration": "none",
                    "quality": {"max_missing_share": 0.75},  # wind_gust: calm air
                    "features": {"categorical": ["carrier", "origin", "dest"]},
                    "split": {"keep_copies_together": keep},
                }
            )
            started = time.perf_counter()
            candidate = train_candidate(config, Registry(Path(tmp) / f"registry-{keep}"))
            seconds = time.perf_counter() - started
            splits, model = candidate.prepared.splits, candidate.model
            key = lambda x: pd.util.hash_pandas_object(x[FEATURES], index=False)  # noqa: E731
            seen = set(key(splits.x_train)) | set(key(splits.x_val))
            copied = float(np.mean([h in seen for h in key(splits.x_test)]))
            late = list(model.classes_).index("1")

            def auc(rows: pd.DataFrame, model: object = model, late: int = late) -> float:
                proba = model.predict_proba(rows[FEATURES])[:, late]  # type: ignore[attr-defined]
                return float(roc_auc_score(rows[TARGET].astype(str) == "1", proba))

            n = len(splits.x_test)
            draws = np.random.default_rng(1).integers(0, len(fresh), (100, n))
            noise = np.std([auc(fresh.iloc[d]) for d in draws])
            rows.append(
                [
                    str(keep).lower(),
                    f"{copied:.1%}",
                    f"{candidate.manifest.metrics['test']['roc_auc']:.4f}",
                    f"{auc(fresh):.4f}",
                    f"{noise:.4f}",
                    f"{seconds:.0f}",
                ]
            )
    headers = [
        "keep_copies_together",
        "test rows with a copy in train + validation",
        "test AUC (manifest)",
        "AUC on 4,000 fresh rows",
        "sd of the AUC (test-sized samples)",
        "training s",
    ]
    print(machine())
    print(table(headers, rows))


if __name__ == "__main__":
    main()
