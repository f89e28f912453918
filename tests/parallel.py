"""The suite on several pytest-xdist workers: a PostgreSQL database per worker, files kept whole."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_ENV = "SERVEWATCH_TEST_POSTGRES_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
REQUIRE_PG = "SERVEWATCH_REQUIRE_POSTGRES"


def worker_database_url(url: str, worker: str, run: str) -> str:
    """`url` with its database renamed `<database>_<worker>_<run>` (e.g. test_gw0_1a2b3c4d)."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "postgres"
    name = re.sub(r"[^a-z0-9_]", "_", f"{database}_{worker}_{run}".lower())[:63]
    return urlunsplit(parts._replace(path="/" + name))


def _admin(url: str) -> Any:
    import sqlalchemy as sa

    from predlog.store import normalise_url

    engine = sa.create_engine(
        normalise_url(url), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    return engine


def create_worker_database(config: pytest.Config) -> str | None:
    """On an xdist worker, a database of its own on the server of SERVEWATCH_TEST_POSTGRES_URL,
    which the worker's tests then use (the variable is set to it for this process and the
    servers it starts). Session advisory locks (monitoring's per-model lock) are per database, so
    two workers' tests never take each other's. None (nothing changed) off xdist and when the
    server is unreachable: the tests then skip, or fail where SERVEWATCH_REQUIRE_POSTGRES is set,
    as without workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    workerinput = getattr(config, "workerinput", None)
    if not worker or workerinput is None:
        return None
    import sqlalchemy as sa

    url = os.environ.get(PG_ENV, PG_DEFAULT)
    admin = _admin(url)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError:
        admin.dispose()
        return None
    own = worker_database_url(url, worker, str(workerinput["testrunuid"])[:8])
    name = urlsplit(own).path.lstrip("/")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.DBAPIError as exc:
        raise pytest.UsageError(
            f"xdist worker {worker}: cannot create its PostgreSQL database {name!r} on the server "
            f"of {PG_ENV} ({exc.orig}); give the user CREATEDB, or run the suite on one process "
            "(pytest -n 0)"
        ) from exc
    finally:
        admin.dispose()
    os.environ[PG_ENV] = own
    return url


def drop_worker_database(server_url: str) -> None:
    """Drop the worker's database (its connections first: a server a test left is gone)."""
    import sqlalchemy as sa

    name = urlsplit(os.environ[PG_ENV]).path.lstrip("/")
    admin = _admin(server_url)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
        os.environ[PG_ENV] = server_url


def unit_of_work(nodeid: str) -> str:
    """The unit a test is scheduled in: its xdist_group (the "@group" suffix that `--dist
    loadgroup` gives the node ids of marked tests), else its file."""
    if nodeid.rfind("@") > nodeid.rfind("]"):  # not an "@" inside a parameter's id
        return "group:" + nodeid.rsplit("@", 1)[-1]
    return nodeid.split("::", 1)[0]


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` as this suite means it: each test file is one unit of work (so a
    module-scoped fixture, often a trained model, is built once, not once per worker), and files
    marked with one xdist_group (the ones that must not overlap) are one unit together. Units go
    out most tests first (xdist's loadscope order)."""
    from xdist.scheduler import LoadScopeScheduling

    class FileOrGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return FileOrGroup(config, log)
