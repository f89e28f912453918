"""How exact the compiled trees are, and how often a float32 walk would move a row across a split.

On every flights row of 2013 (preprocessed by each model's own pipeline), the tree model's
scikit-learn answer against: the compiled model (service/inference/compiled.py, float64) and
the same trees walked in float32 (thresholds and inputs rounded to float32, as skl2onnx's and
most runtimes' float32 tree ensembles do). Counts rows whose probability moves by more than 1e-6
(the answers' rounding) and rows whose predicted class changes. Beside them, a LightGBM and an
XGBoost classifier (100 trees, fitted on the bench's flights sample preprocessed by the HGB model's
pipeline) against their compiled form (service/inference/compiled_boosters.py).

    python -m bench.tree_exactness [--registry .bench-registry]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ensure_family_models, table
from core.registry import Registry
from service.inference.compiled import CompiledTrees, _builder
from service.inference.model import LoadedModel
from service.inference.trees import Ensemble
from training.demo import FEATURES, TARGET, load_flights

try:
    import lightgbm
    import xgboost
except ImportError:  # the lightgbm and xgboost extras
    lightgbm = xgboost = None


def trees_of(final: Any) -> list[Any]:
    """The tree models inside a final estimator (one, or one per calibration fold)."""
    inner = getattr(final, "calibrated_classifiers_", None)
    return [cc.estimator for cc in inner] if inner else [final]


def float32_walk(est: Any) -> CompiledTrees:
    """The same trees with float32 thresholds (the input is rounded by the caller)."""
    compiled = CompiledTrees([est])
    ens = Ensemble()
    found = _builder(est)
    assert found is not None
    member = found[0](est, ens, 0)
    ens.split = [float(np.float32(v)) for v in ens.split]
    compiled._session = ens.session(compiled.n_features, member.n_targets)
    return compiled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path(".bench-registry"))
    args = ap.parse_args()
    ensure_family_models(args.registry)
    reg = Registry(args.registry)
    frame = load_flights(range(1, 13))[FEATURES]
    rows = []
    for family in ("tree", "forest", "hgb"):
        name = f"flights-{family}"
        model = LoadedModel.load(reg, name, reg.resolve(name))
        x = np.asarray(model.pipeline[:-1].transform(frame), dtype=np.float64)
        for est in trees_of(model.final)[:1]:
            want = est.predict_proba(x)
            compiled = CompiledTrees.from_estimator(est)
            assert compiled is not None
            walk32 = float32_walk(est)
            x32 = x.astype(np.float32).astype(np.float64)
            for label, got in (
                ("compiled (float64)", compiled.predict_proba(x)),
                ("float32 walk", walk32.predict_proba(x32)),
            ):
                diff = np.abs(got - want).max(axis=1)
                flips = got.argmax(axis=1) != want.argmax(axis=1)
                rows.append(
                    [
                        family,
                        type(est).__name__,
                        label,
                        f"{len(x):,}",
                        f"{diff.max():.1e}",
                        f"{int((diff > 1e-6).sum()):,} ({(diff > 1e-6).mean():.3%})",
                        f"{int(flips.sum()):,}",
                    ]
                )
        print(f"{family} done", flush=True)
    if lightgbm is not None and xgboost is not None:
        hgb = LoadedModel.load(reg, "flights-hgb", reg.resolve("flights-hgb"))
        pre = hgb.pipeline[:-1]
        sample = pd.read_parquet(args.registry / "flights-sample.parquet")
        xs, ys = np.asarray(pre.transform(sample[FEATURES]), dtype=np.float64), sample[TARGET]
        x = np.asarray(pre.transform(frame), dtype=np.float64)
        for est in (
            lightgbm.LGBMClassifier(n_estimators=100, verbose=-1, random_state=0),
            xgboost.XGBClassifier(n_estimators=100, max_depth=6, random_state=0),
        ):
            est.fit(xs, ys)
            want = est.predict_proba(x).astype(np.float64)
            compiled = CompiledTrees.from_estimator(est)
            assert compiled is not None
            got = compiled.predict_proba(x)
            diff = np.abs(got - want).max(axis=1)
            flips = got.argmax(axis=1) != want.argmax(axis=1)
            rows.append(
                [
                    "imported",
                    type(est).__name__,
                    "compiled (float32)" if "XGB" in type(est).__name__ else "compiled (float64)",
                    f"{len(x):,}",
                    f"{diff.max():.1e}",
                    f"{int((diff > 1e-6).sum()):,} ({(diff > 1e-6).mean():.3%})",
                    f"{int(flips.sum()):,}",
                ]
            )
        print("lightgbm, xgboost done", flush=True)
    print()
    print(
        table(
            [
                "family",
                "trees",
                "walk",
                "rows",
                "max abs(Δp)",
                "rows with abs(Δp) > 1e-6",
                "rows with another class",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
