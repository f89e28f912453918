"""The budget is the search's budget (issue 32): what a run with `search.budget_seconds` spends,
against the same run without one (`search.trials` per family), on breast cancer (569 rows,
scikit-learn's copy). Per run: trials and seconds per family, the search's seconds, the reserve
the search left for the steps after it and what they measured, the whole run, the test score.

    nice -n 19 python -m bench.budget [--budget 40] [--models linear,hgb] [--ensemble]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from sklearn import datasets

from bench.common import load_average, machine, table
from core.registry import Registry
from training.config import TrainConfig
from training.train import train_candidate


def run(path: Path, budget: float | None, models: list[str], ensemble: bool) -> dict[str, Any]:
    """One training run's manifest."""
    config = TrainConfig.model_validate(
        {
            "name": "budget",
            "data": str(path),
            "target": "target",
            "seed": 0,
            "models": models,
            "search": {"budget_seconds": budget},
            "ensemble": {"enabled": ensemble},
        }
    )
    with tempfile.TemporaryDirectory() as reg:
        return train_candidate(config, Registry(Path(reg))).manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=40.0)
    parser.add_argument("--models", default="linear,hgb")
    parser.add_argument("--ensemble", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "cancer.csv"
        datasets.load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
        for budget in (None, args.budget):
            m = run(path, budget, models, args.ensemble)
            spent = m["model"]["search"]["budget"]
            per_family = ", ".join(
                f"{c['family']} {c['trials']} ({c['seconds']:.0f}s, {c['configuration']})"
                for c in m["model"]["candidates"]
            )
            reserved = spent["reserved_seconds"]
            rows.append([
                "none (8 trials)" if budget is None else f"{budget:g} s",
                m["model"]["search"]["method"],
                per_family,
                f"{spent['seconds']:.1f}",
                "-" if reserved is None else f"{reserved:.1f}",
                f"{spent['after_search_seconds']:.1f}",
                f"{m['training_seconds']:.1f}",
                m["model"]["selection"]["chosen"],
                f"{m['objective']['test_score']:.4f}",
            ])  # fmt: skip
    print(f"machine: {machine()}; load {load_average()}; models {models}; ensemble {args.ensemble}")
    headers = ["budget", "method", "trials per family (seconds, kept)", "search s",
               "reserved s", "after search s", "run s", "chosen", "test roc_auc"]  # fmt: skip
    print(table(headers, rows))


if __name__ == "__main__":
    main()
