"""Decision thresholds on the flights demo (issue 19, goal 2): realised F1 on later months.

Trains the flights demo (training/configs/flights.yaml: January to April) into a registry, loads
the version as the service does (`LoadedModel`, its serving path) and predicts every flight of May
to December. Per month, realised precision, recall and F1 of "late" for:

- served: `prediction` as the service answers it (the manifest's validation-tuned threshold),
- argmax: the same probabilities, the most probable class (what the service answered before),
- tuned HGB: an untuned HistGradientBoostingClassifier fitted on the same training rows, its
  threshold tuned for F1 on the same validation rows by scikit-learn's
  TunedThresholdClassifierCV(cv="prefit", refit=False): predicting by a threshold tuned on the
  validation set, independently of servewatch's code.

    nice -n 19 python -m bench.threshold [--registry .bench-registry-threshold] [--retrain]
        [--models hgb,linear] [--budget 60]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.model_selection import TunedThresholdClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from bench.common import ROOT, machine, table
from core.registry import Registry
from service.inference.model import LoadedModel
from training.config import load_config
from training.demo import FEATURES, TARGET, load_flights
from training.prepare import prepare, quiet
from training.train import run_training

MONTHS = range(5, 13)


def scores(y: np.ndarray[Any, Any], pred: np.ndarray[Any, Any]) -> tuple[float, float, float]:
    """Precision, recall and F1 of the positive class (1: late)."""
    return (
        float(precision_score(y, pred, zero_division=0)),
        float(recall_score(y, pred, zero_division=0)),
        float(f1_score(y, pred, zero_division=0)),
    )


def tuned_hgb(config_path: Path) -> tuple[TunedThresholdClassifierCV, float]:
    """A default HGB on the demo's training rows, its F1 threshold tuned on its validation rows."""
    prepared = prepare(load_config(config_path, {}), quiet)
    s = prepared.splits
    cats = [c for c in FEATURES if c in prepared.kinds.categorical]
    pre = ColumnTransformer(
        [
            (
                "cat",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
                cats,
            )
        ],
        remainder="passthrough",
    )
    mask = [True] * len(cats) + [False] * (len(FEATURES) - len(cats))
    hgb = Pipeline(
        [
            ("pre", pre),
            ("model", HistGradientBoostingClassifier(categorical_features=mask, random_state=0)),
        ]
    )
    hgb.fit(s.x_train[cats + [c for c in FEATURES if c not in cats]], s.y_train.astype(int))
    order = cats + [c for c in FEATURES if c not in cats]
    tuned = TunedThresholdClassifierCV(hgb, scoring="f1", cv="prefit", refit=False)
    tuned.fit(s.x_val[order], s.y_val.astype(int))
    tuned.order_ = order  # type: ignore[attr-defined]
    return tuned, float(tuned.best_threshold_)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=ROOT / ".bench-registry-threshold")
    ap.add_argument("--retrain", action="store_true", help="train a fresh version first")
    ap.add_argument("--models", help="families to search, e.g. hgb,linear (default: the config's)")
    ap.add_argument("--budget", type=float, help="search.budget_seconds (default: the config's)")
    args = ap.parse_args()
    overrides: dict[str, Any] = {
        "models": args.models.split(",") if args.models else None,
        "search.budget_seconds": args.budget,
    }
    config_path = ROOT / "training/configs/flights.yaml"
    registry = Registry(args.registry)
    if args.retrain and args.registry.exists():
        shutil.rmtree(args.registry)
    if not registry.versions("flights"):
        print("training the flights demo (a few minutes) ...", flush=True)
        started = time.monotonic()
        run_training(load_config(config_path, overrides), registry, promote="always")
        print(f"trained in {time.monotonic() - started:.0f} s", flush=True)
    version = registry.resolve("flights")
    model = LoadedModel.load(registry, "flights", version)
    decision = model.manifest.decision
    print(f"flights v{version}: family {model.manifest.model.family}, path {model.serving_path}")
    print(f"decision: {decision.model_dump() if decision else None}")
    tuned, hgb_threshold = tuned_hgb(config_path)
    print(f"tuned HGB threshold (validation F1): {hgb_threshold:.3f}")
    positive = model.classes.index("1") if model.classes else 1
    rows = []
    totals: dict[str, list[float]] = {"served": [], "argmax": [], "tuned HGB": []}
    for month in MONTHS:
        frame = load_flights(months=[month])
        y = frame[TARGET].to_numpy(dtype=int)
        records = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
        columns = {c: records[c].tolist() for c in FEATURES}
        out = model.predict_columns(columns)
        served = np.array([int(p) for p in out.predictions])
        assert out.probabilities is not None
        proba = np.array([[p[c] for c in model.classes or []] for p in out.probabilities])
        argmax = (proba.argmax(axis=1) == positive).astype(int)
        hgb = tuned.predict(frame[tuned.order_]).astype(int)  # type: ignore[attr-defined]
        cells: list[Any] = [month, len(y), f"{y.mean():.3f}"]
        for name, pred in (("served", served), ("argmax", argmax), ("tuned HGB", hgb)):
            p, r, f = scores(y, pred)
            totals[name].append(f)
            cells += [f"{p:.3f}", f"{r:.3f}", f"{f:.3f}"]
        rows.append(cells)
    headers = ["month", "flights", "late share"]
    for name in totals:
        headers += [f"{name} P", f"{name} R", f"{name} F1"]
    print()
    print(machine())
    print(table(headers, rows))
    wins = sum(
        s >= max(a, h)
        for s, a, h in zip(totals["served"], totals["argmax"], totals["tuned HGB"], strict=True)
    )
    print()
    print(
        f"mean F1 May-December: served {np.mean(totals['served']):.3f}, argmax "
        f"{np.mean(totals['argmax']):.3f}, tuned HGB {np.mean(totals['tuned HGB']):.3f}; served "
        f">= both in {wins} of {len(rows)} months"
    )


if __name__ == "__main__":
    main()
