"""Store down -> SIGTERM -> restart on the same spool -> store up: nothing lost, nothing twice.

A real PostgreSQL outage (the service's own role is set NOLOGIN and its sessions terminated)
around a real `servewatch serve` in a subprocess: two workers answer during the outage and are
stopped with SIGTERM, one worker starts on the same spool folder while the store is still down
and answers more, then the role is let back in. Every answered id must be in the store exactly
once, and the spool must be empty: the restarted worker replays its own folder and adopts the
folder the second, no longer running, worker left behind.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from predlog.logwriter import Spool
from predlog.store import normalise_url
from tests.service.conftest import Server, end_sessions, free_port, server_environment
from tests.service.test_http import hammer

pytestmark = pytest.mark.postgres


class StoreDownServer(Server):
    """`servewatch serve` that counts as started once ready apart from the store (the spool
    absorbs the outage), as the Kubernetes readiness probe does with `?store=false`."""

    def __init__(self, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "servewatch", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--workers", str(workers)],
            env=server_environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/readyz?store=false", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        output = self.stop()
        raise RuntimeError(f"server did not become ready: {output[-2000:]}")


class Outage:
    """A PostgreSQL role of the test's own that can be locked out and let back in."""

    def __init__(self, pg_url: str) -> None:
        self.admin = sa.create_engine(normalise_url(pg_url))
        self.role = f"sw_restart_{uuid.uuid4().hex[:8]}"
        self.schema = pg_url.rsplit("%3D", 1)[1]
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"CREATE ROLE {self.role} LOGIN"))
            conn.execute(sa.text(f"GRANT ALL ON SCHEMA {self.schema} TO {self.role}"))
        base = pg_url.split("://", 1)[1].split("@", 1)[1]
        self.url = f"postgresql://{self.role}@{base}"

    def down(self) -> None:
        """NOLOGIN committed first, then the role's sessions ended: a login in between (a
        server's second worker still starting on a loaded machine) would otherwise outlive the
        outage, as when both were one transaction."""
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"ALTER ROLE {self.role} NOLOGIN"))
        end_sessions(self.admin, self.role)

    def up(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"ALTER ROLE {self.role} LOGIN"))

    def logged_ids(self) -> list[str]:
        with self.admin.connect() as conn:
            sql = f"SELECT id FROM {self.schema}.sw_predictions"
            return [r[0] for r in conn.execute(sa.text(sql))]

    def drop(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {self.role}"))
            conn.execute(sa.text(f"DROP ROLE {self.role}"))
        self.admin.dispose()


@pytest.fixture
def outage(pg_url: str) -> Iterator[Outage]:
    o = Outage(pg_url)
    yield o
    o.drop()


def load(server: Server, registry: Path, seconds: float, clients: int = 4) -> list[str]:
    """Predictions answered by `clients` concurrent clients in `seconds`; none may fail."""
    answered: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=hammer, args=(server.url, registry, stop, answered, errors))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    assert errors == [], errors[:3]
    return answered


def test_store_down_sigterm_restart_on_the_same_spool_store_up(
    server_env: dict[str, str], registry_copy: Path, outage: Outage, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    env = {
        **server_env,
        "SERVEWATCH_DATABASE_URL": outage.url,
        "SERVEWATCH_SPOOL_DIR": str(spool),
        "SERVEWATCH_LOG_FLUSH_MS": "50",
    }
    first = StoreDownServer(env, workers=2)  # the store is up: the schema is created
    outage.down()
    try:
        answered = load(first, registry_copy, 2.0)
    finally:
        out_first = first.stop()  # SIGTERM while the store is down: the queues go to the spool
    assert answered, out_first[-2000:]
    assert outage.logged_ids() == []
    on_disk = {f.parent.name for f in Spool.all_files(spool)}
    assert on_disk, out_first[-2000:]

    second = StoreDownServer(env, workers=1)  # same spool, store still down, one worker fewer
    try:
        answered += load(second, registry_copy, 1.0)
        outage.up()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(outage.logged_ids()) < len(answered):
            time.sleep(0.2)
    finally:
        out_second = second.stop()
    ids = outage.logged_ids()
    print(  # noqa: T201
        f"answered {len(answered)} across the restart; spool folders left by the first run: "
        f"{sorted(on_disk)}; logged {len(ids)}"
    )
    assert len(ids) == len(set(ids))  # nothing twice
    assert set(ids) == set(answered), (out_first + out_second)[-3000:]  # nothing lost
    assert Spool.all_files(spool) == []  # every folder replayed, the dead worker's too
