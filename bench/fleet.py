"""Monitoring a fleet of models: one `monitor run --all` process against 2 shards at once.

`--models` small models (copies of one classifier, each its own name and its own `--rows`
logged predictions) on a PostgreSQL log. Each mode starts from the same state (monitoring's
tables emptied, a reports folder and an Evidently workspace of its own, the workspace holding
`--history` earlier runs of each model) and runs `servewatch monitor run --all --slot 1h` as
the CronJob's pods would: one process; 2 processes with `--shard 0/2` and `--shard 1/2`; the
same 2 plus an overlapping third on shard 0 (a retried pod). Each mode counts the runs recorded
per model, and the CPU time (user + system, from each process's rusage: the load of other work
does not inflate it) its processes used per model run, start-up included.

`--baseline REF` runs every mode from REF's source too (a temporary `git worktree`), alternating
which tree goes first, on the same models and state.

    python -m bench.fleet [--models 50] [--rows 150] [--history 0] [--modes one,two,overlap]
                          [--baseline REF] [--url postgresql://...]
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
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from bench.against import checkout
from bench.common import ROOT, load_average, machine, table

SCHEMA = f"bench_fleet_{os.getpid()}"
MODES: dict[str, tuple[str, list[str | None]]] = {
    "one": ("one process (--all)", [None]),
    "two": ("2 shards (--shard 0/2, 1/2)", ["0/2", "1/2"]),
    "overlap": ("2 shards + an overlapping pod on 0/2", ["0/2", "1/2", "0/2"]),
}


@dataclass
class Result:
    """One mode's run from one tree."""

    tree: str
    mode: str
    processes: int
    seconds: float
    cpu: float
    runs: int
    twice: int
    missed: int


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


def run_mode(shards: list[str | None], env: dict[str, str], src: Path) -> tuple[float, float]:
    """The pods of one mode started together (from the source in `src`): the wall time until the
    last one ends, and the CPU seconds they used together."""
    t0 = time.perf_counter()
    procs = []
    for shard in shards:
        args = [sys.executable, "-m", "servewatch", "monitor", "run", "--all", "--slot", "1h"]
        procs.append(
            subprocess.Popen(
                [*args, *(["--shard", shard] if shard else [])],
                env={**env, "PYTHONPATH": str(src)},
                cwd=src,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    cpu, codes = 0.0, []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        codes.append(p.returncode)
        cpu += usage.ru_utime + usage.ru_stime
    assert codes == [0] * len(codes), codes
    return time.perf_counter() - t0, cpu


def reset(engine: sa.Engine) -> None:
    """Monitoring's tables emptied: every model unmonitored, every cursor at the start."""
    with engine.begin() as conn:
        for t in TABLES:
            if sa.inspect(conn).has_table(t):
                conn.execute(sa.text(f"DELETE FROM {t}"))


def seed_history(template: Path, history: int) -> None:
    """Each project of the workspace `template` (one snapshot a model, from a first run) given
    `history` snapshots: copies of its own under new ids."""
    for folder in template.glob("*/snapshots"):
        first = next(folder.glob("*.json"))
        for _ in range(history - 1):
            shutil.copyfile(first, folder / f"{uuid.uuid4()}.json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rows", type=int, default=150)
    parser.add_argument("--history", type=int, default=0, help="earlier runs in the workspace")
    parser.add_argument("--modes", default="one,two,overlap")
    parser.add_argument("--baseline", default=None, help="a git ref run beside this tree")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    admin = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    url = f"{args.url}?options=-csearch_path%3D{SCHEMA}"
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-fleet-"))
    trees: list[tuple[str, Path]] = [("this tree", ROOT)]
    worktrees: list[Path] = []
    if args.baseline:
        sha, path = checkout(args.baseline, worktrees)
        trees.append((sha, path))
    results: list[Result] = []
    try:
        names = build(url, tmp / "registry", args.models, args.rows)
        env = {
            **os.environ,
            "SERVEWATCH_REGISTRY": str(tmp / "registry"),
            "SERVEWATCH_DATABASE_URL": url,
            "SERVEWATCH_MONITOR_SETTLE_S": "0",
        }
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        template = tmp / "workspace"
        if args.history > 0:  # a first run gives each model's project and a snapshot to copy
            reset(engine)
            run_mode([None], {**env, **state_env(tmp, "seed", template)}, ROOT)
            seed_history(template, args.history)
        for i, mode in enumerate(args.modes.split(",")):
            label, shards = MODES[mode]
            order = trees if i % 2 == 0 else trees[::-1]
            for tree, src in order:
                reset(engine)
                ws = tmp / "ws" / f"{mode}-{len(results)}"
                if template.exists():
                    shutil.copytree(template, ws)
                seconds, cpu = run_mode(shards, {**env, **state_env(tmp, ws.name, ws)}, src)
                runs, twice, missed = count_runs(engine, names)
                results.append(Result(tree, label, len(shards), seconds, cpu, runs, twice, missed))
                shutil.rmtree(ws, ignore_errors=True)
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        shutil.rmtree(tmp)
        for path in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT)
    report(args, results)


def state_env(tmp: Path, name: str, workspace: Path) -> dict[str, str]:
    """A mode's own reports folder and Evidently workspace."""
    return {
        "SERVEWATCH_MONITOR_REPORTS_DIR": str(tmp / "reports" / name),
        "SERVEWATCH_EVIDENTLY_WORKSPACE": str(workspace),
    }


def count_runs(engine: sa.Engine, names: list[str]) -> tuple[int, int, int]:
    """Runs recorded, models run twice, models missed."""
    with engine.connect() as conn:
        runs = Counter(conn.execute(sa.text("SELECT model FROM sw_monitor_runs")).scalars().all())
    twice = sum(1 for n in runs.values() if n > 1)
    return sum(runs.values()), twice, sum(1 for n in names if runs[n] == 0)


def report(args: argparse.Namespace, results: list[Result]) -> None:
    print(f"\n{machine()}; load {load_average()}")
    print(
        f"{args.models} models, {args.rows} logged rows each, PostgreSQL log; the workspace "
        f"holding {args.history} earlier run(s) of each model\n"
    )
    one = {r.tree: r.seconds for r in results if r.processes == 1}
    rows = [
        [
            r.tree,
            r.mode,
            r.processes,
            f"{r.seconds:.1f}",
            f"{one[r.tree] / r.seconds:.2f}x" if r.tree in one else "-",
            f"{r.cpu:.1f}",
            f"{r.cpu / max(r.runs, 1):.2f}",
            r.runs,
            r.twice,
            r.missed,
        ]
        for r in results
    ]
    headers = ["tree", "mode", "processes", "wall s", "vs one", "CPU s", "CPU s/model"]
    print(table([*headers, "runs", "models run twice", "missed"], rows))


if __name__ == "__main__":
    main()
