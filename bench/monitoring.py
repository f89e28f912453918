"""Monitoring benchmark: a run over 10k, 100k and 1M logged rows vs Evidently alone.

For each log size, three measurements, each in its own process so its peak memory (max RSS) is
its own, repeated `--repeat` times in turn (medians reported):

- servewatch: one `run_monitoring` (drift, quality, performance, explanation drift, alerts,
  stored), timed per phase;
- Evidently alone on every logged row (read from the same log and parsed);
- Evidently alone on the rows servewatch's run judged: the window read by
  `monitoring.window.read_window` with the same cap, so over the cap the same sample (checked by a
  fingerprint of the rows).

    python -m bench.monitoring [--registry registry] [--sizes 10000 100000 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ensure_demo_model, load_average, machine, table

KINDS = ("servewatch", "evidently-all", "evidently-sample")
LABELS = {
    "servewatch": "servewatch monitoring run",
    "evidently-all": "Evidently alone, every logged row",
    "evidently-sample": "Evidently alone, servewatch's sample",
}
# (key, label, nested): nested phases are part of the phase above them, not added to the total
PHASES = [
    ("imports", "import monitoring.runner (pandas, scikit-learn, ...)", False),
    ("read_window", "read the window (SQL, sampled over the cap; JSON parsed)", False),
    ("frame", "typed frame of the window", False),
    ("drift", "data and prediction drift (Evidently, HTML report)", False),
    ("evidently_import", "of which importing Evidently", True),
    ("quality", "data quality", False),
    ("performance", "performance (realised and estimated)", False),
    ("canary_shadow", "canary and shadow", False),
    ("explanation_drift", "explanation drift (2 x 300 rows explained)", False),
    ("model_load", "of which loading and verifying the model", True),
    ("alerts", "alert rules and notifiers", False),
    ("store", "monitor store (schema, states, run saved, pruned)", False),
    ("other", "the rest (reference parquet, summary, report folder)", False),
]


def fill(db_url: str, registry: Path, rows: int) -> None:
    """Log `rows` predictions of flights from later months, as the service would."""
    import numpy as np

    from core.registry import Registry
    from predlog.backfill import backfill
    from predlog.store import PredictionStore
    from service.inference.model import LoadedModel
    from training.demo import FEATURES, load_flights

    model = LoadedModel.load(Registry(registry), "flights", Registry(registry).resolve("flights"))
    source = load_flights(months=range(5, 13))[FEATURES]
    source = source.astype(object).where(source.notna(), None)
    store = PredictionStore(db_url)
    store.create_schema()
    rng = np.random.default_rng(0)
    now = time.time() - 3600
    for start in range(0, rows, 20_000):
        n = min(20_000, rows - start)
        chunk = source.iloc[rng.integers(0, len(source), n)].to_dict(orient="records")
        backfill(store, model, chunk, start=now + start * 1e-4)


def _fingerprint(frame: Any) -> str:
    """Which rows, in which order: equal for two reads of the same sample."""
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:12]


def _timed(acc: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t

    return wrapper


def _servewatch(db_url: str, registry: str, reports: str, acc: dict[str, float]) -> Any:
    """One monitoring run with its phases timed into `acc`; returns (summary, window)."""
    t = time.perf_counter()
    import monitoring.runner as runner

    acc["imports"] = time.perf_counter() - t
    from monitoring import alerts
    from monitoring.config import MonitorSettings
    from monitoring.store import MonitorStore
    from predlog.store import PredictionStore
    from service.inference.model import LoadedModel

    windows: list[Any] = []
    read_window = runner.read_window

    def first_window(*args: Any, **kwargs: Any) -> Any:
        windows.append(read_window(*args, **kwargs))
        return windows[-1]

    drift = runner._drift

    def drift_with_import(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        import evidently  # noqa: F401  (what run_drift imports first)
        import evidently.presets  # noqa: F401

        acc["evidently_import"] = time.perf_counter() - t
        return drift(*args, **kwargs)

    runner.read_window = _timed(acc, "read_window", first_window)  # type: ignore[assignment]
    runner._current_frame = _timed(acc, "frame", runner._current_frame)  # type: ignore[assignment]
    runner._drift = _timed(acc, "drift", drift_with_import)  # type: ignore[assignment]
    runner._quality = _timed(acc, "quality", runner._quality)  # type: ignore[assignment]
    runner._performance = _timed(acc, "performance", runner._performance)  # type: ignore[assignment]
    runner._canary = _timed(acc, "canary_shadow", runner._canary)  # type: ignore[assignment]
    runner.read_shadow = _timed(acc, "canary_shadow", runner.read_shadow)  # type: ignore[assignment]
    runner._explanation_drift = _timed(  # type: ignore[assignment]
        acc, "explanation_drift", runner._explanation_drift
    )
    load = LoadedModel.__dict__["load"].__func__
    LoadedModel.load = classmethod(_timed(acc, "model_load", load))  # type: ignore[method-assign,assignment]
    alerts.evaluate = _timed(acc, "alerts", alerts.evaluate)  # type: ignore[assignment]
    alerts.notify_all = _timed(acc, "alerts", alerts.notify_all)  # type: ignore[assignment]
    for name in ("create_schema", "latest", "alert_states", "save_run", "prune"):
        setattr(MonitorStore, name, _timed(acc, "store", getattr(MonitorStore, name)))

    settings = MonitorSettings(
        registry=Path(registry), database_url=db_url, monitor_reports_dir=Path(reports)
    )
    summary = runner.run_monitoring(
        settings=settings,
        store=PredictionStore(db_url),
        model="flights",
        since=0.0,
        notifiers=[],
    )
    return summary, windows[0]


def child(kind: str, db_url: str, registry: str, reports: str) -> None:
    """Run in a subprocess: one monitoring run, or Evidently alone on all rows or the sample."""
    from monitoring.config import MonitorSettings
    from predlog.store import PredictionStore

    phases: dict[str, float] = {}
    started = time.perf_counter()
    if kind == "servewatch":
        summary, window = _servewatch(db_url, registry, reports, phases)
        rows, sampled = summary["rows"], window.inputs
    else:
        import pandas as pd

        from core.registry import REFERENCE_FILE, Registry
        from monitoring.drift import run_drift
        from monitoring.window import read_window

        reg = Registry(registry)
        version = reg.resolve("flights")
        manifest = reg.manifest("flights", version)
        reference = pd.read_parquet(reg.path("flights", version) / REFERENCE_FILE)
        store = PredictionStore(db_url)
        if kind == "evidently-all":
            import orjson

            logged = store.read_window("flights")
            current = pd.DataFrame.from_records([orjson.loads(r["inputs"]) for r in logged])
            sampled = None
        else:  # the rows servewatch's run reads: same query, same cap, same window end
            settings = MonitorSettings(registry=Path(registry), database_url=db_url)
            current = read_window(
                store,
                model="flights",
                version=version,
                since=0.0,
                last=None,
                cap=settings.monitor_max_rows,
                classes=None,
                until=time.time() - settings.monitor_settle_s,
            ).inputs
            sampled = current.copy()
        numeric = [f.name for f in manifest.features if f.kind == "numeric"]
        categorical = [f.name for f in manifest.features if f.kind == "categorical"]
        for col in numeric:
            current[col] = pd.to_numeric(current[col], errors="coerce")
        run_drift(
            reference,
            current,
            numeric=numeric,
            categorical=categorical,
            html_path=Path(reports) / f"{kind}.html",
        )
        rows = len(current)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if phases:
        top = [k for k, _label, nested in PHASES if not nested and k != "other"]
        phases["other"] = seconds - sum(phases.get(k, 0.0) for k in top)
    out = {
        "seconds": seconds,
        "peak_mb": peak_mb,
        "rows": rows,
        "sample": _fingerprint(sampled) if sampled is not None else None,
        "phases": phases,
    }
    print(json.dumps(out))


def measure(kind: str, db_url: str, registry: Path, reports: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.monitoring", "--child", kind, db_url]
    out = subprocess.run(
        [*cmd, str(registry), str(reports)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{kind} failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (its phases add up), with the median peak memory."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["peak_mb"] = statistics.median(r["peak_mb"] for r in runs)
    mid["all_seconds"] = [r["seconds"] for r in runs]
    return mid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    ensure_demo_model(args.registry)
    import pandas as pd

    from core.registry import REFERENCE_FILE, Registry
    from monitoring.config import MonitorSettings

    reg = Registry(args.registry)
    version = reg.resolve("flights")
    ref_rows = len(pd.read_parquet(reg.path("flights", version) / REFERENCE_FILE))
    settings = MonitorSettings()
    print(
        f"machine: {machine()}; model flights v{version}, reference rows {ref_rows}; "
        f"window cap {settings.monitor_max_rows:,}; median of {args.repeat}; "
        f"load average {load_average()}",
        flush=True,
    )
    results: dict[int, dict[str, dict[str, Any]]] = {}
    fills: dict[int, float] = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/log.db"
            t = time.perf_counter()
            fill(db, args.registry, size)
            fills[size] = time.perf_counter() - t
            time.sleep(settings.monitor_settle_s + 1)  # every row inside the run's window
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
            for i in range(args.repeat):
                for kind in KINDS[i % 3 :] + KINDS[: i % 3]:  # each kind first once in 3
                    runs[kind].append(measure(kind, db, args.registry, Path(tmp)))
            results[size] = {k: _median_run(v) for k, v in runs.items()}
            sw, sample = runs["servewatch"], runs["evidently-sample"]
            prints = {r["sample"] for r in sw + sample}
            if len(prints) != 1:
                raise SystemExit(f"{size:,} rows: Evidently's sample differs from servewatch's")
            summary = ", ".join(
                f"{k} {[round(s, 1) for s in r['all_seconds']]} s {r['peak_mb']:.0f} MB"
                for k, r in results[size].items()
            )
            print(
                f"{size:,} logged (fill {fills[size]:.0f} s): {summary}; same sample "
                f"{prints.pop()}; load average {load_average()}",
                flush=True,
            )
    print()
    rows_out = []
    for size, res in results.items():
        sw = res["servewatch"]
        for kind in KINDS:
            r = res[kind]
            rows_out.append(
                [
                    f"{size:,}",
                    LABELS[kind],
                    f"{r['rows']:,}",
                    f"{r['seconds']:.1f}",
                    f"{r['peak_mb']:,.0f}",
                    f"{sw['seconds'] / r['seconds']:.2f}",
                    f"{sw['peak_mb'] / r['peak_mb']:.2f}",
                ]
            )
    print(
        table(
            [
                "logged rows",
                "run",
                "rows judged",
                "seconds",
                "peak MB",
                "servewatch time ÷ this",
                "servewatch peak ÷ this",
            ],
            rows_out,
        )
    )
    print()
    phase_rows = []
    for key, label, nested in PHASES:
        cells = [f"  {label}" if nested else label]
        for size in results:
            ph = results[size]["servewatch"]["phases"]
            total = results[size]["servewatch"]["seconds"]
            value = ph.get(key, 0.0)
            cells.append(f"{value:.2f} ({value / total:.0%})")
        phase_rows.append(cells)
    phase_rows.append(
        ["whole run"] + [f"{results[s]['servewatch']['seconds']:.2f} (100%)" for s in results]
    )
    print(
        table(["servewatch run, phase", *[f"{s:,} logged: s (share)" for s in results]], phase_rows)
    )
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
