"""Where a request's server CPU goes: py-spy samples of `servewatch serve` under wrk, by part.

Serves a model from this tree (and, with --baseline REF, the same model from REF's code in a
temporary `git worktree`), drives it with wrk at a fixed concurrency while `py-spy record` samples
every thread of the server (the log writer's included), and splits the server's CPU time per
request (from /proc) by what the sampled stacks were doing: the HTTP server, the framework, the
JSON body, validation, the model call, the log rows, the log insert, metrics and the rest.

    python -m bench.profile [--model flights-linear] [--rows 32] [--connections 16]
                            [--seconds 10] [--baseline REF]

Needs py-spy (`pip install py-spy`) and wrk. Sampling costs the server some time; the shares,
not the totals, are what it measures (the totals come from runs without it, `bench.against`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.against import Tree, checkout
from bench.common import ROOT, cpu_seconds, ensure_family_models, machine, table, wrk
from bench.serving import instances

# (part, substrings of a frame "function (file)" that put a sample in it), first match from the
# innermost frame outward wins; the order of PARTS is the order of the table
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("log insert (store, SQLite)", ("service/store.py", "sqlalchemy/", "sqlite3")),
    ("log rows (JSON per row)", ("prediction_rows", "log_rows", "redact")),
    ("log writer (queue, thread)", ("service/logwriter.py",)),
    ("validation", ("service/validation.py", "dataplane.py:check", "(check (")),
    ("model call", ("service/model.py", "service/fastpath.py", "service/compiled", "sklearn/",
                    "numpy/", "onnxruntime")),
    ("metrics", ("prometheus_client/", "service/metrics.py")),
    ("batcher", ("service/batching.py",)),
    ("JSON body (read, decode)", ("service/routes/body.py", "orjson", "msgspec")),
    ("reply and ids", ("service/ids.py", "dataplane.py", "service/routes/")),
    ("framework (FastAPI, Starlette)", ("starlette/", "fastapi/")),
    ("HTTP server (uvicorn, granian, asyncio)", ("uvicorn/", "httptools", "h11", "uvloop",
                                                 "asyncio/", "granian")),
]  # fmt: skip


def part_of(stack: str) -> str:
    """The part a sampled stack (py-spy's raw format: frames outermost first, `;`-separated)
    counts in: the innermost frame that names one."""
    for frame in reversed(stack.split(";")):
        for part, marks in PARTS:
            if any(m in frame for m in marks):
                return part
    return "other (interpreter, threads idle in C)"


def profile(tree: Tree, model: str, rows: int, connections: int, seconds: float) -> tuple[
    Counter[str], float
]:
    """Samples per part, and the server's CPU microseconds per request during the run."""
    body = {"instances": instances(rows)}
    url = f"{tree.url}/v1/models/{model}/predict"
    wrk(url, body, connections=4, seconds=1)  # warm-up
    out = Path(tempfile.mkstemp(prefix="sw-spy-", suffix=".txt")[1])
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(tree.proc.pid),
            "--rate",
            "500",
            "--format",
            "raw",
            "--duration",
            str(round(seconds)),
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: list[float] = []

    def load() -> None:
        used = cpu_seconds(tree.proc.pid)
        res = wrk(url, body, connections=connections, seconds=seconds)
        used = cpu_seconds(tree.proc.pid) - used
        result.append(used / (res.rps * round(seconds)) * 1e6)

    t = threading.Thread(target=load)
    t.start()
    spy.wait()
    t.join()
    counts: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[part_of(stack)] += int(n)
    out.unlink(missing_ok=True)
    return counts, result[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="flights-linear")
    ap.add_argument("--registry", type=Path, default=Path(".bench-registry"))
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--baseline", help="git ref whose code to profile beside this tree's")
    args = ap.parse_args()
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        sys.exit("py-spy is not installed (pip install py-spy)")
    if args.model.startswith("flights-"):
        ensure_family_models(args.registry)
    registry = args.registry.resolve()
    trees: list[Tree] = []
    worktrees: list[Path] = []
    try:
        trees.append(Tree("this tree", ROOT, registry, model=args.model))
        if args.baseline:
            sha, path = checkout(args.baseline, worktrees)
            trees.append(Tree(f"baseline {sha}", path, registry, model=args.model))
        found = {t.label: profile(t, args.model, args.rows, args.connections, args.seconds)
                 for t in trees}  # fmt: skip
    finally:
        for t in trees:
            t.stop()
        for path in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                           check=False)  # fmt: skip
    print(
        f"machine: {machine()}; {args.model}, {args.rows}-row requests, {args.connections} "
        f"connections, {args.seconds:.0f} s under py-spy (500 Hz, every thread)"
    )
    labels = [p for p, _ in PARTS] + ["other (interpreter, threads idle in C)"]
    head = ["part"]
    for label in found:
        head += [f"{label}: share", "CPU us/req"]
    rows = []
    for part in labels:
        row = [part]
        for counts, us in found.values():
            share = counts[part] / max(1, sum(counts.values()))
            row += [f"{share:.1%}", f"{share * us:,.0f}"]
        rows.append(row)
    total = ["all (server CPU per request, from /proc)"]
    for _, us in found.values():
        total += ["100%", f"{us:,.0f}"]
    print(table(head, [*rows, total]))


if __name__ == "__main__":
    main()
