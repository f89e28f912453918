"""The log writer cannot die silently, no await on it is unbounded, workers never share spool files.

Faults are injected into real objects (a SQLite store, a spool on disk, a second process on the
same spool folder); each test fails on a writer without supervision, ownership or bounded waits.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from predlog.logwriter import LogUnavailable, LogWriter, Spool
from service.config import Settings
from service.main import create_app
from tests.service.conftest import example
from tests.service.test_logwriter import FlakyStore, rows, wait_for

TASK_FAILURES = "servewatch_background_task_failures_total"


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class FaultySpool(Spool):
    """A real spool whose next `fail` appends raise `error` (e.g. the FileNotFoundError a
    stat of a file another worker had just replayed and deleted used to raise)."""

    def __init__(self, root: Path, max_bytes: int, error: BaseException, fail: int) -> None:
        super().__init__(root, max_bytes)
        self.error = error
        self.fail = fail

    def append(self, batch: list[dict[str, Any]]) -> bool:
        if self.fail > 0:
            self.fail -= 1
            raise self.error
        return super().append(batch)


@pytest.fixture
def store(tmp_path: Path) -> FlakyStore:
    s = FlakyStore(f"sqlite:///{tmp_path}/log.db")
    s.create_schema()
    return s


def test_a_crash_in_the_spool_fallback_keeps_the_batch_and_restarts_the_writer(
    store: FlakyStore, tmp_path: Path
) -> None:
    store.down.set()
    vanished = FileNotFoundError(2, "No such file or directory", "spool/other-worker.jsonl")
    spool = FaultySpool(tmp_path / "spool", 10_000_000, vanished, fail=2)
    restarts = sample("servewatch_log_writer_restarts_total")
    labelled = REGISTRY.get_sample_value(TASK_FAILURES, {"task": "log_writer"}) or 0.0
    writer = LogWriter(store, spool, batch_rows=50, flush_s=0.02, max_rows=1000, retry_s=0.05)
    writer.start()
    assert writer.try_put(rows(50))
    wait_for(lambda: sample("servewatch_log_writer_restarts_total") >= restarts + 2)
    # counted as every supervised background task is (service/supervise.py)
    assert REGISTRY.get_sample_value(TASK_FAILURES, {"task": "log_writer"}) == labelled + 2
    wait_for(lambda: writer.spool.rows == 50)  # the third attempt spooled the batch it held
    assert writer._thread.is_alive() and writer.problem() is None
    assert sample("servewatch_log_writer_up") == 1
    store.down.clear()
    wait_for(lambda: store.count_predictions() == 50)
    writer.close()
    assert store.count_predictions() == 50


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"log_ack_timeout_s": 0.5})


def broken(*_args: Any) -> Any:
    raise RuntimeError("injected fault")


def test_readiness_reports_a_crash_looping_writer_until_it_recovers(
    app_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(app_settings)) as c:
        writer: LogWriter = c.app.state.sw.writer  # type: ignore[attr-defined]
        assert c.get("/readyz").status_code == 200
        restarts = sample("servewatch_log_writer_restarts_total")
        monkeypatch.setattr(writer.store, "write_predictions", broken)
        monkeypatch.setattr(writer.spool, "append", broken)
        r = c.post("/v1/models/demo/predict", json={"instances": [example()]})
        assert r.status_code == 200
        wait_for(lambda: sample("servewatch_log_writer_restarts_total") >= restarts + 2)
        for path in ("/readyz", "/readyz?store=false"):  # the writer is not the store
            res = c.get(path)
            assert res.status_code == 503
            assert any("log writer crashed" in p for p in res.json()["problems"])
        assert sample("servewatch_log_writer_up") == 0
        monkeypatch.undo()  # the faults are gone
        wait_for(lambda: c.get("/readyz").status_code == 200)
        assert writer.store.count_predictions() == 1  # the batch the crashes held
        assert sample("servewatch_log_writer_up") == 1


class Die(BaseException):
    """Not an Exception: nothing in the writer may catch it, so its thread ends."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_writer_makes_the_service_unready_and_sync_requests_fail_fast(
    app_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = app_settings.model_copy(update={"log_durability": "sync"})
    with TestClient(create_app(sync)) as c:
        writer: LogWriter = c.app.state.sw.writer  # type: ignore[attr-defined]

        def die(*_args: Any) -> None:
            raise Die

        monkeypatch.setattr(writer.store, "write_predictions", die)
        timeouts = sample("servewatch_log_ack_timeouts_total")
        # bounded, not a hang: a hang would end in the client's timeout, not a 503
        r = c.post("/v1/models/demo/predict", json={"instances": [example()]})
        assert r.status_code == 503
        assert sample("servewatch_log_ack_timeouts_total") == timeouts + 1
        wait_for(lambda: not writer._thread.is_alive())
        res = c.get("/readyz?store=false")
        assert res.status_code == 503
        assert "prediction log writer is not running" in res.json()["problems"]
        assert sample("servewatch_log_writer_up") == 0
        monkeypatch.undo()
    # close() saved the batch the dead thread held: the next start replays it
    again = LogWriter(
        writer.store, Spool(sync.spool_dir, 10_000_000), batch_rows=10, flush_s=0.01, max_rows=100
    )
    assert again.spool.rows == 1
    again.start()
    wait_for(lambda: writer.store.count_predictions() == 1)
    again.close()


def test_a_durable_put_is_bounded_when_no_acknowledgement_comes(
    store: FlakyStore, tmp_path: Path
) -> None:
    writer = LogWriter(
        store, Spool(tmp_path / "spool", 10_000_000), batch_rows=100, flush_s=60, max_rows=1000
    )  # never started: nothing will acknowledge
    writer.ack_timeout_s = 0.2

    async def put() -> None:
        await asyncio.wait_for(writer.put(rows(5), durable=True), 5)

    with pytest.raises(LogUnavailable):  # the ack timeout, well before wait_for's 5 s
        asyncio.run(put())
    writer.close()  # the rows were queued: they are saved, not dropped
    assert writer.spool.rows == 5


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from predlog.logwriter import LogWriter, Spool
    from predlog.store import PredictionStore
    from tests.service.test_logwriter import rows

    root = Path(sys.argv[1])
    down = PredictionStore("postgresql://nobody@127.0.0.1:1/none")  # nothing listens there
    writer = LogWriter(down, Spool(root, 10_000_000), batch_rows=10, flush_s=0.01,
                       max_rows=1000, retry_s=0.05)
    writer.start()
    writer.try_put(rows(30, 1000))
    while writer.spool.rows < 30:
        time.sleep(0.01)
    print("spooled", flush=True)
    sys.stdin.read()  # lives until the test ends it
    """
)


@pytest.fixture
def other_worker(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A second worker process on the same spool root, with its store down."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "spool")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "spooled"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_live_workers_spool_is_its_own_and_a_dead_ones_is_adopted_once(
    store: FlakyStore, tmp_path: Path, other_worker: subprocess.Popen[str]
) -> None:
    writer = LogWriter(
        store,
        Spool(tmp_path / "spool", 10_000_000),
        batch_rows=10,
        flush_s=0.01,
        max_rows=1000,
        retry_s=0.05,
    )
    assert writer.spool.rows == 0  # the other worker's rows are not counted here
    writer.start()
    assert writer.try_put(rows(20))
    wait_for(lambda: store.count_predictions() == 20)
    time.sleep(0.5)  # ten orphan scans: the live worker's files stay untouched
    assert store.count_predictions() == 20
    other_worker.kill()  # SIGKILL by pid: its flock goes with it
    other_worker.wait()
    wait_for(lambda: store.count_predictions() == 50)
    wait_for(lambda: not list((tmp_path / "spool").rglob("*.jsonl")))
    writer.close()
    assert store.count_predictions() == 50


def test_a_corrupt_spool_file_is_set_aside_and_does_not_block_the_others(
    store: FlakyStore, tmp_path: Path
) -> None:
    writer = LogWriter(
        store, Spool(tmp_path / "spool", 10_000_000), batch_rows=10, flush_s=0.01, max_rows=100
    )
    bad = writer.spool.folder / f"{0:020d}-0-000000.jsonl"  # sorts first: replayed first
    bad.write_bytes(b'{"id": "trunc\n')
    assert writer.spool.append(rows(10))
    writer.start()
    wait_for(lambda: store.count_predictions() == 10)
    writer.close()
    assert writer.store_up  # a bad file is not a store outage
    assert [p.name for p in bad.parent.iterdir() if p.suffix == ".bad"] == [bad.name + ".bad"]


def test_spooled_rows_the_store_refuses_are_set_aside_not_retried_forever(
    store: FlakyStore, tmp_path: Path
) -> None:
    """The store answers and refuses a row (a NOT NULL column empty): no retry will change
    that, so the file is kept as .bad and the files after it are replayed."""
    writer = LogWriter(
        store, Spool(tmp_path / "spool", 10_000_000), batch_rows=10, flush_s=0.01, max_rows=100
    )
    refused = [{**rows(1, start=500)[0], "model": None}]
    assert writer.spool.append(refused)
    assert writer.spool.append(rows(10))
    writer.start()
    wait_for(lambda: store.count_predictions() == 10)
    writer.close()
    assert writer.store_up
    assert [p.suffix for p in writer.spool.folder.iterdir() if p.name.endswith(".bad")] == [".bad"]


def test_concurrent_appends_and_replays_in_one_folder_cannot_happen(tmp_path: Path) -> None:
    """Two spools on one root (two workers) get two folders: neither lists, counts or
    deletes the other's files, so a stat of a just-deleted file cannot occur."""
    a = Spool(tmp_path, 10_000_000)
    b = Spool(tmp_path, 10_000_000)
    assert a.folder != b.folder
    a.append(rows(3))
    b.append(rows(4, 100))
    assert [len(Spool.read(p)) for p in a.files()] == [3]
    assert [len(Spool.read(p)) for p in b.files()] == [4]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for p in b.files():
                b.remove(p, len(Spool.read(p)))
            b.append(rows(4, 100))

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(200):
            assert a.append(rows(1, 500))
    finally:
        stop.set()
        t.join()
    assert a.rows == 203


def test_a_hung_spool_disk_never_blocks_queueing(tmp_path: Path) -> None:
    """A spool write (fsync) that hangs must not hold the queue's lock: requests keep queueing
    on the event loop while it hangs."""
    store = FlakyStore(f"sqlite:///{tmp_path}/log.db")
    writer = LogWriter(
        store, Spool(tmp_path / "spool", 10_000_000), batch_rows=100, flush_s=60, max_rows=1000
    )  # not started: the test drives the spool write itself
    disk = threading.Event()
    entered = threading.Event()
    real_append = writer.spool.append

    def hung_append(batch: Any) -> bool:
        entered.set()
        disk.wait(30)  # the disk does not answer
        return bool(real_append(batch))

    writer.spool.append = hung_append  # type: ignore[method-assign]
    spooling = threading.Thread(target=writer._spool_direct, args=(rows(3),), daemon=True)
    spooling.start()
    assert entered.wait(10)
    queued = threading.Thread(target=writer.try_put, args=(rows(2, start=100),), daemon=True)
    queued.start()
    queued.join(10)  # a lock held across the hung write would keep it here
    finished = not queued.is_alive()
    disk.set()
    spooling.join(10)
    writer.close()
    assert finished, "try_put waited for the spool's disk"
