"""Through real HTTP (uvicorn on 127.0.0.1): SIGTERM under load, several workers, PostgreSQL."""

import re
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from predlog.store import PredictionStore
from tests.conftest import require_tool
from tests.service.conftest import Server, end_sessions, example


def hammer(
    url: str,
    registry: Path,
    stop: threading.Event,
    answered: list[str],
    errors: list[str],
    batch: int = 8,
) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            try:
                r = c.post(
                    "/v1/models/demo/predict", json={"instances": [example(registry)] * batch}
                )
            except httpx.HTTPError as exc:  # the server went away mid-request: not answered
                errors.append(type(exc).__name__)
                return
            if r.status_code == 200:
                answered.extend(p["prediction_id"] for p in r.json()["predictions"])
            else:
                errors.append(r.text)


def run_load(
    server: Server,
    registry: Path,
    seconds: float,
    clients: int = 8,
    sigterm: bool = False,
    kill: int | None = None,
) -> tuple[list[str], list[str], str]:
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
    output = server.stop() if sigterm else ""
    if kill is not None:
        output = server.stop(kill)
    stop.set()
    for t in threads:
        t.join()
    if not sigterm and kill is None:
        output = server.stop()
    return answered, errors, output


def test_sigterm_under_load_drains_the_queue_and_loses_nothing(
    server_env: dict[str, str], registry_copy: Path
) -> None:
    # A slow flush keeps thousands of rows queued at the moment SIGTERM arrives.
    env = {**server_env, "SERVEWATCH_LOG_FLUSH_MS": "5000", "SERVEWATCH_LOG_BATCH_ROWS": "100000"}
    server = Server(env)
    answered, _errors, output = run_load(server, registry_copy, 3.0, sigterm=True)
    assert len(answered) > 100
    store = PredictionStore(env["SERVEWATCH_DATABASE_URL"])
    logged = {r["id"] for r in store.read_window("demo")}
    assert set(answered) <= logged, output[-2000:]
    assert len(logged) == len(answered)


def metric_total(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_correctly_across_two_workers(
    server_env: dict[str, str], registry_copy: Path
) -> None:
    server = Server(server_env, workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(60):
                r = c.post(
                    "/v1/models/demo/predict",
                    json={"instances": [example(registry_copy)]},
                    headers={"connection": "close"},
                )
                assert r.status_code == 200
            text = c.get("/metrics").text
        assert metric_total(text, "servewatch_requests_total", model="demo", status="200") == 60
        assert metric_total(text, "servewatch_predictions_total", model="demo") == 60
        assert metric_total(text, "servewatch_model_info", model="demo", version="1") == 1
    finally:
        out = server.stop()
    assert len(set(re.findall(r"Started server process \[(\d+)\]", out))) == 2


def test_promtool_finds_no_problems_in_the_metrics(
    server_env: dict[str, str], registry_copy: Path
) -> None:
    promtool = require_tool("promtool")  # skips, or fails when SERVEWATCH_REQUIRE_TOOLS is set
    server = Server(server_env)
    try:
        with httpx.Client(base_url=server.url) as c:
            c.post("/v1/models/demo/predict", json={"instances": [example(registry_copy)]})
            c.post("/v1/models/demo/predict", json={"instances": [{"x1": "bad"}]})
            text = c.get("/metrics").text
    finally:
        server.stop()
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "" and res.stderr.strip() == ""


def test_prediction_log_in_postgresql(
    server_env: dict[str, str], registry_copy: Path, pg_url: str
) -> None:
    env = {**server_env, "SERVEWATCH_DATABASE_URL": pg_url}
    server = Server(env)
    answered, errors, _ = run_load(server, registry_copy, 1.5, clients=4)
    assert errors == [] and answered
    store = PredictionStore(pg_url)
    assert {r["id"] for r in store.read_window("demo")} == set(answered)
    store.dispose()


def test_postgresql_outage_during_load_loses_nothing_and_doubles_nothing(
    server_env: dict[str, str], registry_copy: Path, pg_url: str
) -> None:
    """A real outage: the service's role is locked out and its connections killed, then let back."""
    import time
    import uuid

    import sqlalchemy as sa

    from predlog.store import normalise_url

    admin = sa.create_engine(normalise_url(pg_url))
    role = f"sw_outage_{uuid.uuid4().hex[:8]}"
    schema = pg_url.rsplit("%3D", 1)[1]
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT ALL ON SCHEMA {schema} TO {role}"))
    base = pg_url.split("://", 1)[1].split("@", 1)[1]
    url = f"postgresql://{role}@{base}"
    env = {**server_env, "SERVEWATCH_DATABASE_URL": url, "SERVEWATCH_LOG_FLUSH_MS": "50"}
    server = Server(env)
    answered: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=hammer, args=(server.url, registry_copy, stop, answered, errors))
        for _ in range(4)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        with admin.begin() as conn:  # committed before the sessions end (end_sessions)
            conn.execute(sa.text(f"ALTER ROLE {role} NOLOGIN"))
        end_sessions(admin, role)
        time.sleep(2.5)
        during_outage = len(answered)
        with admin.begin() as conn:
            conn.execute(sa.text(f"ALTER ROLE {role} LOGIN"))
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        output = server.stop()
    try:
        assert errors == []
        assert during_outage > 0
        assert "unreachable, spooling" in output
        with admin.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.text(f"SELECT id FROM {schema}.sw_predictions"))]
        assert len(ids) == len(set(ids))  # none twice
        assert set(ids) == set(answered)  # none lost
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def logged_after_kill(env: dict[str, str]) -> set[str]:
    """Ids in the store plus those in the spool (replayed at the next start)."""
    from predlog.logwriter import Spool

    ids = {r["id"] for r in PredictionStore(env["SERVEWATCH_DATABASE_URL"]).read_window("demo")}
    for path in Spool.all_files(Path(env["SERVEWATCH_SPOOL_DIR"])):  # every worker's folder
        ids |= {r["id"] for r in Spool.read(path)}
    return ids


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_sigkill_under_load(
    server_env: dict[str, str], registry_copy: Path, durability: str
) -> None:
    """sync: a SIGKILL loses no answered prediction. async: at most the unflushed queue."""
    import signal

    env = {**server_env, "SERVEWATCH_LOG_DURABILITY": durability, "SERVEWATCH_LOG_FLUSH_MS": "200"}
    server = Server(env)
    answered, _errors, _ = run_load(server, registry_copy, 2.0, clients=8, kill=signal.SIGKILL)
    lost = set(answered) - logged_after_kill(env)
    print(f"durability={durability}: answered {len(answered)}, lost after SIGKILL {len(lost)}")  # noqa: T201
    assert len(answered) > 100
    if durability == "sync":
        assert lost == set()
    else:
        assert len(lost) <= 50_000  # bounded by SERVEWATCH_LOG_QUEUE_ROWS; measured in docs
