"""Monitoring a fleet of models: one `monitor run --all` process against 2 shards at once.

`--models` small models (copies of one classifier, each its own name and its own `--rows`
logged predictions) on a PostgreSQL log. Each mode starts from the same state (monitoring's
tables emptied) and runs `servewatch monitor run --all --slot 1h` as the CronJob's pods would:
one process; 2 processes with `--shard 0/2` and `--shard 1/2`; the same 2 plus an overlapping
third on shard 0 (a retried pod). Each mode counts the runs recorded per model.

    python -m bench.fleet [--models 50] [--rows 150] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from bench.common import load_average, machine, table

SCHEMA = "bench_fleet"
MODES: dict[str, list[str | None]] = {
    "one process (--all)": [None],
    "2 shards (--shard 0/2, 1/2)": ["0/2", "1/2"],
    "2 shards + an overlapping pod on 0/2": ["0/2", "1/2", "0/2"],
}
TABLES = ("sw_monitor_runs", "sw_monitor_cursors", "sw_monitor_alerts", "sw_monitor_slots")


def build(url: str, registry: Path, models: int, rows: int) -> list[str]:
    """Train one small classifier and copy it `models` times, each with its own logged rows."""
    from core.registry import Registry
    from predlog.backfill import backfill
    from predlog.store import PredictionStore
    from service.inference.model import LoadedModel
    from tests.data import classification_frame
    from training.config import TrainConfig
    from training.train import run_training

    data = registry.parent / "train.csv"
    classification_frame(400).to_csv(data, index=False)
    cfg = TrainConfig.model_validate(
        {
            "name": "base",
            "data": str(data),
            "target": "label",
            "models": ["linear"],
            "search": {"trials": 1, "budget_seconds": 10},
            "ensemble": {"enabled": False},
            "reference_rows": 200,
        }
    )
    run_training(cfg, Registry(registry))
    store = PredictionStore(url)
    store.create_schema()
    names = [f"model-{i:03d}" for i in range(models)]
    features = ["x1", "x2", "color", "group", "when"]
    for i, name in enumerate(names):
        shutil.copytree(registry / "base", registry / name)
        manifest = registry / name / "1" / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": name}))
        frame = classification_frame(rows, seed=i + 1)
        frame["when"] = frame["when"].dt.strftime("%Y-%m-%dT%H:%M:%S")
        records = frame[features].astype(object).where(frame[features].notna(), None)
        model = LoadedModel.load(Registry(registry), name, 1)
        backfill(store, model, records.to_dict(orient="records"), start=time.time() - 600)
    shutil.rmtree(registry / "base")
    return names


def run_mode(shards: list[str | None], env: dict[str, str]) -> float:
    """The pods of one mode started together; the wall time until the last one ends."""
    t0 = time.perf_counter()
    procs = []
    for shard in shards:
        args = [sys.executable, "-m", "servewatch", "monitor", "run", "--all", "--slot", "1h"]
        procs.append(
            subprocess.Popen(
                [*args, *(["--shard", shard] if shard else [])],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    codes = [p.wait() for p in procs]
    assert codes == [0] * len(codes), codes
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rows", type=int, default=150)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    admin = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    url = f"{args.url}?options=-csearch_path%3D{SCHEMA}"
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-fleet-"))
    results: list[tuple[str, int, float, int, int, int]] = []
    try:
        names = build(url, tmp / "registry", args.models, args.rows)
        env = {
            **os.environ,
            "SERVEWATCH_REGISTRY": str(tmp / "registry"),
            "SERVEWATCH_DATABASE_URL": url,
            "SERVEWATCH_MONITOR_REPORTS_DIR": str(tmp / "reports"),
            "SERVEWATCH_MONITOR_SETTLE_S": "0",
        }
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        for mode, shards in MODES.items():
            with engine.begin() as conn:
                for t in TABLES:
                    if sa.inspect(conn).has_table(t):
                        conn.execute(sa.text(f"DELETE FROM {t}"))
            seconds = run_mode(shards, env)
            with engine.connect() as conn:
                runs = Counter(
                    conn.execute(sa.text("SELECT model FROM sw_monitor_runs")).scalars().all()
                )
            twice = sum(1 for n in runs.values() if n > 1)
            missed = sum(1 for n in names if runs[n] == 0)
            results.append((mode, len(shards), seconds, sum(runs.values()), twice, missed))
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        shutil.rmtree(tmp)
    print(f"\n{machine()}; load {load_average()}")
    print(f"{args.models} models, {args.rows} logged rows each, PostgreSQL log\n")
    base = results[0][2]
    print(
        table(
            ["mode", "processes", "wall s", "vs one", "runs", "models run twice", "missed"],
            [[m, p, f"{s:.1f}", f"{base / s:.2f}x", r, t, x] for m, p, s, r, t, x in results],
        )
    )


if __name__ == "__main__":
    main()
