"""Native categorical splits against ordinal codes: gapminder RMSE; compiled against library time.

On plotly's gapminder (bench.quality's data set and split, seeds 0, 1, 2), servewatch's hgb,
lightgbm and xgboost pipelines (training/pipeline.py, the same preprocessing) with the category
codes split as numbers ("ordinal") or as categories ("native"):

- untuned: the family's default configuration (`default_params`), plus LightGBM native with
  small-group settings (min_data_per_group 5, cat_smooth 1: its defaults, 100 and 10, forbid
  groups of gapminder's ~10 rows a country);
- searched: `servewatch train` with that family only and `preprocessing.categorical_splits`
  fixed to the mode, a short budget (`--budget`); `--default-search FAMILY...`: the default
  (`search`: native and ordinal both searched) instead.

Then each model (seed 0) served compiled (service/inference/compiled.py; native: categorical
splits as BRANCH_MEMBER sets) against its library's own predict on the preprocessed test rows: equal
answers (largest difference), and CPU time per call of one row and of the whole test set, as a
ratio measured in one run (the machine is shared: CPU seconds, never wall clock).

    nice -n 10 python -m bench.native_categories [--budget 20] [--seeds 0 1 2] [--no-search]
        [--default-search FAMILY...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import table
from bench.quality import data_set, features, servewatch_config, split
from core.registry import Registry
from service.inference.compiled import CompiledTrees
from training.candidates import LIGHTGBM_SMALL_GROUPS, categories_space, default_params, model_space
from training.config import TrainConfig
from training.data import FeatureKinds
from training.selection import candidate_pipeline
from training.train import train_candidate

FAMILIES = ("hgb", "lightgbm", "xgboost")
SMALL_GROUPS = LIGHTGBM_SMALL_GROUPS


def _config(ds: Any, seed: int) -> TrainConfig:
    return TrainConfig.model_validate(
        {"name": "native", "data": "x.parquet", "target": ds.target, "task": ds.task, "seed": seed}
    )


def untuned(ds: Any, seed: int, family: str, mode: str, extra: dict[str, Any]) -> tuple[float, Any]:
    """Test RMSE of the family's default configuration with the codes split `mode`-wise."""
    train, test = split(ds, seed)
    x_tr, x_te = features(ds, train), features(ds, test)
    cats = list(ds.categorical or [])
    kinds = FeatureKinds(numeric=[c for c in x_tr.columns if c not in cats], categorical=cats,
                         datetime=[])  # fmt: skip
    config = _config(ds, seed)
    space = {**categories_space(family, config, len(cats)), **model_space(family, ds.task)}
    params = {**default_params(family, ds.task, space), "pre_categories": mode, **extra}
    pipe = candidate_pipeline(kinds, family, params, ds.task, config)
    pipe.fit(x_tr, train[ds.target])
    rmse = float(np.sqrt(np.mean((pipe.predict(x_te) - test[ds.target]) ** 2)))
    return rmse, (pipe, x_te)


def searched(ds: Any, seed: int, family: str, mode: str, budget: float) -> float:
    """Test RMSE of `servewatch train` searching one family, the codes split `mode`-wise
    (bench.quality's configuration otherwise)."""
    train, test = split(ds, seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "train.parquet"
        train.to_parquet(path)
        config = servewatch_config(
            ds, path, seed, budget, models=[family], preprocessing={"categorical_splits": mode}
        )
        candidate = train_candidate(config, Registry(work / "registry"))
        out = candidate.model.predict(test[features(ds, test).columns])
    params = candidate.manifest.body()["model"]["params"]
    print(f"  {family} {mode} seed {seed}: {params.get('pre_categories')}", flush=True)
    return float(np.sqrt(np.mean((out - test[ds.target]) ** 2)))


def cpu_per_call(fn: Any, x: Any, calls: int) -> float:
    """CPU seconds per call of fn(x), over `calls` calls."""
    fn(x)
    start = time.process_time()
    for _ in range(calls):
        fn(x)
    return (time.process_time() - start) / calls


def speed(pipe: Any, x_te: pd.DataFrame) -> list[str]:
    """Compiled against library: largest difference, CPU us per call of 1 row and of the set."""
    model = pipe.named_steps["model"]
    x = np.asarray(pipe[:-1].transform(x_te), dtype=np.float64)
    compiled = CompiledTrees.from_estimator(model)
    if compiled is None:
        return ["refused", "", "", ""]
    diff = float(np.max(np.abs(compiled.predict(x) - model.predict(x))))
    one = x[:1]
    lib1, comp1 = cpu_per_call(model.predict, one, 300), cpu_per_call(compiled.predict, one, 300)
    lib_n, comp_n = cpu_per_call(model.predict, x, 30), cpu_per_call(compiled.predict, x, 30)
    return [
        f"{diff:.1e}",
        f"{lib1 * 1e6:.0f} / {comp1 * 1e6:.0f} = {lib1 / comp1:.1f}x",
        f"{lib_n * 1e6:.0f} / {comp_n * 1e6:.0f} = {lib_n / comp_n:.1f}x",
        str(len(x)),
    ]


def _ms(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) + f" = {np.mean(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-search", action="store_true")
    ap.add_argument(
        "--default-search",
        nargs="+",
        metavar="FAMILY",
        help="only `servewatch train` of these families with categorical_splits: search",
    )
    args = ap.parse_args()
    ds = data_set("gapminder (plotly)")
    if args.default_search:
        for family in args.default_search:
            scores = [searched(ds, s, family, "search", args.budget) for s in args.seeds]
            print(f"{family} search (both): {_ms(scores)}", flush=True)
        return
    variants: list[tuple[str, str, dict[str, Any]]] = [
        (f, m, {}) for f in FAMILIES for m in ("ordinal", "native")
    ]
    variants.insert(3, ("lightgbm", "native", SMALL_GROUPS))
    rows, served = [], []
    for family, mode, extra in variants:
        found = [untuned(ds, s, family, mode, extra) for s in args.seeds]
        name = f"{family} {mode}" + (" (small groups)" if extra else "")
        cells = [name, _ms([r for r, _ in found])]
        if not args.no_search:
            cells.append("" if extra else _ms([searched(ds, s, family, mode, args.budget)
                                              for s in args.seeds]))  # fmt: skip
        rows.append(cells)
        served.append([name, *speed(*found[0][1])])
        print(cells, flush=True)
    head = ["variant", "untuned RMSE (seeds, mean)"]
    if not args.no_search:
        head.append(f"searched {args.budget:.0f} s RMSE")
    print(table(head, rows))
    print(table(["model (seed 0)", "max |diff|", "1 row: library / compiled us",
                 "test set: library / compiled us", "rows"], served))  # fmt: skip


if __name__ == "__main__":
    main()
