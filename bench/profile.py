"""Where a request's server CPU goes: py-spy samples of `servewatch serve` under wrk, by part.

Serves a model from this tree (and, with --baseline REF, the same model from REF's code in a
temporary `git worktree`) and drives it with wrk at a fixed concurrency. Each thread's CPU time
comes from /proc (every thread of the server: the event loop's, the log writer's, the model
thread's); the event loop thread's time is split by what `py-spy record --gil` found it doing
(samples taken while it held the GIL): the HTTP server, the framework, the JSON body,
validation, the model call, the log rows, metrics and the rest. The log writer's thread spends
most of its time in SQLite with the GIL released, so it is one row of its own.

    python -m bench.profile [--model flights-linear] [--rows 32] [--connections 16]
                            [--seconds 10] [--baseline REF] [--perf]

py-spy's `--gil` samples are wall-clock time with the GIL held: a thread put off the CPU inside a
syscall (a loaded machine) is charged to the line that made it. `--perf` adds each thread's CPU
split by library from `perf record` (CPU samples; needs perf and the right to trace the server).

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


# (library, substrings of a perf sample's DSO path), first match wins; the rest: "other native"
LIBRARIES: list[tuple[str, tuple[str, ...]]] = [
    ("Python interpreter", ("libpython",)),
    ("numpy", ("numpy",)),
    ("kernel", ("[kernel",)),
    ("libc", ("libc.so", "libm.so")),
    ("orjson", ("orjson",)),
    ("SQLite", ("libsqlite3", "_sqlite3")),
    ("uvloop, httptools", ("uvloop", "httptools")),
    ("hashes (BLAKE2)", ("_blake2", "_hashlib")),
]  # fmt: skip


def perf_start(pid: int, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    """`perf record` of every thread of `pid` for `seconds` (CPU samples, 999 Hz)."""
    out = Path(tempfile.mkstemp(prefix="sw-perf-", suffix=".data")[1])
    cmd = ["perf", "record", "-F", "999", "-p", str(pid), "-o", str(out), "--", "sleep"]
    proc = subprocess.Popen(
        [*cmd, str(round(seconds))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, out


def perf_split(data: Path, labels: dict[int, str], us: dict[int, float]) -> dict[str, float]:
    """Each thread's CPU per request (`us`, from /proc) split by the libraries its perf samples
    were in: what py-spy's wall-clock samples cannot tell (time off the CPU with the GIL held)."""
    script = subprocess.run(
        ["perf", "script", "-G", "-i", str(data), "-F", "tid,ip,dso"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    data.unlink(missing_ok=True)
    counts: dict[int, Counter[str]] = {}
    for line in script.splitlines():
        field, _, rest = line.strip().partition(" ")
        dso = rest.rpartition(" ")[2]  # "(path)" after the address
        if not field.isdigit():
            continue
        lib = next((n for n, marks in LIBRARIES if any(m in dso for m in marks)), "other native")
        counts.setdefault(int(field), Counter())[lib] += 1
    found: dict[str, float] = {}
    for tid, libs in counts.items():
        total = sum(libs.values())
        for lib, n in libs.items():
            key = f"{labels.get(tid, 'other threads')}: {lib}"
            found[key] = found.get(key, 0.0) + us.get(tid, 0.0) * n / total
    return found


def profile(
    tree: Tree, model: str, rows: int, connections: int, seconds: float, *, perf: bool = False
) -> tuple[dict[str, float], dict[str, float]]:
    """CPU microseconds per request by part (the event loop thread's split by its samples) and,
    with `perf`, by thread and library (perf's CPU samples)."""
    body = {"instances": instances(rows)}
    url = f"{tree.url}/v1/models/{model}/predict"
    wrk(url, body, connections=4, seconds=1)  # warm-up
    perfed = perf_start(tree.proc.pid, seconds) if perf else None
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
    if perfed is not None:
        perfed[0].wait()
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
    labels = {tid: thread_label(names.get(tid, "")) for tid in us}
    labels[tree.proc.pid] = "event loop"
    by_library = perf_split(perfed[1], labels, us) if perfed is not None else {}
    main_us = us.pop(tree.proc.pid, 0.0)
    found = {part: main_us * n / max(1, sum(counts.values())) for part, n in counts.items()}
    for tid, cost in us.items():
        label = f"{labels[tid]} thread" if labels[tid] != "other threads" else labels[tid]
        label = label.replace("log writer thread", "log writer thread (SQLite insert)")
        found[label] = found.get(label, 0.0) + cost
    found["all (server CPU per request, from /proc)"] = main_us + sum(us.values())
    return found, by_library


def thread_label(name: str) -> str:
    """A thread's row in the tables, by its name."""
    if name == "log-writer":
        return "log writer"
    return "model" if name.startswith("model") else "other threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="flights-linear")
    ap.add_argument("--registry", type=Path, default=Path(".bench-registry"))
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--baseline", help="git ref whose code to profile beside this tree's")
    ap.add_argument(
        "--perf", action="store_true", help="also split each thread's CPU by library (perf)"
    )
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
        both = {t.label: profile(t, args.model, args.rows, args.connections, args.seconds,
                                 perf=args.perf)
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
    found = {label: parts for label, (parts, _) in both.items()}
    head = ["part", *(f"{label}: CPU us/req" for label in found)]
    rows = [
        [part, *(f"{parts.get(part.removeprefix('event loop: '), parts.get(part, 0.0)):,.0f}"
                 for parts in found.values())]
        for part in labels
    ]  # fmt: skip
    print(table(head, rows))
    if args.perf:
        print_libraries({label: libs for label, (_, libs) in both.items()})


def print_libraries(found: dict[str, dict[str, float]]) -> None:
    """Each thread's CPU per request by library (perf's CPU samples), largest first."""

    def order(key: str) -> tuple[str, float]:
        return key.split(": ")[0], -max(libs.get(key, 0.0) for libs in found.values())

    keys = sorted({k for libs in found.values() for k, us in libs.items() if us >= 0.5}, key=order)
    print(
        "\nCPU by thread and library (perf record, 999 Hz; each thread's /proc CPU by its samples)"
    )
    head = ["thread: library", *(f"{label}: CPU us/req" for label in found)]
    rows = [[k, *(f"{libs.get(k, 0.0):,.0f}" for libs in found.values())] for k in keys]
    print(table(head, rows))


if __name__ == "__main__":
    main()
