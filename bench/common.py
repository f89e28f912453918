"""Shared pieces of the benchmarks: start a server, drive wrk, format tables."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_demo_model(registry: Path) -> None:
    """Train the flights demo into `registry` unless it is already there."""
    if (registry / "flights").is_dir():
        return
    print(f"training the flights demo into {registry} (about two minutes) ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "servewatch",
            "train",
            "--config",
            str(ROOT / "training/configs/flights.yaml"),
            "--registry",
            str(registry),
        ],
        check=True,
    )


class ServeProcess:
    """`servewatch serve` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, registry: Path, *, workers: int = 1, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="sw-bench-"))
        full = {
            **os.environ,
            "SERVEWATCH_REGISTRY": str(registry),
            "SERVEWATCH_DATABASE_URL": f"sqlite:///{self.tmp}/log.db",
            "SERVEWATCH_SPOOL_DIR": str(self.tmp / "spool"),
            **(env or {}),
        }
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "servewatch",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.ready_s = wait_ready(self.url, self.started)
        except RuntimeError:  # never left running: stopped here, by its pid
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_ready(url: str, started: float, timeout: float = 60) -> float:
    while time.perf_counter() - started < timeout:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} not ready in {timeout} s")


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str | None) -> float:
    found = re.match(r"([\d.]+)(us|ms|s|m)$", text or "")
    if not found:
        return float("nan")  # wrk prints no latency when no request completed
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _find(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text)
    return found.group(1) if found else None


def wrk(url: str, body: dict[str, Any], *, connections: int, seconds: float) -> WrkResult:
    """One wrk run (2 threads) POSTing `body`; needs Debian's wrk."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
        fh.write(
            f"wrk.method = 'POST'\nwrk.body = '{payload}'\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
        )
        script = fh.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(2, connections)),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--latency",
                "-s",
                script,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out) or "nan")
    # anchored: "68.50%" in the thread-stats lines must not read as the 50th percentile
    p50 = _ms(_find(r"(?m)^\s+50%\s+(\S+)", out))
    p99 = _ms(_find(r"(?m)^\s+99%\s+(\S+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0
    )
    return WrkResult(rps, p50, p99, errors)


def median_run(runs: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
    )


def machine() -> str:
    """Hardware and the versions that decide the figures."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"scikit-learn {v('scikit-learn')}, FastAPI {v('fastapi')}, uvicorn {v('uvicorn')}, "
        f"uvloop {v('uvloop')}"
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep, *[fmt(r) for r in cells[1:]]])


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages, as `uptime` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


BENCH_FAMILIES = ("linear", "tree", "forest", "hgb", "mlp", "svm")


def ensure_family_models(registry: Path, rows: int = 5000) -> list[str]:
    """One flights model per family the trainer offers (`flights-<family>`), each trained by the
    demo's own config on the same `rows` flights (every n-th of January to April: the svm family
    is skipped above 5,000 rows). Returns the model names; trains only those missing."""
    from core.registry import Registry
    from training.config import load_config
    from training.demo import load_flights
    from training.train import run_training

    reg = Registry(registry)
    names = [f"flights-{f}" for f in BENCH_FAMILIES]
    missing = [f for f, n in zip(BENCH_FAMILIES, names, strict=True) if not (registry / n).is_dir()]
    if not missing:
        return names
    data = registry / "flights-sample.parquet"
    if not data.exists():
        registry.mkdir(parents=True, exist_ok=True)
        frame = load_flights()
        frame.iloc[:: max(1, len(frame) // rows)].head(rows).to_parquet(data)
    for family in missing:
        print(f"training flights-{family} on {rows} flights ...", flush=True)
        config = load_config(
            ROOT / "training/configs/flights.yaml",
            {
                "name": f"flights-{family}",
                "data": str(data),
                "models": [family],
                "search.trials": 4,
                "search.budget_seconds": 60,
                "reference_rows": 2000,
                # 5,000 flights are not enough for every family to reach the demo's 0.60
                "objective.min_test_score": 0.5,
            },
        )
        run_training(config, reg)
    return names


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
