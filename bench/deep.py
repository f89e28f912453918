"""The deep family's serving cost against linear and mlp, and each fairness mitigation's trade-off,
on the flights demo data (one run, ratios against the baseline in the same run).

python -m bench.deep [--rows 8000] [--rounds 5] [--parts serving,mitigation]

Table 1: in-process `LoadedModel.predict_columns` per call, 1 and 32 rows, for a model of each
family trained on the same rows (rounds interleave the families, so a busy neighbour slows them
alike; the median round counts). Table 2: `fairness.mitigation` for `origin`: test ROC AUC and
the gaps with and without it (the same test rows), and the training time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import load_average, machine, table
from core.registry import Registry
from service.inference.model import LoadedModel
from training.config import TrainConfig
from training.demo import FEATURES, TARGET, load_flights
from training.train import run_training

COLUMNS = [c for c in FEATURES if c != "wind_gust"]  # 75% missing: the gate would fail it
FAMILIES = ("linear", "mlp", "deep")
METHODS = ("reweight", "resample", "reductions", "adversarial", "postprocess")


def _config(data: Path, name: str, **extra: Any) -> TrainConfig:
    return TrainConfig.model_validate(
        {"name": name, "data": str(data), "target": TARGET, "seed": 0,
         "search": {"method": "random", "trials": 2, "budget_seconds": 120},
         "split": {"cv_folds": 3}, "reference_rows": 500, **extra}
    )  # fmt: skip


def per_call_ms(model: LoadedModel, columns: dict[str, list[Any]], seconds: float) -> float:
    model.predict_columns(columns)
    end, calls = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        model.predict_columns(columns)
        calls += 1
    return seconds / calls * 1000


def serving(data: Path, registry: Registry, frame: Any, rounds: int) -> str:
    models: dict[str, LoadedModel] = {}
    train_s: dict[str, float] = {}
    for family in FAMILIES:
        start = time.perf_counter()
        manifest = run_training(_config(data, family, models=[family]), registry).manifest
        train_s[family] = time.perf_counter() - start
        models[family] = LoadedModel.load(registry, family, 1)
        print(f"trained {family}: test roc_auc {manifest['objective']['test_score']:.4f}")
    rows = []
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for n in (1, 32):
            for family in FAMILIES:
                feats = [f.name for f in models[family].manifest.features]
                sample = frame[feats].head(n)
                cols = {k: [None if v != v else v for v in vals]
                        for k, vals in sample.to_dict("list").items()}  # fmt: skip
                times.setdefault((family, n), []).append(per_call_ms(models[family], cols, 0.5))
    for family in FAMILIES:
        one = statistics.median(times[(family, 1)])
        many = statistics.median(times[(family, 32)])
        base1 = statistics.median(times[("linear", 1)])
        base32 = statistics.median(times[("linear", 32)])
        rows.append([family, models[family].serving_path, f"{one:.3f}", f"{one / base1:.1f}x",
                     f"{many:.3f}", f"{many / base32:.1f}x", f"{train_s[family]:.0f}"])  # fmt: skip
    return table(
        ["family", "path", "1 row ms", "vs linear", "32 rows ms", "vs linear", "train s"], rows
    )


def mitigations(data: Path, registry: Registry) -> str:
    rows = []
    for method in METHODS:
        start = time.perf_counter()
        cfg = _config(data, f"fair-{method}", models=["linear"], calibration="none",
                      fairness={"sensitive": ["origin"], "mitigation": method})  # fmt: skip
        m = run_training(cfg, registry).manifest["mitigation"]
        seconds = time.perf_counter() - start
        for name in ("none", method):
            gaps = m[name]["fairness"]["origin"]
            rows.append([method if name == method else f"({method}: none)",
                         f"{m[name]['test_score']:.4f}",
                         f"{gaps['demographic_parity_difference']:.3f}",
                         f"{gaps['equal_opportunity_difference']:.3f}",
                         f"{seconds:.0f}" if name == method else ""])  # fmt: skip
    return table(["mitigation", "test roc_auc", "DP gap", "EO gap", "train s"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parts", default="serving,mitigation")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    frame = load_flights([1, 2, 3, 4]).sample(args.rows, random_state=0)[[*COLUMNS, TARGET]]
    with tempfile.TemporaryDirectory(prefix="sw-bench-deep-") as tmp:
        data = Path(tmp) / "flights.csv"
        frame.to_csv(data, index=False)
        registry = Registry(Path(tmp) / "registry")
        print(machine())
        print(f"load average before: {load_average()}")
        print(f"flights: {args.rows} rows of January to April 2013\n")
        if "serving" in parts:
            print(serving(data, registry, frame, args.rounds), "\n")
        if "mitigation" in parts:
            print(mitigations(data, registry))
        print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
