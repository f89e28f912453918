"""Service fixtures: an app on a private registry copy and SQLite log, and a real uvicorn server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from core.registry import Registry
from service.config import Settings
from service.main import create_app

ADMIN = "admin-token-0123456789"


def example(_registry: Path | None = None) -> dict[str, Any]:
    """A valid instance for the demo model."""
    return {"x1": 0.5, "x2": 3.0, "color": "red", "group": "a", "when": "2024-02-01T10:00:00"}


@pytest.fixture
def settings(registry_copy: Path, tmp_path: Path) -> Settings:
    return Settings(
        registry=registry_copy,
        database_url=f"sqlite:///{tmp_path}/log.db",
        spool_dir=tmp_path / "spool",
        admin_token=ADMIN,
        reload_interval_s=0,
        log_flush_ms=20,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment of a test's `servewatch serve`: its monitoring loop's reports beside its
    spool folder and no Evidently snapshots unless `env` names them. Their defaults are under the
    working folder's var/: the checkout's, shared by every xdist worker's servers (one loop's
    .loop.lock would make the other's skip its round) and never a test's to write."""
    full = {**os.environ, **env}
    if "SERVEWATCH_MONITOR_REPORTS_DIR" not in full:
        spool = full.get("SERVEWATCH_SPOOL_DIR")
        base = Path(spool).parent if spool else Path(tempfile.mkdtemp(prefix="sw-serve-"))
        full["SERVEWATCH_MONITOR_REPORTS_DIR"] = str(base / "monitor-reports")
    full.setdefault("SERVEWATCH_EVIDENTLY_WORKSPACE", "")
    return full


class Server:
    """`servewatch serve` in a subprocess on 127.0.0.1 (real HTTP through uvicorn)."""

    def __init__(self, env: dict[str, str], workers: int = 1, cwd: Path | None = None) -> None:
        """`cwd`: another checkout to run (`python -m` puts the working folder first on the
        path, before PYTHONPATH)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = server_environment(env)
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
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {self.proc.stdout.read() if self.proc.stdout else ''}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready in 60 s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read() if self.proc.stdout else ""


@pytest.fixture
def server_env(registry_copy: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "SERVEWATCH_REGISTRY": str(registry_copy),
        "SERVEWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/log.db",
        "SERVEWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "SERVEWATCH_ADMIN_TOKEN": ADMIN,
        "SERVEWATCH_RELOAD_INTERVAL_S": "0.5",
    }


def postgres_url() -> str | None:
    """The test PostgreSQL URL, or None (skip) when unreachable and not required."""
    url = os.environ.get(
        "SERVEWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    try:
        import sqlalchemy as sa

        from predlog.store import normalise_url

        engine = sa.create_engine(normalise_url(url), connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return url
    except Exception as exc:
        if os.environ.get("SERVEWATCH_REQUIRE_POSTGRES"):
            raise RuntimeError(f"PostgreSQL required but unreachable at {url}: {exc}") from exc
        return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    url = postgres_url()
    if url is None:
        pytest.skip(
            "no PostgreSQL server reachable at SERVEWATCH_TEST_POSTGRES_URL "
            "(default 127.0.0.1:5432/test); CI requires it"
        )
    import uuid

    import sqlalchemy as sa

    from predlog.store import normalise_url

    schema = f"sw_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalise_url(url))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in url else "?"
    yield f"{url}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def end_sessions(admin: Any, role: str) -> None:
    """End every session of `role` (which can no longer log in) until none is left: one that
    authenticated just before NOLOGIN may show in pg_stat_activity a moment later."""
    import sqlalchemy as sa

    deadline = time.monotonic() + 10
    while True:
        with admin.begin() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE usename = :role"
                ),
                {"role": role},
            ).scalar_one()
        if not ended or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def registry_of(path: Path) -> Registry:
    return Registry(path)


def all_at_once(call: Callable[[Any], object], items: Sequence[Any]) -> list[BaseException]:
    """`call` on every item, each in its own thread, started together (as several workers or
    CronJobs would); what they raised."""
    gate = threading.Barrier(len(items))
    raised: list[BaseException] = []

    def run(item: Any) -> None:
        gate.wait()
        try:
            call(item)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            raised.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return raised
