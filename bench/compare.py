"""servewatch side by side with the ceiling, the floor, MLServer and BentoML on the same model.

Every server gets the same requests (flights rows without missing values, so every protocol can
carry them), its answers are first checked against the model called in-process, then wrk drives
single-row and 32-row requests at 1, 16 and 64 connections (warm-up, then the median of repeats).
MLServer and BentoML are installed in their own virtual environments under .bench-venvs/; a peer
that fails to install or start is reported, not hidden.

    python -m bench.compare [--registry registry] [--seconds 5] [--repeats 3] [--skip-peers]

Tree models against the peers (issue 16): `--model flights-forest` or `--model flights-hgb`
(trained on first use into .bench-registry by bench.common.ensure_family_models) with
`--peers-only --connections 16,64`: servewatch, MLServer and BentoML each with one and two
workers, and servewatch's ratio to the better peer, with one worker and at its best.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    ROOT,
    ServeProcess,
    ensure_demo_model,
    ensure_family_models,
    free_port,
    machine,
    median_run,
    table,
    wrk,
)
from core.registry import MODEL_FILE, Registry
from service.inference.model import LoadedModel
from training.demo import FEATURES, load_flights

VENVS = ROOT / ".bench-venvs"
PEER_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PEERS = {
    # uvloop 0.22+ breaks MLServer 1.7's inference worker processes (get_event_loop raises)
    "mlserver": ["mlserver>=1.6,<2", "mlserver-sklearn>=1.6,<2", "uvloop<0.22"],
    "bentoml": ["bentoml>=1.3,<2", "pandas<3"],
}


def peer_version(py: Path, module: str) -> str:
    try:
        out = subprocess.run(
            [str(py), "-c", f"import {module}; print({module}.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return "?"
    return out.stdout.strip()


def peer_python(name: str, sklearn_version: str) -> tuple[Path | None, str]:
    """The peer's venv python, installing it when missing; (None, reason) when it fails."""
    venv = VENVS / name
    py = venv / "bin" / "python"
    if py.exists():
        return py, "installed"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                *PEERS[name],
                f"scikit-learn=={sklearn_version}",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, f"install failed: {str(detail).strip().splitlines()[-1][:200]}"
    return py, "installed now"


class Proc:
    def __init__(
        self, cmd: list[str], url: str, ready_path: str, env: dict[str, str], cwd: Path = ROOT
    ) -> None:
        self.url = url
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with code {self.proc.returncode}")
            try:
                if httpx.get(url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("not ready in 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def mlserver_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    inputs = []
    for col in FEATURES:
        values = [r[col] for r in rows]
        text = isinstance(values[0], str)
        inputs.append(
            {
                "name": col,
                "shape": [len(rows)],
                "datatype": "BYTES" if text else "FP64",
                "data": values,
            }
        )
    return {
        "parameters": {"content_type": "pd"},
        "inputs": inputs,
        "outputs": [{"name": "predict_proba"}],
    }


def probabilities(server: str, answer: Any) -> list[float]:
    """The positive-class probability per row from each server's answer format."""
    if server == "mlserver":
        out = answer["outputs"][0]
        n = out["shape"][0]
        return [out["data"][i * 2 + 1] for i in range(n)]
    preds = answer["predictions"] if isinstance(answer, dict) else answer
    return [p["probabilities"]["1"] for p in preds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", type=Path, default=Path("registry"))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--model", default="flights", help="flights, or flights-<family>")
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--rows", default="1,32", help="rows per request, e.g. 32")
    ap.add_argument("--peers-only", action="store_true", help="no ceiling or floor")
    ap.add_argument(
        "--peer-threads",
        type=int,
        default=1,
        help="OMP/BLAS threads per peer process (servewatch runs its model calls on one: "
        "SERVEWATCH_MODEL_THREADS=1); 0 leaves the peers' defaults (every core)",
    )
    args = ap.parse_args()
    name = model_name = args.model
    if name == "flights":
        ensure_demo_model(args.registry)
    else:
        if args.registry == Path("registry"):
            args.registry = Path(".bench-registry")
        ensure_family_models(args.registry)
    connections = [int(c) for c in args.connections.split(",")]
    reg = Registry(args.registry)
    version = reg.resolve(name)
    model_path = reg.path(name, version) / MODEL_FILE
    model = LoadedModel.load(reg, name, version)
    import sklearn

    frame = load_flights([5]).dropna(subset=FEATURES).head(32)[FEATURES]
    rows = json.loads(frame.to_json(orient="records"))
    expected = [
        p["1"]
        for p in model.predict_columns({k: [r[k] for r in rows] for k in FEATURES}).probabilities
        or []
    ]

    env = {"BENCH_MODEL": str(model_path), "PYTHONPATH": str(ROOT)}
    if args.peer_threads:  # as servewatch's model calls: no OpenMP threads fighting over 2 cores
        threads = str(args.peer_threads)
        env |= dict.fromkeys(PEER_THREAD_VARS, threads)
    servers: dict[str, Callable[[], Any]] = {}
    for workers in (1, 2):
        servers[f"servewatch --workers {workers}"] = lambda w=workers, model=name: ServeProcess(
            args.registry,
            workers=w,
            env={"SERVEWATCH_MONITOR_INTERVAL": "0", "SERVEWATCH_MODELS": model},
        )

    def uvicorn_app(target: str) -> Proc:
        port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "--log-level", "warning", target]
        return Proc([*cmd, "--port", str(port)], f"http://127.0.0.1:{port}", "/docs", env)

    if not args.peers_only:
        servers["constant (ceiling)"] = lambda: uvicorn_app("bench.apps.constant:app")
        servers["naive FastAPI (floor)"] = lambda: uvicorn_app("bench.apps.naive:app")
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="sw-compare-"))
    if not args.skip_peers:
        py, status = peer_python("mlserver", sklearn.__version__)
        if py is None:
            notes.append(f"MLServer: {status}")
        else:
            notes.append(
                f"MLServer {peer_version(py, 'mlserver')} with mlserver-sklearn: "
                "max_batch_size 64, max_batch_time 5 ms, parallel_workers 1 or 2 "
                "(inference in worker processes)"
            )
            mdir = tmp / "mlserver" / "flights"
            mdir.mkdir(parents=True)
            shutil.copy(model_path, mdir / "model.joblib")
            (mdir / "model-settings.json").write_text(
                json.dumps(
                    {
                        "name": "flights",
                        "implementation": "mlserver_sklearn.SKLearnModel",
                        "parameters": {"uri": "./model.joblib", "version": "v1"},
                        "max_batch_size": 64,
                        "max_batch_time": 0.005,
                    }
                )
            )

            def start_mlserver(py: Path = py, workers: int = 1) -> Proc:
                port = free_port()
                (tmp / "mlserver" / "settings.json").write_text(
                    json.dumps(
                        {
                            "http_port": port,
                            "grpc_port": free_port(),
                            "metrics_port": free_port(),
                            "debug": False,
                            "parallel_workers": workers,
                        }
                    )
                )
                return Proc(
                    [str(py.parent / "mlserver"), "start", str(tmp / "mlserver")],
                    f"http://127.0.0.1:{port}",
                    "/v2/health/ready",
                    env,
                )

            for w in (1, 2):
                label = f"MLServer (adaptive batching, {w} inference worker{'s' if w > 1 else ''})"
                servers[label] = lambda w=w: start_mlserver(workers=w)  # type: ignore[misc]
        py, status = peer_python("bentoml", sklearn.__version__)
        if py is None:
            notes.append(f"BentoML: {status}")
        else:
            notes.append(
                f"BentoML {peer_version(py, 'bentoml')}: batchable API, max_batch_size 256, "
                "max_latency_ms 1000, 1 or 2 workers"
            )

            def start_bento(py: Path = py, workers: int = 1) -> Proc:
                port = free_port()
                return Proc(
                    [
                        str(py.parent / "bentoml"),
                        "serve",
                        "bench.apps.bento_service:Flights",
                        "--port",
                        str(port),
                    ],
                    f"http://127.0.0.1:{port}",
                    "/readyz",
                    {**env, "BENCH_BENTO_WORKERS": str(workers)},
                )

            for w in (1, 2):
                label = f"BentoML (adaptive batching, {w} worker{'s' if w > 1 else ''})"
                servers[label] = lambda w=w: start_bento(workers=w)  # type: ignore[misc]

    results = []
    for name, start in servers.items():
        try:
            server = start()
        except Exception as exc:
            notes.append(f"{name}: failed to start ({exc})")
            continue
        kind = (
            "mlserver"
            if name.startswith("MLServer")
            else ("bentoml" if name.startswith("BentoML") else "sw")
        )
        path = {
            "mlserver": "/v2/models/flights/infer",
            "bentoml": "/predict",
            "sw": f"/v1/models/{model_name}/predict",
        }[kind]
        if name.startswith(("constant", "naive")):
            path = "/predict"
        url = server.url + path
        try:
            for n in (int(r) for r in args.rows.split(",")):
                body = mlserver_body(rows[:n]) if kind == "mlserver" else {"instances": rows[:n]}
                if not name.startswith("constant"):
                    got = probabilities(kind, httpx.post(url, json=body, timeout=60).json())
                    if any(abs(a - b) > 1e-6 for a, b in zip(got, expected[:n], strict=True)):
                        notes.append(f"{name}: answers differ from the model in-process")
                for conns in connections:
                    wrk(url, body, connections=conns, seconds=1)
                    res = median_run(
                        [
                            wrk(url, body, connections=conns, seconds=args.seconds)
                            for _ in range(args.repeats)
                        ]
                    )
                    results.append((name, n, conns, res))
                    print(f"{name} rows={n} conns={conns}: {res.rps:.0f} req/s", flush=True)
        except Exception as exc:
            notes.append(f"{name}: benchmark failed ({exc})")
        finally:
            server.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    base = {(n, c): r.rps for name, n, c, r in results if name == "servewatch --workers 1"}
    out = [
        [
            name,
            n,
            c,
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            r.errors,
            f"{r.rps / base[(n, c)]:.2f}" if (n, c) in base else "-",
        ]
        for name, n, c, r in results
    ]
    print(
        f"\nmachine: {machine()}; model {model_name} v{version} ({model.manifest.model.family}, "
        f"served {model.serving_path}); load average "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
        + f"; median of {args.repeats} x "
        f"{args.seconds:.0f} s; wrk on the same 2 cores; servewatch with logging (SQLite) and "
        "metrics on, defaults otherwise; peers (and the ceiling and floor apps) with "
        + (
            f"OMP_NUM_THREADS={args.peer_threads} (BLAS likewise)"
            if args.peer_threads
            else "their default threads"
        )
    )
    print(
        table(
            [
                "server",
                "rows/request",
                "connections",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "vs servewatch w1",
            ],
            out,
        )
    )
    for note in notes:
        print(f"- {note}")
    print("\n" + goals(results))
    print(peer_ratios(results))


def peer_ratios(results: list[tuple[str, int, int, Any]]) -> str:
    """servewatch against the better of MLServer and BentoML, each peer at its best worker
    count, per rows and connections (issue 16's goal: at least 5x): servewatch with one worker,
    and at its best (one or two workers, as the peers are given theirs)."""
    by = {(name, n, c): r for name, n, c, r in results}
    lines = []
    for (name, n, c), mine in by.items():
        if name != "servewatch --workers 1" or mine.errors:
            continue
        peers = [
            r
            for (other, rn, rc), r in by.items()
            if other.startswith(("MLServer", "BentoML"))
            and (rn, rc) == (n, c)
            and not r.errors
            and r.rps > 0
        ]
        if not peers:
            continue
        best = max(peers, key=lambda r: r.rps)
        two = by.get(("servewatch --workers 2", n, c))
        mine_best = max(mine.rps, two.rps if two is not None and not two.errors else 0.0)
        for label, rps in (("one worker", mine.rps), ("best of 1-2 workers", mine_best)):
            verdict = "met" if rps >= 5 * best.rps else "NOT met"
            lines.append(
                f"vs the better peer, {n} row(s), {c} connections, servewatch {label}: "
                f"{rps / best.rps:.1f}x (goal >= 5x): {verdict}"
            )
    return "\n".join(lines)


def goals(results: list[tuple[str, int, int, Any]]) -> str:
    """The issue's ratio goals, read off this run: servewatch against the ceiling and floor
    (goal 1), against each peer's best configuration (goal 2), and two workers against one (3)."""
    by = {(name, n, c): r for name, n, c, r in results}
    w1, w2 = "servewatch --workers 1", "servewatch --workers 2"
    lines = []
    for c in (16, 64):
        sw, ceil = by.get((w1, 1, c)), by.get(("constant (ceiling)", 1, c))
        floor = by.get(("naive FastAPI (floor)", 1, c))
        if sw and ceil and floor:
            lines.append(
                f"goal 1, single-row, {c} connections: servewatch w1 = "
                f"{sw.rps / ceil.rps:.0%} of the constant endpoint (goal >= 50%), "
                f"{sw.rps / floor.rps:.0f}x the naive endpoint (goal >= 10x)"
            )
    for peer in ("MLServer", "BentoML"):
        for n in (1, 32):
            for c in (1, 16, 64):
                theirs = [
                    r
                    for (name, rn, rc), r in by.items()
                    if name.startswith(peer) and (rn, rc) == (n, c) and r.errors == 0 and r.rps > 0
                ]
                if not theirs:
                    continue
                best = max(theirs, key=lambda r: r.rps)
                for mine_name in (w1, w2):
                    mine = by.get((mine_name, n, c))
                    if mine is None:
                        continue
                    ahead = mine.rps > best.rps and mine.p99_ms < best.p99_ms
                    verdict = "ahead" if ahead else "NOT ahead"
                    lines.append(
                        f"goal 2, {peer} best, {n} row(s), {c} conn(s): {mine_name.split()[-1]}-"
                        f"worker servewatch {mine.rps / best.rps:.2f}x throughput, p99 "
                        f"{mine.p99_ms:.1f} vs {best.p99_ms:.1f} ms: {verdict}"
                    )
    for n in (1, 32):
        for c in (16, 64):
            a, b = by.get((w1, n, c)), by.get((w2, n, c))
            if a and b:
                lines.append(f"goal 3, {n} row(s), {c} conns: 2 workers = {b.rps / a.rps:.2f}x one")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
