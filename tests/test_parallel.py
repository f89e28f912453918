"""The suite's own parallel running (tests/parallel.py): databases per worker, units of work."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import parallel
from tests.service.conftest import postgres_url, server_environment

ROOT = Path(__file__).resolve().parent.parent


def test_a_worker_database_is_the_url_with_its_database_renamed() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable"
    got = parallel.worker_database_url(url, "gw1", "1A2b3c4d")
    assert got == "postgresql://postgres@127.0.0.1:5432/test_gw1_1a2b3c4d?sslmode=disable"
    assert parallel.worker_database_url("postgresql://h/my-db", "gw0", "r").endswith("/my_db_gw0_r")


def test_a_unit_of_work_is_a_file_or_an_xdist_group() -> None:
    split = parallel.unit_of_work
    assert split("tests/a/test_x.py::test_one") == "tests/a/test_x.py"
    assert split("tests/a/test_x.py::Case::test_two[p1]") == "tests/a/test_x.py"
    assert split("tests/a/test_x.py::test_three[user@host]") == "tests/a/test_x.py"
    assert split("tests/d/test_c.py::test_run@deploy_serial") == "group:deploy_serial"
    assert split("tests/d/test_r.py::test_roll[pg]@deploy_serial") == "group:deploy_serial"


def test_the_container_and_rolling_update_files_never_overlap() -> None:
    for name in ("test_container.py", "test_rolling_update.py"):
        text = (ROOT / "tests/deploy" / name).read_text()
        assert 'pytest.mark.xdist_group("deploy_serial")' in text, name


def test_a_worker_gets_a_database_of_its_own_and_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    server = postgres_url()
    if server is None:
        pytest.skip(
            "no PostgreSQL server reachable at SERVEWATCH_TEST_POSTGRES_URL; CI requires it"
        )
    import sqlalchemy as sa

    monkeypatch.setenv(parallel.PG_ENV, server)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw7")
    run = os.urandom(4).hex()
    expected = parallel.worker_database_url(server, "gw7", run)
    config = SimpleNamespace(workerinput={"testrunuid": run})

    def exists(url: str) -> bool:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect():
                return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    try:
        assert parallel.create_worker_database(config) == server  # type: ignore[arg-type]
        assert os.environ[parallel.PG_ENV] == expected != server
        assert exists(expected)
        parallel.drop_worker_database(server)
        assert os.environ[parallel.PG_ENV] == server and not exists(expected)
    finally:  # a failed check leaves no database behind
        admin = sa.create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            name = expected.rsplit("/", 1)[1]
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_off_xdist_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    before = os.environ.get(parallel.PG_ENV)
    assert parallel.create_worker_database(SimpleNamespace()) is None  # type: ignore[arg-type]
    assert os.environ.get(parallel.PG_ENV) == before


def test_a_test_server_keeps_its_monitoring_files_out_of_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module-scoped fixture's server starts before the autouse fixture empties the Evidently
    workspace: without these, its monitoring loop wrote var/reports and var/evidently in the
    checkout, shared by the workers."""
    monkeypatch.delenv("SERVEWATCH_EVIDENTLY_WORKSPACE")
    monkeypatch.delenv("SERVEWATCH_MONITOR_REPORTS_DIR", raising=False)
    env = server_environment({"SERVEWATCH_SPOOL_DIR": str(tmp_path / "spool")})
    assert env["SERVEWATCH_MONITOR_REPORTS_DIR"] == str(tmp_path / "monitor-reports")
    assert env["SERVEWATCH_EVIDENTLY_WORKSPACE"] == ""
    named = {"SERVEWATCH_MONITOR_REPORTS_DIR": "/r", "SERVEWATCH_EVIDENTLY_WORKSPACE": "/e"}
    assert server_environment(named).items() >= named.items()
    bare = Path(server_environment({})["SERVEWATCH_MONITOR_REPORTS_DIR"])
    assert not bare.is_relative_to(ROOT)
