"""Gaps in text columns (issue 28): a linear model trained on such data, before and after the fix.

The flights demo's January rows (month left out: constant) with a tenth of `carrier` and `dest`
blanked (seeded), and the same rows without gaps, each trained as a linear model (the demo's
features, linear family only). Served in one run, one worker each, wrk alternating between them
every round:

- *before*: the baseline ref's code serving the version the baseline trained (the issue: missing
  text read as None, learned as a category; the numpy replay differed and was not used);
- *published before the fix*: this tree serving that same version (replayed, None as learned);
- *after*: this tree serving the version this tree trains (None and NaN imputed alike);
- *no gaps*: this tree serving the version trained on the rows without gaps (the reference).

Ratios to *no gaps*, in requests per second and in the server's CPU time per request; requests
carry one row with a missing `dest`. Models are trained into a temporary folder (about a minute).

    python -m bench.gaps --baseline REF [--rounds 4] [--seconds 4] [--connections 16]
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
from pathlib import Path

import numpy as np
import yaml

from bench.against import Tree
from bench.common import ROOT, cpu_seconds, machine, table, wrk
from training.demo import FEATURES, load_flights

CONFIG = {
    "name": "flights",
    "target": "arr_delayed",
    "time_column": "time_hour",
    "seed": 42,
    "features": {
        "categorical": ["carrier", "origin", "dest"],
        "numeric": [f for f in FEATURES if f not in ("carrier", "origin", "dest", "month")],
    },
    "models": ["linear"],
    "search": {"method": "random", "trials": 2, "budget_seconds": 30},
    "ensemble": {"enabled": False},
    "quality": {"max_missing_share": 0.75},
    "reference_rows": 2000,
}


def train(src: Path, data: Path, registry: Path) -> None:
    config = registry.with_suffix(".yaml")
    config.write_text(yaml.safe_dump({**CONFIG, "data": str(data)}))
    subprocess.run(
        [sys.executable, "-m", "servewatch", "train", "--config", str(config),
         "--registry", str(registry), "--promote", "always"],
        cwd=src, env={**os.environ, "PYTHONPATH": str(src)}, check=True,
        capture_output=True,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", required=True, help="git ref of the code before the fix")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sw-gaps-"))
    frame = load_flights(months=[1])
    clean = tmp / "clean.csv"
    frame.to_csv(clean, index=False)
    rng = np.random.default_rng(0)
    for col in ("carrier", "dest"):
        frame.loc[rng.random(len(frame)) < 0.1, col] = None
    gaps = tmp / "gaps.csv"
    frame.to_csv(gaps, index=False)
    base = tmp / "baseline-src"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    trees: list[Tree] = []
    try:
        print("training three linear models ...", flush=True)
        train(base, gaps, tmp / "reg-before")
        train(ROOT, gaps, tmp / "reg-after")
        train(ROOT, clean, tmp / "reg-clean")
        row = frame.loc[frame["dest"].isna(), FEATURES].head(1)
        instance = json.loads(row.to_json(orient="records"))[0]
        body = {"instances": [instance]}
        trees = [
            Tree("before (baseline code, its version)", base, tmp / "reg-before"),
            Tree("published before the fix (this code)", ROOT, tmp / "reg-before"),
            Tree("after (this code, its version)", ROOT, tmp / "reg-after"),
            Tree("no gaps (this code)", ROOT, tmp / "reg-clean"),
        ]
        paths = []
        for t in trees:
            meta = served_path(t)
            paths.append(meta)
            wrk(f"{t.url}/v1/models/flights/predict", body, connections=4, seconds=1)
        print(f"machine: {machine()}; 1-row requests (dest missing), {args.connections} conns")
        rps: dict[str, list[float]] = {t.label: [] for t in trees}
        cpu: dict[str, list[float]] = {t.label: [] for t in trees}
        for r in range(args.rounds):
            for t in trees if r % 2 == 0 else trees[::-1]:
                used = cpu_seconds(t.proc.pid)
                res = wrk(f"{t.url}/v1/models/flights/predict", body,
                          connections=args.connections, seconds=args.seconds)  # fmt: skip
                used = cpu_seconds(t.proc.pid) - used
                rps[t.label].append(res.rps)
                cpu[t.label].append(used / (res.rps * round(args.seconds)) * 1e6)
        ref_rps = statistics.median(rps[trees[-1].label])
        ref_cpu = statistics.median(cpu[trees[-1].label])
        rows = [
            [
                t.label,
                path,
                f"{statistics.median(rps[t.label]):,.0f}",
                f"{statistics.median(rps[t.label]) / ref_rps:.2f}",
                f"{statistics.median(cpu[t.label]):,.0f}",
                f"{statistics.median(cpu[t.label]) / ref_cpu:.2f}",
            ]
            for t, path in zip(trees, paths, strict=True)
        ]
        head = ["server", "serving path", "req/s (median)", "vs no gaps", "CPU us/req"]
        head += ["vs no gaps"]
        print(table(head, rows))
    finally:
        for t in trees:
            t.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def served_path(tree: Tree) -> str:
    """The version's serving path, and why any part is on scikit-learn (where the code says)."""
    import httpx

    body = httpx.get(f"{tree.url}/v1/models/flights", timeout=10).json()
    why = [f"{p}: {v['reason']}" for p, v in body.get("serving_parts", {}).items()
           if v["reason"] != "none"]  # fmt: skip
    return body["serving_path"] + (f" ({'; '.join(why)})" if why else "")


if __name__ == "__main__":
    main()
