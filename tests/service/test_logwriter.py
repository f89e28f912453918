"""The log writer loses nothing: store outages go to the disk spool and come back once."""

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from predlog.logwriter import LogFull, LogWriter, Spool
from predlog.store import PredictionStore


class FlakyStore(PredictionStore):
    """A real SQLite store whose writes fail while `down` is set (an injected outage)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = threading.Event()
        self.calls = 0

    def write_predictions(self, rows: Any) -> None:
        self.calls += 1
        if self.down.is_set():
            raise ConnectionError("store is down")
        super().write_predictions(rows)


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{i:032x}",
            "model": "m",
            "version": 1,
            "created_at": time.time(),
            "inputs": "{}",
            "prediction": "1",
            "probabilities": None,
            "latency_ms": 1.0,
            "shadow": False,
        }
        for i in range(start, start + n)
    ]


def wait_for(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cond()


@pytest.fixture
def store(tmp_path: Path) -> FlakyStore:
    s = FlakyStore(f"sqlite:///{tmp_path}/log.db")
    s.create_schema()
    return s


def test_rows_wait_on_disk_during_an_outage_and_arrive_once(
    store: FlakyStore, tmp_path: Path
) -> None:
    writer = LogWriter(
        store,
        Spool(tmp_path / "spool", 10_000_000),
        batch_rows=50,
        flush_s=0.02,
        max_rows=1000,
        retry_s=0.1,
    )
    writer.start()
    assert writer.try_put(rows(100, 0))
    wait_for(lambda: store.count_predictions() == 100)
    store.down.set()
    for k in range(5):
        assert writer.try_put(rows(100, 100 + 100 * k))
    wait_for(lambda: writer.spool.rows == 500)
    assert store.count_predictions() == 100
    assert not writer.store_up
    store.down.clear()
    wait_for(lambda: store.count_predictions() == 600)
    writer.close()
    assert writer.spool.rows == 0 and writer.spool.files() == []
    assert store.count_predictions() == 600  # replayed, none twice


def test_close_drains_the_queue(store: FlakyStore, tmp_path: Path) -> None:
    writer = LogWriter(
        store, Spool(tmp_path / "spool", 10_000_000), batch_rows=10_000, flush_s=60, max_rows=10_000
    )
    writer.start()
    assert writer.try_put(rows(777))
    writer.close()
    assert store.count_predictions() == 777


def test_close_during_an_outage_leaves_rows_in_the_spool_for_the_next_start(
    store: FlakyStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    store.down.set()
    writer = LogWriter(
        store,
        Spool(spool_dir, 10_000_000),
        batch_rows=10,
        flush_s=0.01,
        max_rows=1000,
        retry_s=0.05,
    )
    writer.start()
    writer.try_put(rows(95))
    writer.close()
    assert store.count_predictions() == 0
    store.down.clear()
    again = LogWriter(
        store, Spool(spool_dir, 10_000_000), batch_rows=10, flush_s=0.01, max_rows=1000
    )
    assert again.spool.rows == 95
    again.start()
    wait_for(lambda: store.count_predictions() == 95)
    again.close()


def test_a_full_queue_pushes_back_then_spools_then_refuses(
    store: FlakyStore, tmp_path: Path
) -> None:
    store.down.set()
    writer = LogWriter(
        store, Spool(tmp_path / "spool", 3000), batch_rows=10_000, flush_s=60, max_rows=10
    )  # thread not started: nothing drains the queue
    assert writer.try_put(rows(10))
    assert not writer.try_put(rows(1, 10))
    asyncio.run(writer.put(rows(5, 20), wait_s=0.05))  # spooled directly
    assert writer.spool.rows == 5
    with pytest.raises(LogFull):
        asyncio.run(writer.put(rows(50, 40), wait_s=0.05))


def test_spool_files_are_whole_or_absent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000)
    spool.append(rows(3))
    half = spool.folder / ".half.jsonl.tmp"
    half.write_bytes(b'{"id": "trunc')  # a crash mid-write
    assert len(spool.files()) == 1
    assert [r["id"] for r in Spool.read(spool.files()[0])] == [f"{i:032x}" for i in range(3)]
    spool.close()
    again = Spool(tmp_path, 1_000_000)  # the next owner of the folder
    assert again.folder == spool.folder and again.rows == 3 and not half.exists()


def test_durable_put_returns_only_after_the_commit(store: FlakyStore, tmp_path: Path) -> None:
    writer = LogWriter(
        store,
        Spool(tmp_path / "spool", 10_000_000),
        batch_rows=10_000,
        flush_s=60,
        max_rows=100_000,
    )
    writer.start()

    async def scenario() -> list[int]:
        counts = []

        async def one(k: int) -> None:
            await writer.put(rows(5, 5 * k), durable=True)
            counts.append(store.count_predictions())  # this request's rows are already stored

        await asyncio.gather(*(one(k) for k in range(20)))
        return counts

    counts = asyncio.run(scenario())
    writer.close()
    assert min(counts) >= 5 and store.count_predictions() == 100
    assert store.calls < 20  # concurrent requests shared commits (group commit)


def test_durable_put_during_an_outage_is_acknowledged_by_the_fsynced_spool(
    store: FlakyStore, tmp_path: Path
) -> None:
    store.down.set()
    writer = LogWriter(
        store,
        Spool(tmp_path / "spool", 10_000_000),
        batch_rows=100,
        flush_s=60,
        max_rows=1000,
        retry_s=10,
    )
    writer.start()
    asyncio.run(writer.put(rows(7), durable=True))
    assert writer.spool.rows == 7
    writer.close()


def test_a_log_created_before_shadow_rows_is_migrated(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the table as the first release created it: no ref_id
        conn.execute(
            sa.text(
                "CREATE TABLE sw_predictions (id VARCHAR(32) PRIMARY KEY, "
                "model VARCHAR(64) NOT NULL, "
                "version INTEGER NOT NULL, created_at FLOAT NOT NULL, inputs TEXT NOT NULL, "
                "prediction TEXT NOT NULL, probabilities TEXT, latency_ms FLOAT NOT NULL, "
                "shadow BOOLEAN NOT NULL)"
            )
        )
    store = PredictionStore(url)
    store.create_schema()
    store.write_predictions([{**rows(1)[0], "shadow": True, "ref_id": "a" * 32}])
    assert store.read_window("m")[0]["ref_id"] == "a" * 32


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/log.db"
    return str(request.getfixturevalue("pg_url"))


def test_batched_inserts_skip_what_is_there_and_keep_every_value(any_store_url: str) -> None:
    """Multi-row INSERTs (SQLite) and COPY through a staging table (PostgreSQL), in chunks:
    a re-sent batch doubles nothing, and a row spooled by an older release (no ref_id) fits."""
    store = PredictionStore(any_store_url)
    store.create_schema()
    first = rows(1234)
    first[7] = {**first[7], "shadow": True, "ref_id": "f" * 32, "probabilities": '{"1": 0.25}'}
    store.write_predictions(first)
    old_release = {k: v for k, v in rows(1, start=5000)[0].items() if k != "ref_id"}
    store.write_predictions(first[:600] + rows(10, start=2000) + [old_release])
    assert store.count_predictions() == 1234 + 10 + 1
    by_id = {r["id"]: r for r in store.read_window("m")}
    seventh = by_id[first[7]["id"]]
    assert seventh["shadow"] and seventh["ref_id"] == "f" * 32
    assert seventh["probabilities"] == '{"1": 0.25}'
    assert by_id[old_release["id"]]["ref_id"] is None
    store.dispose()


def test_a_batch_is_stamped_once_by_the_databases_clock_and_stored_as_before(
    tmp_path: Path,
) -> None:
    """SQLite: the ingest time is read from the database's clock once per batch and bound, every
    row of the batch (both chunks of it) gets that one value; the values bound in their cheaper
    form are stored as before: `shadow` as the integers 0 and 1, a missing `ref_id` as NULL."""
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    batch = [{**r, "created_at": r["created_at"] - 3600} for r in rows(700)]  # two chunks
    batch[3] = {**batch[3], "shadow": True, "ref_id": "f" * 32}
    before = store.now()
    store.write_predictions(batch)
    after = store.now()
    with store.engine.connect() as conn:
        stamps = conn.exec_driver_sql("SELECT DISTINCT ingested_at FROM sw_predictions").all()
        stored = conn.exec_driver_sql(
            "SELECT typeof(shadow), shadow, typeof(ref_id), count(*) FROM sw_predictions "
            "GROUP BY 1, 2, 3 ORDER BY 2"
        ).all()
    assert len(stamps) == 1 and before <= stamps[0][0] <= after
    assert [tuple(r) for r in stored] == [("integer", 0, "null", 699), ("integer", 1, "text", 1)]
    assert store.read_window("m", limit=1000)[0]["shadow"] in (False, True)
    store.dispose()
