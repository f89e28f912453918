"""How exact the compiled trees are, and how often a float32 walk would move a row across a split.

On every flights row of 2013 (preprocessed by each model's own pipeline), the tree model's
scikit-learn answer against: the compiled model (service/compiled.py, float64) and the same trees
walked in float32 (thresholds and inputs rounded to float32, as skl2onnx's and most runtimes'
float32 tree ensembles do). Counts rows whose probability moves by more than 1e-6 (the answers'
rounding) and rows whose predicted class changes.

    python -m bench.tree_exactness [--registry .bench-registry]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ensure_family_models, table
from core.registry import Registry
from service.compiled import CompiledTrees, _builder, _Ensemble
from service.model import LoadedModel
from training.demo import FEATURES, load_flights


def trees_of(final: Any) -> list[Any]:
    """The tree models inside a final estimator (one, or one per calibration fold)."""
    inner = getattr(final, "calibrated_classifiers_", None)
    return [cc.estimator for cc in inner] if inner else [final]


def float32_walk(est: Any) -> CompiledTrees:
    """The same trees with float32 thresholds (the input is rounded by the caller)."""
    compiled = CompiledTrees([est])
    ens = _Ensemble()
    build = _builder(est)
    assert build is not None
    member = build(est, ens, 0)
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
        for est in trees_of(model._final)[:1]:
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
    print()
    print(
        table(
            [
                "family",
                "trees",
                "walk",
                "rows",
                "max |Δp|",
                "rows with |Δp| > 1e-6",
                "rows with another class",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
