"""LogWriter: prediction rows leave the request path and reach the store in batches.

Rows wait in a bounded in-memory queue; a writer thread inserts them in batches. When the store
fails, the batch goes to a spool of files on local disk (bounded in bytes) and is replayed when
the store answers again. Inserts ignore ids already present, so a replayed batch never doubles a
row. `close()` drains everything (to the store, or to the spool if it is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from service import metrics
from service.store import PredictionStore

log = logging.getLogger("servewatch.log")


class LogFull(Exception):
    """Both the queue and the disk spool are full: the prediction must not be answered."""


class Spool:
    """Batches on local disk, one file each, written atomically (temp file + rename)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self.rows = sum(self._count(p) for p in self.files())

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.jsonl"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    @staticmethod
    def _count(path: Path) -> int:
        with contextlib.suppress(OSError):
            return sum(1 for _ in path.open("rb"))
        return 0

    def append(self, rows: list[dict[str, Any]]) -> bool:
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if self.size() + len(data) > self.max_bytes:
            return False
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        tmp = self.folder / f".{name}.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / name)
        self.rows += len(rows)
        return True

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def remove(self, path: Path, rows: int) -> None:
        path.unlink(missing_ok=True)
        self.rows = max(0, self.rows - rows)


class RecentIds:
    """Ids this process answered lately, so feedback can join rows not yet flushed.

    Kept as a few generations of sets (adding a request's ids is one C-level `set.update`);
    when the newest is full the oldest is dropped, so between 3/4 of `capacity` and all of it
    are remembered.
    """

    GENERATIONS = 4

    def __init__(self, capacity: int = 200_000) -> None:
        self._per_gen = max(1, capacity // self.GENERATIONS)
        self._gens: deque[set[str]] = deque([set()])
        self._lock = threading.Lock()

    def add(self, ids: list[str]) -> None:
        with self._lock:
            newest = self._gens[-1]
            newest.update(ids)
            if len(newest) >= self._per_gen:
                self._gens.append(set())
                if len(self._gens) > self.GENERATIONS:
                    self._gens.popleft()

    def __contains__(self, item: object) -> bool:
        return any(item in gen for gen in list(self._gens))


class LogWriter:
    def __init__(
        self,
        store: PredictionStore,
        spool: Spool,
        *,
        batch_rows: int,
        flush_s: float,
        max_rows: int,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.retry_s = retry_s
        self.recent = RecentIds()
        self.store_up = True
        self._buf: deque[dict[str, Any]] = deque()
        # Durable mode (group commit): an ack fires once every row up to its sequence number is
        # in the store or the fsynced spool.
        self._seq_in = 0
        self._seq_done = 0
        self._acks: deque[tuple[int, Callable[[], None]]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._last_failure = 0.0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        metrics.LOG_STORE_UP.set(1)
        metrics.LOG_SPOOL_ROWS.set(spool.rows)

    def start(self) -> None:
        self._thread.start()

    def try_put(self, rows: list[dict[str, Any]], ack: Callable[[], None] | None = None) -> bool:
        with self._cond:
            if len(self._buf) + len(rows) > self.max_rows:
                return False
            self._buf.extend(rows)
            self._seq_in += len(rows)
            metrics.LOG_QUEUE_ROWS.set(len(self._buf))
            if ack is not None:
                self._acks.append((self._seq_in, ack))
                self._cond.notify()  # group commit: write what is queued now, no flush delay
            elif len(self._buf) >= self.batch_rows:
                self._cond.notify()
        self.recent.add([r["id"] for r in rows])
        return True

    async def put(
        self, rows: list[dict[str, Any]], *, durable: bool = False, wait_s: float = 2.0
    ) -> None:
        """Queue rows; push back on the caller while the queue is full, then use the spool.

        durable=True returns only once the rows are in the store or the fsynced spool, so a
        SIGKILL after the answer cannot lose them (rows of concurrent requests share a commit).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] | None = loop.create_future() if durable else None

        def ack() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))  # type: ignore[union-attr]

        deadline = time.monotonic() + wait_s
        while not self.try_put(rows, ack if done is not None else None):
            if time.monotonic() >= deadline:
                ok = await asyncio.to_thread(self._spool_direct, rows)
                if not ok:
                    raise LogFull("prediction log queue and disk spool are full")
                return  # the spool file is fsynced: durable already
            await asyncio.sleep(0.005)
        if done is not None:
            await done

    def _spool_direct(self, rows: list[dict[str, Any]]) -> bool:
        with self._cond:  # one writer of the spool at a time
            ok = self.spool.append(rows)
        if ok:
            self.recent.add([r["id"] for r in rows])
            metrics.LOG_SPOOL_ROWS.set(self.spool.rows)
        return ok

    def _take(self) -> list[dict[str, Any]]:
        n = min(self.batch_rows, len(self._buf))
        batch = [self._buf.popleft() for _ in range(n)]
        metrics.LOG_QUEUE_ROWS.set(len(self._buf))
        return batch

    def _persisted(self, rows: int) -> None:
        """`rows` more rows (in queue order) are safe: fire the acks they complete."""
        fire = []
        with self._cond:
            self._seq_done += rows
            while self._acks and self._acks[0][0] <= self._seq_done:
                fire.append(self._acks.popleft()[1])
        for ack in fire:
            ack()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stop and len(self._buf) < self.batch_rows and not self._acks:
                    self._cond.wait(self.flush_s)
                batch = self._take()
                stopping = self._stop and not self._buf
            if batch:
                self._write(batch)
            self._replay_spool()
            if stopping and not batch:
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        if not self.store_up and time.monotonic() - self._last_failure < self.retry_s:
            self._to_spool(batch)
            return
        try:
            self.store.write_predictions(batch)
        except Exception as exc:
            self._mark_down(exc)
            self._to_spool(batch)
            return
        self._mark_up()
        metrics.LOG_ROWS_WRITTEN.inc(len(batch))
        self._persisted(len(batch))

    def _to_spool(self, batch: list[dict[str, Any]]) -> None:
        with self._cond:
            ok = self.spool.append(batch)
        if ok:
            self._persisted(len(batch))
        else:
            # Spool full: keep the rows in memory (front of the queue) rather than lose them.
            with self._cond:
                self._buf.extendleft(reversed(batch))
            time.sleep(self.retry_s / 4)
        metrics.LOG_SPOOL_ROWS.set(self.spool.rows)

    def _replay_spool(self) -> None:
        if not self.spool.rows or (
            not self.store_up and time.monotonic() - self._last_failure < self.retry_s
        ):
            return
        for path in self.spool.files()[:20]:
            try:
                rows = Spool.read(path)
                self.store.write_predictions(rows)
            except FileNotFoundError:
                continue
            except Exception as exc:
                self._mark_down(exc)
                return
            self._mark_up()
            self.spool.remove(path, len(rows))
            metrics.LOG_ROWS_WRITTEN.inc(len(rows))
            metrics.LOG_SPOOL_ROWS.set(self.spool.rows)

    def _mark_down(self, exc: Exception) -> None:
        if self.store_up:
            log.warning(
                "prediction log store unreachable, spooling to %s: %s",
                self.spool.folder,
                str(exc).splitlines()[0][:200],
            )
        self.store_up = False
        self._last_failure = time.monotonic()
        metrics.LOG_WRITE_FAILURES.inc()
        metrics.LOG_STORE_UP.set(0)

    def _mark_up(self) -> None:
        if not self.store_up:
            log.info("prediction log store is back")
        self.store_up = True
        metrics.LOG_STORE_UP.set(1)

    def close(self, timeout_s: float = 30.0) -> None:
        """Drain the queue (to the store, or the spool when it is down) and stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._buf:  # the store is hanging: the rows go to disk, never away
            rows = list(self._buf)
            self._buf.clear()
            if self.spool.append(rows):
                self._persisted(len(rows))
            else:
                log.error("log writer: %d rows could not be saved at shutdown", len(rows))
