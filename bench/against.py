"""This tree's serving speed against a git ref's, in one run (for refactors that must not slow it).

Both trees serve the same flights model side by side, each started from its own source (the
baseline from a temporary `git worktree`); wrk loads one at a time, alternating the order every
round, and the table gives each side's median and the ratio (this tree / baseline), in requests per
second and in the server's own CPU time per request (from /proc: steadier than throughput when
other work shares the machine). Ratios, not absolute figures: the machine is shared.

    python -m bench.against --baseline HEAD~1 [--current HEAD] [--rounds 5] [--seconds 5]
                            [--connections 16] [--rows 1,32] [--models flights-linear,...]
                            [--ceiling] [--protocol v1|v2]

Issue 28: `--models flights-linear,flights-forest,flights-hgb --rows 1,32 --ceiling` (the
constant endpoint of bench.compare loaded in the same rounds for the single-row goal).

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
from typing import Any

import httpx

from bench.common import (
    ROOT,
    cpu_seconds,
    ensure_demo_model,
    ensure_family_models,
    free_port,
    machine,
    table,
    wait_ready,
    wrk,
)
from bench.oip import tensors
from bench.serving import instances
from core.registry import Registry


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

    def route(self, model: str, protocol: str = "v1") -> str:
        if protocol == "v2":
            return f"/v2/models/{model}/infer"
        return f"/v1/models/{model}/predict"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Ceiling(Tree):
    """The peers' harness's constant endpoint (bench/apps/constant.py: FastAPI on uvicorn
    reading the body and answering a constant), for the single-row goal."""

    def __init__(self) -> None:
        self.label = "constant endpoint (ceiling)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="sw-against-ceiling-"))
        cmd = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "bench.apps.constant:app"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url + "/predict", content=b"{}", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the constant endpoint did not start")

    def route(self, model: str, protocol: str = "v1") -> str:
        return "/predict"


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
    ap.add_argument("--rows", default="1", help="rows per request, e.g. 1,32")
    ap.add_argument(
        "--models",
        default="flights",
        help="flights (the demo) or flights-<family> models (trained into .bench-registry), "
        "e.g. flights-linear,flights-forest,flights-hgb",
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="single-row requests also to the constant endpoint of bench.compare",
    )
    ap.add_argument(
        "--protocol",
        choices=("v1", "v2"),
        default="v1",
        help="v1: POST /v1/models/NAME/predict; v2: the Open Inference Protocol's infer route",
    )
    args = ap.parse_args()
    models = args.models.split(",")
    if models == ["flights"]:
        ensure_demo_model(args.registry)
    else:
        if args.registry == Path("registry"):
            args.registry = Path(".bench-registry")
        ensure_family_models(args.registry)
    registry = args.registry.resolve()
    worktrees: list[Path] = []
    out = []
    try:
        if args.current:
            current = checkout(args.current, worktrees)
            current = (f"current {current[0]}", current[1])
        else:
            current = ("working tree", ROOT)
        sha, path = checkout(args.baseline, worktrees)
        for model in models:
            trees = [Tree(*current, registry, model=model)]
            try:
                trees.append(Tree(f"baseline {sha}", path, registry, model=model))
                for rows in (int(n) for n in args.rows.split(",")):
                    ceiling = [Ceiling()] if args.ceiling and rows == 1 else []
                    try:
                        out += measure(
                            [*trees, *ceiling],
                            model,
                            body_for(args.protocol, registry, model, rows),
                            args.rounds,
                            args.seconds,
                            args.connections,
                            protocol=args.protocol,
                        )
                    finally:
                        for c in ceiling:
                            c.stop()
            finally:
                for t in trees:
                    t.stop()
    finally:
        for path in worktrees:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False
            )
    print(
        f"machine: {machine()}; {args.connections} connections, {args.rounds} rounds x "
        f"{args.seconds:.0f} s, the trees alternating; load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    head = ["model", "rows", "tree", "req/s (median)", "range", "p99 ms", "errors", "ratio"]
    head += ["CPU us/req (median)", "range", "CPU ratio"]
    print(table(head, out))


def body_for(protocol: str, registry: Path, model: str, rows: int) -> dict[str, Any]:
    """`rows` flights as /v1 instances, or (v2) as one tensor per feature."""
    batch = instances(rows)
    if protocol == "v1":
        return {"instances": batch}
    reg = Registry(registry)
    manifest = reg.manifest(model, reg.resolve(model))
    return tensors(batch, {f.name: f.kind for f in manifest.features})


def measure(
    trees: list[Tree],
    model: str,
    body: dict[str, Any],
    rounds: int,
    seconds: float,
    connections: int,
    *,
    protocol: str = "v1",
) -> list[list[Any]]:
    """Table rows for `trees` (this one first, the baseline second) loaded in turn; ratios to
    the baseline."""
    rows = len(body["instances"]) if "instances" in body else body["inputs"][0]["shape"][0]
    runs: dict[str, list[float]] = {t.label: [] for t in trees}
    p99: dict[str, list[float]] = {t.label: [] for t in trees}
    cpu: dict[str, list[float]] = {t.label: [] for t in trees}  # server CPU us per request
    errors = dict.fromkeys(runs, 0)
    for t in trees:  # warm-up: first calls, caches, the heap frozen after load
        wrk(t.url + t.route(model, protocol), body, connections=4, seconds=1)
    for r in range(rounds):
        for t in trees if r % 2 == 0 else trees[::-1]:
            used = cpu_seconds(t.proc.pid)
            res = wrk(
                t.url + t.route(model, protocol), body, connections=connections, seconds=seconds
            )
            used = cpu_seconds(t.proc.pid) - used
            runs[t.label].append(res.rps)
            cpu[t.label].append(used / (res.rps * round(seconds)) * 1e6)
            p99[t.label].append(res.p99_ms)
            errors[t.label] += res.errors
        print(f"{model} {rows} row(s): round {r + 1} of {rounds}", flush=True)
    base = statistics.median(runs[trees[1].label])
    base_cpu = statistics.median(cpu[trees[1].label])
    return [
        [
            model,
            rows,
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


if __name__ == "__main__":
    main()
