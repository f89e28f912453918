"""Model quality (issue 19): servewatch against FLAML with the same search budget, and against
untuned defaults (HistGradientBoosting, RandomForest), on real data sets shipped inside installed
packages, over several seeds.

Each data set is split once by the benchmark (the last 20% in time for flights, a stratified
20% otherwise); every contender learns from the same training rows and is scored on the same test
rows. servewatch trains through `train_candidate` (its own validation split and small internal
test split come out of the training rows). FLAML runs in its own venv (.bench-venvs/flaml,
installed on first use) as a subprocess. Training is niced; figures are the test score's mean
+- sd over seeds, the wall-clock training time, and the model chosen.

    python -m bench.quality [--budget 20] [--seeds 0,1,2] [--only breast_cancer,diabetes]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import datasets as skdata
from sklearn.compose import make_column_transformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import threadpool_limits

from bench.common import ROOT, machine, table
from core import metrics as metric_contract
from core.registry import Registry
from training.config import TrainConfig
from training.demo import FEATURES, TARGET, TIME_COLUMN, load_flights
from training.train import train_candidate

VENV = ROOT / ".bench-venvs" / "flaml"
FLAML = ["flaml[automl]>=2.3,<3"]
RUNNER = ROOT / "bench" / "apps" / "flaml_run.py"
NOISE_SD = 1.0
"""A gap counts as noise when it is within this many standard errors of the difference of
means over seeds (and never below 0.002 of the metric, or 0.2% of an RMSE)."""


@dataclass
class DataSet:
    name: str
    frame: pd.DataFrame
    target: str
    task: str  # classification or regression
    metric: str  # servewatch's objective metric, also the test score
    flaml_metric: str
    time_column: str | None = None
    categorical: list[str] | None = None


def _sk(loader: Callable[..., Any], target: str = "target") -> pd.DataFrame:
    bunch = loader(as_frame=True)
    frame: pd.DataFrame = bunch.frame.rename(columns={"target": target})
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def datasets() -> list[DataSet]:
    """Classification (binary, multi-class) and regression, every one shipped in a package."""
    import statsmodels.api as sm  # its bundled data sets

    flights = load_flights((1, 2, 3, 4)).iloc[::8].reset_index(drop=True)  # ~14k rows
    cancer = _sk(skdata.load_breast_cancer, "malignant")
    digits = _sk(skdata.load_digits, "digit")
    diabetes = _sk(skdata.load_diabetes, "progression")
    fair = sm.datasets.fair.load_pandas().data
    fair["had_affair"] = (fair.pop("affairs") > 0).astype(int)
    randhie = sm.datasets.randhie.load_pandas().data.sample(6000, random_state=0)  # of 20k
    return [
        DataSet(
            "flights",
            flights[[*FEATURES, TIME_COLUMN, TARGET]],
            TARGET,
            "classification",
            "roc_auc",
            "roc_auc",
            TIME_COLUMN,
            ["carrier", "origin", "dest"],
        ),
        DataSet("breast_cancer", cancer, "malignant", "classification", "roc_auc", "roc_auc"),
        DataSet("fair (statsmodels)", fair, "had_affair", "classification", "roc_auc", "roc_auc"),
        DataSet("digits", digits, "digit", "classification", "accuracy", "accuracy"),
        DataSet("diabetes", diabetes, "progression", "regression", "rmse", "rmse"),
        DataSet("randhie (statsmodels)", randhie, "mdvis", "regression", "rmse", "rmse"),
    ]


def split(ds: DataSet, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmark's own train/test split: the last 20% in time, or a (stratified) 20%."""
    if ds.time_column:
        cut = int(len(ds.frame) * 0.8)
        return ds.frame.iloc[:cut].copy(), ds.frame.iloc[cut:].copy()
    strat = ds.frame[ds.target] if ds.task == "classification" else None
    train, test = train_test_split(ds.frame, test_size=0.2, random_state=seed, stratify=strat)
    return train.copy(), test.copy()


def score(ds: DataSet, y: pd.Series, out: np.ndarray[Any, Any], classes: list[Any]) -> float:
    if ds.task == "classification":
        return metric_contract.classification_metrics(y, out, classes)[ds.metric]
    return metric_contract.regression_metrics(y, out)[ds.metric]


def features(ds: DataSet, frame: pd.DataFrame) -> pd.DataFrame:
    drop = [ds.target, *([ds.time_column] if ds.time_column else [])]
    return frame.drop(columns=drop)


# --- contenders -------------------------------------------------------------------------------
def run_servewatch(
    ds: DataSet,
    train: pd.DataFrame,
    test: pd.DataFrame,
    seed: int,
    budget: float,
    work: Path,
    search: dict[str, Any] | None = None,
) -> tuple[float, float, str]:
    path = work / "train.parquet"
    train.to_parquet(path)
    config = TrainConfig.model_validate(
        {
            "name": "quality",
            "data": str(path),
            "target": ds.target,
            "task": ds.task,
            "time_column": ds.time_column,
            "seed": seed,
            "objective": {"metric": ds.metric},
            "features": {"categorical": ds.categorical} if ds.categorical else {},
            "split": {"test_size": 0.05},
            # the benchmark holds its data sets as they ship (flights' wind_gust: 2/3 missing)
            "quality": {"fail_on": ["single_class", "target_missing", "min_rows"]},
            # the run's budget (issue 32): the search draws trials until it is spent
            "search": {"budget_seconds": budget, **(search or {})},
            # quality alone: what the trainer reaches, ensembles however slow they serve (the
            # default, ensemble.max_row_ms 10, refuses those whose members take longer a row)
            "ensemble": {"max_row_ms": None},
        }
    )
    started = time.monotonic()
    candidate = train_candidate(config, Registry(work / "registry"))
    seconds = time.monotonic() - started
    model = candidate.model
    x_test = test[candidate.prepared.features]
    if ds.task == "classification":
        y = test[ds.target].astype(str)
        out = model.predict_proba(x_test)
        classes = [str(c) for c in model.classes_]
    else:
        y, out, classes = test[ds.target], model.predict(x_test), []
    manifest = candidate.manifest["model"]
    chosen = str(manifest["family"])
    if chosen == "ensemble":
        chosen = f"{manifest['ensemble']['method']}({'+'.join(manifest['ensemble']['members'])})"
    return score(ds, y, out, classes), seconds, chosen


def run_default(
    ds: DataSet, train: pd.DataFrame, test: pd.DataFrame, seed: int, family: str
) -> tuple[float, float, str]:
    """An untuned scikit-learn model: categories ordinal-encoded (HGB: as native categories)."""
    x_tr, x_te = features(ds, train), features(ds, test)
    cats = [c for c in x_tr.columns if x_tr[c].dtype == object]
    clf = ds.task == "classification"
    if family == "hgb":
        for c in cats:
            x_tr[c] = x_tr[c].astype("category")
            x_te[c] = pd.Categorical(x_te[c], categories=x_tr[c].cat.categories)
        model: Any = (HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor)(
            random_state=seed
        )
    else:
        encode = make_column_transformer(
            (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), cats),
            remainder=SimpleImputer(strategy="median"),
        )
        forest = RandomForestClassifier if clf else RandomForestRegressor
        model = make_pipeline(encode, forest(n_jobs=-1, random_state=seed))
    y_tr = train[ds.target].astype(str) if clf else train[ds.target]
    started = time.monotonic()
    model.fit(x_tr, y_tr)
    seconds = time.monotonic() - started
    if clf:
        out = model.predict_proba(x_te)
        return score(ds, test[ds.target].astype(str), out, list(model.classes_)), seconds, family
    return score(ds, test[ds.target], model.predict(x_te), []), seconds, family


def flaml_python() -> tuple[Path | None, str]:
    """FLAML's venv python, installed on first use; (None, reason) when it cannot be."""
    py = VENV / "bin" / "python"
    if py.exists():
        return py, "installed"
    from sklearn import __version__ as sklearn_version

    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *FLAML, f"scikit-learn=={sklearn_version}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(VENV, ignore_errors=True)
        return None, f"install failed: {exc}"
    return py, "installed now"


def run_flaml(
    py: Path,
    ds: DataSet,
    train: pd.DataFrame,
    test: pd.DataFrame,
    seed: int,
    budget: float,
    work: Path,
) -> tuple[float, float, str]:
    tr, te, out_csv = work / "flaml_train.csv", work / "flaml_test.csv", work / "flaml_out.csv"
    cols = [*features(ds, train).columns, ds.target]
    train[cols].to_csv(tr, index=False)
    test[cols].to_csv(te, index=False)
    started = time.monotonic()
    res = subprocess.run(
        ["nice", "-n", "19", str(py), str(RUNNER), str(tr), str(te), ds.target, ds.task,
         ds.flaml_metric, str(budget), str(seed), str(out_csv)],
        capture_output=True, text=True, timeout=budget * 10 + 300, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if res.returncode != 0:
        raise RuntimeError(f"FLAML failed: {res.stderr.strip().splitlines()[-1:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    out = pd.read_csv(out_csv)
    if ds.task == "classification":
        return (
            score(ds, test[ds.target].astype(str), out.to_numpy(), list(out.columns)),
            seconds,
            str(info["best"]),
        )
    return score(ds, test[ds.target], out["value"].to_numpy(), []), seconds, str(info["best"])


def run_one(
    name: str,
    ds: DataSet,
    train: pd.DataFrame,
    test: pd.DataFrame,
    seed: int,
    budget: float,
    work: Path,
    py: Path | None,
    search: dict[str, Any] | None = None,
) -> tuple[float, float, str]:
    """(test score, training seconds, model chosen) of one contender on one seed; `search`:
    servewatch's extra `search.*` settings."""
    if name == "servewatch":
        return run_servewatch(ds, train, test, seed, budget, work, search)
    if name == "FLAML" and py is not None:
        return run_flaml(py, ds, train, test, seed, budget, work)
    return run_default(ds, train, test, seed, "hgb" if name.startswith("HGB") else "forest")


# --- the table --------------------------------------------------------------------------------
def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def verdict(ds: DataSet, ours: list[float], theirs: list[float]) -> str:
    """'>=' when servewatch's mean is at least theirs, '~' when behind within noise, else '<'."""
    judge = metric_contract.get(ds.metric)
    a, b = statistics.mean(ours), statistics.mean(theirs)
    behind = judge.worse_by(b, a)  # > 0: servewatch worse (a share of b for rmse)
    if behind <= 0:
        return ">="
    n = min(len(ours), len(theirs))
    se = (
        np.sqrt((np.var(ours, ddof=1) + np.var(theirs, ddof=1)) / n) if n > 1 else 0.0
    )  # standard error of the difference of means over seeds
    if judge.relative:
        se = se / abs(b) if b else se
    floor = 0.002
    return "~ (noise)" if behind <= max(NOISE_SD * float(se), floor) else f"< by {behind:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=20.0, help="search seconds, both sides")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default="", help="comma-separated data set names")
    parser.add_argument(
        "--contenders",
        default="servewatch,FLAML,HGB default,forest default",
        help="comma-separated, of: servewatch, FLAML, HGB default, forest default",
    )
    parser.add_argument(
        "--search",
        default="{}",
        help="servewatch's extra search settings as JSON, e.g. '{\"max_rows\": 1000}'",
    )
    args = parser.parse_args()
    search = json.loads(args.search)
    seeds = [int(s) for s in args.seeds.split(",")]
    os.nice(19)
    # One OpenMP thread per contender (HGB, LightGBM, XGBoost): on a shared 2-core machine
    # OpenMP's spinning threads cost several times the work itself.
    threadpool_limits(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # FLAML's subprocess
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    py, how = flaml_python() if "FLAML" in contenders else (None, "not run")
    print(
        f"machine: {machine()}; FLAML venv: {how}; budget {args.budget:g} s; seeds {seeds}; "
        f"servewatch search {search or 'defaults'}"
    )
    rows, verdicts = [], []
    for ds in datasets():
        if args.only and not any(ds.name.startswith(o) for o in args.only.split(",")):
            continue
        scores: dict[str, list[float]] = {c: [] for c in contenders}
        times: dict[str, list[float]] = {c: [] for c in contenders}
        chosen: dict[str, list[str]] = {c: [] for c in contenders}
        for seed in seeds:
            train, test = split(ds, seed)
            with tempfile.TemporaryDirectory(prefix="sw-quality-") as tmp:
                work = Path(tmp)
                for name in contenders:
                    if name == "FLAML" and py is None:
                        continue
                    try:
                        s, t, m = run_one(
                            name, ds, train, test, seed, args.budget, work, py, search
                        )
                    except Exception as exc:  # one contender failing leaves the others
                        print(f"{ds.name} seed {seed} {name}: {type(exc).__name__}: {exc}")
                        continue
                    scores[name].append(s)
                    times[name].append(t)
                    chosen[name].append(m)
                    print(f"{ds.name} seed {seed} {name}: {ds.metric} {s:.4f} ({t:.1f} s, {m})")
        for name in contenders:
            if scores[name]:
                rows.append(
                    [
                        ds.name,
                        f"{len(ds.frame)} rows, {ds.task}",
                        name,
                        f"{ds.metric} {_ms(scores[name])}",
                        f"{statistics.mean(times[name]):.1f}",
                        ", ".join(sorted(set(chosen[name]))),
                    ]
                )
        ours = scores.get("servewatch", [])
        if ours:
            v = [ds.name]
            for other in ("HGB default", "FLAML"):
                theirs = scores.get(other, [])
                v.append(verdict(ds, ours, theirs) if theirs else "-")
            verdicts.append(v)
    print()
    print(table(["data set", "rows", "contender", "test score", "train s", "model"], rows))
    print()
    print("Goal 1: servewatch's mean test score against each (>= met; ~ within noise; < unmet)")
    print(table(["data set", "vs HGB default", "vs FLAML"], verdicts))


if __name__ == "__main__":
    main()
