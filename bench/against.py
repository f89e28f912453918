"""This tree's serving speed against a git ref's, in one run (for refactors that must not slow it).

Both trees serve the same flights model side by side, each started from its own source (the
baseline from a temporary `git worktree`); wrk loads one at a time, alternating the order every
round, and the table gives each side's median and the ratio (this tree / baseline), in requests per
second and in the server's own CPU time per request (from /proc: steadier than throughput when
other work shares the machine). Ratios, not absolute figures: the machine is shared.

    python -m bench.against --baseline HEAD~1 [--current HEAD] [--rounds 5] [--seconds 5]
                            [--connections 16] [--rows 1]

Without --current the working tree (uncommitted changes included) is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    ROOT,
    cpu_seconds,
    ensure_demo_model,
    free_port,
    machine,
    table,
    wait_ready,
    wrk,
)
from bench.serving import instances


class Tree:
    """`servewatch serve` started from the source in `src`."""

    def __init__(
        self, label: str, src: Path, registry: Path, *, model: str = "flights", server: str = ""
    ) -> None:
        self.label = label
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"sw-against-{label}-"))
        env = {
            **os.environ,
            "PYTHONPATH": str(src),  # ahead of the editable install's path
            "SERVEWATCH_REGISTRY": str(registry),
            "SERVEWATCH_DATABASE_URL": f"sqlite:///{self.tmp}/log.db",
            "SERVEWATCH_SPOOL_DIR": str(self.tmp / "spool"),
            "SERVEWATCH_MONITOR_INTERVAL": "0",
            "SERVEWATCH_MODELS": model,
        }
        if server:  # a tree that has the setting (SERVEWATCH_SERVER); older ones ignore it
            env["SERVEWATCH_SERVER"] = server
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "servewatch", "serve", "--port", str(self.port)],
            cwd=src,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.url, started)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        shutil.rmtree(self.tmp, ignore_errors=True)


def checkout(ref: str, worktrees: list[Path]) -> tuple[str, Path]:
    """`ref`'s tree in a temporary detached `git worktree` (appended to `worktrees`)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix=f"sw-{sha}-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), sha],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    worktrees.append(path)
    return sha, path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", required=True, help="git ref to compare against, e.g. HEAD~1")
    ap.add_argument("--current", help="git ref to measure instead of the working tree")
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rows", type=int, default=1)
    args = ap.parse_args()
    ensure_demo_model(args.registry)
    registry = args.registry.resolve()
    worktrees: list[Path] = []

    body = {"instances": instances(args.rows)}
    trees: list[Tree] = []
    try:
        if args.current:
            sha, path = checkout(args.current, worktrees)
            trees.append(Tree(f"current {sha}", path, registry))
        else:
            trees.append(Tree("working tree", ROOT, registry))
        sha, path = checkout(args.baseline, worktrees)
        trees.append(Tree(f"baseline {sha}", path, registry))
        print(f"machine: {machine()}; {args.rows}-row requests, {args.connections} connections")
        runs: dict[str, list[float]] = {t.label: [] for t in trees}
        p99: dict[str, list[float]] = {t.label: [] for t in trees}
        cpu: dict[str, list[float]] = {t.label: [] for t in trees}  # server CPU us per request
        errors = dict.fromkeys(runs, 0)
        for t in trees:  # warm-up: first calls, caches, the heap frozen after load
            wrk(f"{t.url}/v1/models/flights/predict", body, connections=4, seconds=1)
        for r in range(args.rounds):
            for t in trees if r % 2 == 0 else trees[::-1]:
                used = cpu_seconds(t.proc.pid)
                res = wrk(
                    f"{t.url}/v1/models/flights/predict",
                    body,
                    connections=args.connections,
                    seconds=args.seconds,
                )
                used = cpu_seconds(t.proc.pid) - used
                runs[t.label].append(res.rps)
                cpu[t.label].append(used / (res.rps * round(args.seconds)) * 1e6)
                p99[t.label].append(res.p99_ms)
                errors[t.label] += res.errors
        base = statistics.median(runs[trees[1].label])
        base_cpu = statistics.median(cpu[trees[1].label])
        rows = [
            [
                label,
                f"{statistics.median(v):,.0f}",
                f"{min(v):,.0f}-{max(v):,.0f}",
                f"{statistics.median(p99[label]):.1f}",
                errors[label],
                f"{statistics.median(v) / base:.3f}",
                f"{statistics.median(cpu[label]):,.0f}",
                f"{min(cpu[label]):,.0f}-{max(cpu[label]):,.0f}",
                f"{statistics.median(cpu[label]) / base_cpu:.3f}",
            ]
            for label, v in runs.items()
        ]
        head = ["tree", "req/s (median)", "range", "p99 ms", "errors", "ratio"]
        head += ["CPU us/req (median)", "range", "CPU ratio"]
        print(table(head, rows))
    finally:
        for t in trees:
            t.stop()
        for path in worktrees:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False
            )


if __name__ == "__main__":
    main()
