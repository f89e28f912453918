"""Logs created by older releases gain the new columns, with their rows kept and usable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitoring.window import read_window
from predlog.store import PredictionStore, normalise_url, prediction_rows

OLD_TABLE = (
    "CREATE TABLE sw_predictions (id VARCHAR(32) PRIMARY KEY, model VARCHAR(64) NOT NULL, "
    "version INTEGER NOT NULL, created_at FLOAT NOT NULL, inputs TEXT NOT NULL, "
    "prediction TEXT NOT NULL, probabilities TEXT, latency_ms FLOAT NOT NULL, "
    "shadow BOOLEAN NOT NULL)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/old.db"
    return str(request.getfixturevalue("pg_url"))


def test_an_old_log_gains_ingest_times_and_its_rows_stay_in_windows(url: str) -> None:
    engine = sa.create_engine(normalise_url(url))
    old_time = time.time() - 86_400
    with engine.begin() as conn:  # the first release's table, with rows in it
        conn.execute(sa.text(OLD_TABLE))
        for i in range(5):
            conn.execute(
                sa.text(
                    "INSERT INTO sw_predictions VALUES "
                    "(:id, 'm', 1, :t, '{}', '\"yes\"', NULL, 1.0, false)"
                ),
                {"id": f"{i:032x}", "t": old_time + i},
            )
    engine.dispose()
    store = PredictionStore(url)
    store.create_schema()
    store.create_schema()  # idempotent
    new = prediction_rows(
        ids=["f" * 32], model="m", version=1, created_at=time.time(), inputs=[{}],
        predictions=["no"], probabilities=None, latency_ms=1.0,
    )  # fmt: skip
    before = time.time()
    store.write_predictions(new)
    with store.engine.connect() as conn:
        stamped = dict(conn.execute(sa.text("SELECT id, ingested_at FROM sw_predictions")).all())
    assert [stamped[f"{i:032x}"] for i in range(5)] == [old_time + i for i in range(5)]
    assert before - 1 <= stamped["f" * 32] <= time.time() + 1  # the database's clock
    everything = read_window(
        store, model="m", version=1, since=None, last=None, cap=100, classes=None
    )
    assert everything.total_rows == 6 and len(everything.predictions) == 6
    after_old = read_window(
        store, model="m", version=1, since=old_time + 4, last=None, cap=100, classes=None
    )
    assert after_old.predictions == ["no"]
    store.engine.dispose()


def test_rows_an_older_release_writes_after_the_migration_are_stamped_for_a_later_window(
    url: str,
) -> None:
    """During a rolling update old pods keep inserting without `ingested_at`: on SQLite a
    monitoring run stamps them, so they land in a window instead of never matching one; on
    PostgreSQL the partitioned table's column default stamps them as they arrive (it is the
    partition key and cannot be empty)."""
    store = PredictionStore(url)
    store.create_schema()
    with store.engine.begin() as conn:  # the old release's INSERT: no ingested_at
        conn.execute(
            sa.text(
                "INSERT INTO sw_predictions (id, model, version, created_at, inputs, prediction, "
                "probabilities, latency_ms, shadow) VALUES "
                "(:id, 'm', 1, :t, '{}', '\"yes\"', NULL, 1.0, false)"
            ),
            {"id": "e" * 32, "t": time.time()},
        )
    cutoff = store.now()
    if store.engine.dialect.name == "postgresql":
        assert store.stamp_unstamped("m") == 0  # stamped by the default at insert
    else:
        assert read_window(store, model="m", version=1, since=cutoff - 1, last=None, cap=10,
                           classes=None).total_rows == 0  # fmt: skip
        assert store.stamp_unstamped("m") == 1 and store.stamp_unstamped("m") == 0
    later = read_window(store, model="m", version=1, since=cutoff - 1, last=None, cap=10,
                        classes=None)  # fmt: skip
    assert later.total_rows == 1
    store.engine.dispose()


def test_a_store_that_was_down_at_start_gets_its_tables_on_the_first_write(tmp_path: Path) -> None:
    """The service creates the schema at start; when the store was unreachable then, the first
    write after it comes back creates it, instead of every write failing on a missing table."""
    store = PredictionStore(f"sqlite:///{tmp_path}/late.db")  # create_schema never ran
    store.write_predictions(
        prediction_rows(
            ids=["d" * 32],
            model="m",
            version=1,
            created_at=time.time(),
            inputs=[{}],
            predictions=["no"],
            probabilities=None,
            latency_ms=1.0,
        )  # fmt: skip
    )
    assert store.existing_ids("m", ["d" * 32]) == {"d" * 32}
    store.engine.dispose()
