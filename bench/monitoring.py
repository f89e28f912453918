"""Monitoring benchmark: a run over 10k, 100k and 1M logged rows vs Evidently alone on all rows.

Each measurement runs in its own process so its peak memory (max RSS) is its own.

    python -m bench.monitoring [--registry registry] [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ensure_demo_model, machine, table


def fill(db_url: str, registry: Path, rows: int) -> None:
    """Log `rows` predictions of flights from later months, as the service would."""
    import numpy as np

    from service.model import LoadedModel
    from service.store import PredictionStore
    from training.demo import FEATURES, load_flights
    from training.registry import Registry

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
        store.record(model, chunk, start=now + start * 1e-4)


def child(kind: str, db_url: str, registry: str, reports: str) -> None:
    """Run in a subprocess: one monitoring run, or Evidently alone on every logged row."""
    from monitoring.config import MonitorSettings
    from service.store import PredictionStore

    started = time.perf_counter()
    store = PredictionStore(db_url)
    if kind == "servewatch":
        from monitoring.runner import run_monitoring

        settings = MonitorSettings(
            registry=Path(registry), database_url=db_url, monitor_reports_dir=Path(reports)
        )
        summary = run_monitoring(
            settings=settings, store=store, model="flights", since=0.0, notifiers=[]
        )
        rows = summary["rows"]
    else:
        import orjson
        import pandas as pd

        from monitoring.drift import run_drift
        from training.registry import REFERENCE_FILE, Registry

        reg = Registry(registry)
        version = reg.resolve("flights")
        manifest = reg.manifest("flights", version)
        reference = pd.read_parquet(reg.path("flights", version) / REFERENCE_FILE)
        logged = store.read_window("flights")
        current = pd.DataFrame.from_records([orjson.loads(r["inputs"]) for r in logged])
        numeric = [f.name for f in manifest.features if f.kind == "numeric"]
        categorical = [f.name for f in manifest.features if f.kind == "categorical"]
        for col in numeric:
            current[col] = pd.to_numeric(current[col], errors="coerce")
        run_drift(
            reference,
            current,
            numeric=numeric,
            categorical=categorical,
            html_path=Path(reports) / "full.html",
        )
        rows = len(current)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "rows": rows}))


def measure(kind: str, db_url: str, registry: Path, reports: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.monitoring",
            "--child",
            kind,
            db_url,
            str(registry),
            str(reports),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    ensure_demo_model(args.registry)
    import pandas as pd

    from training.registry import REFERENCE_FILE, Registry

    reg = Registry(args.registry)
    ref_rows = len(pd.read_parquet(reg.path("flights", reg.resolve("flights")) / REFERENCE_FILE))
    print(f"machine: {machine()}; reference rows {ref_rows}; servewatch window cap 50,000")
    rows_out = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/log.db"
            t = time.perf_counter()
            fill(db, args.registry, size)
            fill_s = time.perf_counter() - t
            sw = measure("servewatch", db, args.registry, Path(tmp))
            ev = measure("evidently", db, args.registry, Path(tmp))
            rows_out.append(
                [
                    f"{size:,}",
                    f"{fill_s:.0f}",
                    f"{sw['rows']:,}",
                    f"{sw['seconds']:.1f}",
                    f"{sw['peak_mb']:.0f}",
                    f"{ev['seconds']:.1f}",
                    f"{ev['peak_mb']:.0f}",
                    f"{sw['seconds'] / ev['seconds']:.2f}",
                ]
            )
            print(rows_out[-1], flush=True)
    print()
    print(
        table(
            [
                "logged rows",
                "fill s",
                "rows judged",
                "servewatch run s",
                "servewatch peak MB",
                "Evidently alone s",
                "Evidently alone peak MB",
                "time ratio",
            ],
            rows_out,
        )
    )


if __name__ == "__main__":
    main()
