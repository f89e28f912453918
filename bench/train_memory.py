"""Peak memory of `servewatch train` on a Parquet dataset folder: a whole train and a search
worker (`--study`, `--worker-index 1`), with the code of two source trees (before / after).

    python -m bench.train_memory --before /work/main --after . [--rows 400000] [--url ...]

Each run is its own process under /usr/bin/time (its maximum RSS); the search reads
`search.max_rows` rows. On a loaded machine: ratios only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

from bench.common import load_average, machine, table
from bench.distributed_search import schema_url


def build(folder: Path, rows: int) -> None:
    """A classification data set of `rows` rows, hive-partitioned, 50,000-row row groups."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=rows), rng.uniform(0, 10, rows)
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "x3": rng.integers(0, 1000, rows).astype(float),
            "color": rng.choice(["red", "green", "blue"], rows),
            "city": rng.choice([f"city-{i}" for i in range(50)], rows),
            "label": np.where(x1 + 0.3 * x2 + rng.normal(size=rows) > 1.5, "yes", "no"),
            "part": np.arange(rows) % 4,
        }
    )
    frame.to_parquet(folder, partition_cols=["part"], row_group_size=50_000)


def peak_mb(tree: str, args: list[str], env: dict[str, str]) -> float:
    """The maximum RSS in MB of `python -m servewatch train ARGS` run with `tree`'s code."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "servewatch", "train", *args]
    tree = str(Path(tree).resolve())
    env = {**os.environ, **env, "PYTHONPATH": tree}
    # run from the tree: `python -m` puts the working directory first on sys.path
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: train failed:\n{proc.stderr[-2000:]}")
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    url, drop = schema_url(args.url)
    try:
        run(args, url)
    finally:
        drop()


def run(args: argparse.Namespace, url: str) -> None:
    """Both runs with both trees' code."""
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-train-memory-"))
    build(tmp / "data", args.rows)
    config = {
        "name": "m",
        "data": str(tmp / "data"),
        "target": "label",
        "models": ["linear", "hgb"],
        "search": {"method": "random", "trials": 2, "max_rows": 2000},
        "split": {"cv_folds": 2},
        "ensemble": {"enabled": False},
        "publish": {"refit_all": False},
    }
    (tmp / "c.yaml").write_text(yaml.safe_dump(config))
    base = ["--config", str(tmp / "c.yaml"), "--json"]
    rows: list[list[str]] = []
    for what in ("whole train", "search worker (--worker-index 1)"):
        mb = {}
        for label, tree in (("before", args.before), ("after", args.after)):
            extra, env = ["--registry", str(tmp / f"reg-{label}-{len(rows)}")], {}
            if what.startswith("search"):
                extra += ["--study", f"mem-{uuid.uuid4().hex[:6]}", "--worker-index", "1"]
                env = {"SERVEWATCH_STUDY_STORAGE": url}
            mb[label] = peak_mb(tree, base + extra, env)
        rows.append([what, f"{mb['before']:.0f}", f"{mb['after']:.0f}",
                     f"{mb['after'] / mb['before']:.2f}"])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    print(f"\n{machine()}; load {load_average()}; {args.rows:,} rows, Parquet dataset folder")
    print(table(["run", "peak RSS MB before", "after", "after / before"], rows))


if __name__ == "__main__":
    main()
