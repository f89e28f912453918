"""Where a request's server CPU goes: py-spy samples of `servewatch serve` under wrk, by part.

Serves a model from this tree (and, with --baseline REF, the same model from REF's code in a
temporary `git worktree`) and drives it with wrk at a fixed concurrency. Each thread's CPU time
comes from /proc (every thread of the server: the event loop's, the log writer's, the model
thread's); the event loop thread's time is split by what `py-spy record --gil` found it doing
(samples taken while it held the GIL): the HTTP server, the framework, the JSON body,
validation, the model call, the log rows, metrics and the rest. The log writer's thread spends
most of its time in SQLite with the GIL released, so it is one row of its own.

    python -m bench.profile [--model flights-linear] [--rows 32] [--connections 16]
                            [--seconds 10] [--baseline REF]

Needs py-spy (`pip install py-spy`) and wrk. Sampling costs the server a little; the split, not
the total, is what this measures (totals and ratios: `bench.against`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.against import Tree, checkout
from bench.common import ROOT, ensure_family_models, machine, table, wrk
from bench.serving import instances

# (part, substrings of a frame "function (file)" that put a sample in it), first match from the
# innermost frame outward wins; the order of PARTS is the order of the table
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("log rows (JSON per row)", ("prediction_rows", "log_rows", "redact")),
    ("log queue (put)", ("predlog/logwriter.py",)),
    ("validation", ("service/validation.py", "DataPlane.check (")),
    ("model call", ("service/inference/", "sklearn/", "numpy/", "onnxruntime")),
    ("metrics", ("prometheus_client/", "service/metrics.py", "DataPlane.record (")),
    ("batcher", ("service/batching.py",)),
    ("ids", ("predlog/ids.py",)),
    ("JSON body (read, decode)", ("service/protocols/body.py", "service/protocols/hotpath.py")),
    ("data plane (reply, routing)", ("service/dataplane.py", "service/protocols/")),
    ("framework (FastAPI, Starlette)", ("starlette/", "fastapi/")),
    ("HTTP server (uvicorn, asyncio)", ("uvicorn/", "httptools", "h11", "uvloop", "asyncio/")),
]  # fmt: skip


def part_of(stack: str) -> str:
    """The part a sampled stack (py-spy's raw format: frames outermost first, `;`-separated)
    counts in: the innermost frame that names one."""
    for frame in reversed(stack.split(";")):
        for part, marks in PARTS:
            if any(m in frame for m in marks):
                return part
    return "other (interpreter, asyncio in C)"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`, by thread id, from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def profile(
    tree: Tree, model: str, rows: int, connections: int, seconds: float
) -> dict[str, float]:
    """CPU microseconds per request by part (the event loop thread's split by its samples)."""
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
            "--gil",
            "--threads",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    requests: list[float] = []
    before = thread_cpu(tree.proc.pid)

    def load() -> None:
        res = wrk(url, body, connections=connections, seconds=seconds)
        requests.append(res.rps * round(seconds))

    t = threading.Thread(target=load)
    t.start()
    spy.wait()
    t.join()
    after = thread_cpu(tree.proc.pid)
    us = {tid: (used - before.get(tid, 0.0)) / requests[0] * 1e6 for tid, used in after.items()}
    counts: Counter[str] = Counter()
    names: dict[int, str] = {}
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        head = stack.split(";", 1)[0]  # "thread (TID): NAME"
        if not n.isdigit() or not head.startswith("thread ("):
            continue
        tid = int(head[8 : head.index(")")])
        names[tid] = head.split(": ", 1)[-1]
        if tid == tree.proc.pid:
            counts[part_of(stack)] += int(n)
    out.unlink(missing_ok=True)
    main_us = us.pop(tree.proc.pid, 0.0)
    found = {part: main_us * n / max(1, sum(counts.values())) for part, n in counts.items()}
    for tid, cost in us.items():
        name = names.get(tid, "other threads")
        label = "log writer thread (SQLite insert)" if name == "log-writer" else (
            "model thread" if name.startswith("model") else "other threads")  # fmt: skip
        found[label] = found.get(label, 0.0) + cost
    found["all (server CPU per request, from /proc)"] = main_us + sum(us.values())
    return found


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
        f"connections, {args.seconds:.0f} s under py-spy (500 Hz, --gil)"
    )
    labels = [f"event loop: {p}" for p, _ in PARTS] + [
        "event loop: other (interpreter, asyncio in C)",
        "log writer thread (SQLite insert)",
        "model thread",
        "other threads",
        "all (server CPU per request, from /proc)",
    ]
    head = ["part", *(f"{label}: CPU us/req" for label in found)]
    rows = [
        [part, *(f"{parts.get(part.removeprefix('event loop: '), parts.get(part, 0.0)):,.0f}"
                 for parts in found.values())]
        for part in labels
    ]  # fmt: skip
    print(table(head, rows))


if __name__ == "__main__":
    main()
