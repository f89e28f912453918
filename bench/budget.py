"""The budget is the search's budget (issue 32): what a run with `search.budget_seconds` spends,
against the same run without one (`search.trials` per family), on scikit-learn's packaged data
sets (breast cancer by default). Per run: trials and seconds per family, the search's seconds, the
reserve the search left for the steps after it and what they measured, the whole run (publishing
included) and its ratio to the budget, the test score.

    nice -n 19 python -m bench.budget [--budget 40] [--models linear,hgb] [--ensemble]
        [--data breast_cancer,diabetes] [--budget-only]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sklearn import datasets

from bench.common import load_average, machine, table
from core.registry import Registry
from training.config import TrainConfig
from training.train import run_training


def run(
    path: Path, budget: float | None, models: list[str], ensemble: bool
) -> tuple[dict[str, Any], float]:
    """One training run's manifest and its seconds, publishing included."""
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
        start = time.monotonic()
        manifest = run_training(config, Registry(Path(reg))).manifest
        return manifest, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=40.0)
    parser.add_argument("--models", default="linear,hgb")
    parser.add_argument("--ensemble", action="store_true")
    parser.add_argument("--data", default="breast_cancer", help="sklearn.datasets load_* names")
    parser.add_argument("--budget-only", action="store_true", help="skip the unbudgeted run")
    args = parser.parse_args()
    models = args.models.split(",")
    rows = []
    budgets = (args.budget,) if args.budget_only else (None, args.budget)
    with tempfile.TemporaryDirectory() as work:
        for name in args.data.split(","):
            path = Path(work) / f"{name}.csv"
            getattr(datasets, f"load_{name}")(as_frame=True).frame.to_csv(path, index=False)
            for budget in budgets:
                m, seconds = run(path, budget, models, args.ensemble)
                spent = m["model"]["search"]["budget"]
                per_family = ", ".join(
                    f"{c['family']} {c['trials']} ({c['seconds']:.0f}s, {c['configuration']})"
                    for c in m["model"]["candidates"]
                )
                reserved = spent["reserved_seconds"]
                rows.append([
                name,
                "none (8 trials)" if budget is None else f"{budget:g} s",
                m["model"]["search"]["method"],
                per_family,
                f"{spent['seconds']:.1f}",
                "-" if reserved is None else f"{reserved:.1f}",
                f"{spent['after_search_seconds']:.1f}",
                f"{seconds:.1f}",
                "-" if budget is None else f"{seconds / budget:.2f}",
                f"{spent['calibration_slowdown'] or '-'}",
                m["model"]["selection"]["chosen"],
                m["model"]["selection"]["compared_on"],
                f"{m['objective']['test_score']:.4f}",
            ])  # fmt: skip
    print(f"machine: {machine()}; load {load_average()}; models {models}; ensemble {args.ensemble}")
    headers = ["data", "budget", "method", "trials per family (seconds, kept)", "search s",
               "reserved s", "after search s", "run s", "run / budget", "slowdown", "chosen",
               "compared on", "test score"]  # fmt: skip
    print(table(headers, rows))


if __name__ == "__main__":
    main()
