"""LogWriter: prediction rows leave the request path and reach the store in batches.

Rows wait in a bounded in-memory queue; a writer thread inserts them in batches. When the store
fails, the batch goes to a spool of files on local disk (bounded in bytes) and is replayed when
the store answers again. Inserts ignore ids already present, so a replayed batch never doubles a
row. `close()` drains everything (to the store, or to the spool if it is down).

Each writer owns one folder of the spool, held by an exclusive `flock` for its lifetime: no other
process lists, counts, replays or deletes its files while it lives. The kernel drops the lock when
the process ends (even on SIGKILL), so the folder of a stopped worker becomes an orphan that the
next writer to lock it replays (docs/reliability.md, "The log writer").

The writer loop runs under supervision: a crash puts the batch it held back at the front of the
queue, is logged and counted (`servewatch_log_writer_restarts_total`), and the loop starts again
after a backoff; `problem()` tells readiness while it is crashing or its thread is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from core.errors import ServewatchError, first_line
from predlog import metrics
from predlog.store import PredictionStore, SchemaGap

log = logging.getLogger("servewatch.log")

SLOT_PREFIX = "w-"
LOCK_FILE = ".lock"
REPLAY_FILES = 20
"""Spool files replayed per writer cycle, so a long spool never stalls the queue."""
MAX_RESTART_PAUSE_S = 30.0


class LogFull(ServewatchError):
    """The log cannot take the rows (queue and disk spool full): the prediction must not be
    answered. Handlers answer 503."""


class LogUnavailable(LogFull):
    """The log did not take the rows in time: no acknowledgement within `ack_timeout_s` in
    sync durability, or the direct spool write did not finish. A `LogFull`, so a handler of
    LogFull answers 503 too. The rows may still reach the log later (logged, never answered:
    the safe direction)."""


def try_lock(folder: Path) -> int | None:
    """An exclusive, non-blocking flock on `folder/.lock`: its descriptor, or None if held."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases its flock


def is_outage(exc: BaseException) -> bool:
    """The store is unreachable or unavailable (a retry may succeed), as opposed to the store
    answering that it refuses the rows (bad data: no retry will succeed). A log table that is
    missing (dropped, renamed) or cannot be created is an outage: it refuses any row."""
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

    outages: tuple[type[BaseException], ...] = (
        SchemaGap,
        OperationalError,
        InterfaceError,
        DisconnectionError,
        OSError,
        TimeoutError,
    )
    try:
        import psycopg

        outages += (psycopg.OperationalError, psycopg.InterfaceError)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return isinstance(exc, outages)


def _remove_temp(folder: Path) -> None:
    """Half-written temp files of a process that died mid-write (only ever whole files count)."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class Spool:
    """Batches on local disk, one file each, written atomically (temp file + rename).

    `root` is shared by every worker; this spool claims the first free `root/w-<k>` folder
    under an exclusive flock and only ever touches files there, so another worker's replay can
    never delete a file under it. Its size is kept in memory (no stat of files per append).
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        self.folder, self._lock_fd = self._claim(root)
        _remove_temp(self.folder)
        self._seq = 0
        files = self.files()
        self.rows = sum(self._count(p) for p in files)
        self.bytes = sum(p.stat().st_size for p in files)

    @staticmethod
    def _claim(root: Path) -> tuple[Path, int]:
        for k in itertools.count():
            folder = root / f"{SLOT_PREFIX}{k}"
            folder.mkdir(exist_ok=True)
            fd = try_lock(folder)
            if fd is not None:
                return folder, fd
        raise AssertionError("unreachable")

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.jsonl"))

    def orphan_folders(self) -> list[Path]:
        """Other folders that may hold spooled files: the other slots and the root itself
        (files spooled there by releases before per-worker folders)."""
        slots = sorted(p for p in self.root.glob(f"{SLOT_PREFIX}*") if p != self.folder)
        return [self.root, *slots]

    @staticmethod
    def all_files(root: Path) -> list[Path]:
        """Every spooled file under `root`, whoever owns it (for tools and tests)."""
        return sorted(root.rglob("*.jsonl"))

    @staticmethod
    def _count(path: Path) -> int:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Save rows as one fsynced file; False when they were not saved (the spool is full,
        or the disk refused them: ENOSPC, EIO, ...)."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if self.bytes + len(data) > self.max_bytes:
            return False
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        tmp = self.folder / f".{name}.tmp"
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.error("prediction log spool %s refused %d rows: %s", self.folder, len(rows), exc)
            return False
        self.rows += len(rows)
        self.bytes += len(data)
        return True

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def remove(self, path: Path, rows: int) -> None:
        size = path.stat().st_size  # our own folder: nobody else deletes it
        path.unlink()
        self.rows = max(0, self.rows - rows)
        self.bytes = max(0, self.bytes - size)

    def set_aside(self, path: Path, exc: Exception) -> None:
        """A file that cannot be read (disk corruption) or whose rows the store refuses is kept
        as `*.bad` for a person to look at, never retried."""
        log.error("prediction log spool file %s kept as .bad: %s", path, exc)
        rows, size = self._count(path), path.stat().st_size
        path.rename(path.with_name(path.name + ".bad"))
        if path.parent == self.folder:
            self.rows = max(0, self.rows - rows)
            self.bytes = max(0, self.bytes - size)

    def close(self) -> None:
        """Release the folder: its files become an orphan for the next writer."""
        if self._lock_fd >= 0:
            unlock(self._lock_fd)
            self._lock_fd = -1


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
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.retry_s = retry_s
        self.ack_timeout_s = ack_timeout_s
        self.store_up = True
        self._buf: deque[Mapping[str, Any]] = deque()
        self._inflight: list[Mapping[str, Any]] = []  # taken from the queue, not yet safe
        # Durable mode (group commit): an ack fires once every row up to its sequence number is
        # in the store or the fsynced spool.
        self._seq_in = 0
        self._seq_done = 0
        self._acks: deque[tuple[int, Callable[[], None]]] = deque()
        self._cond = threading.Condition()
        # The spool has its own lock: a spool write fsyncs, and the event loop's try_put must
        # never wait for a disk behind the queue's lock (a hung disk would hang the loop).
        self._spool_lock = threading.Lock()
        self._stop = False
        self._last_failure = 0.0
        self._next_orphan_scan = 0.0
        self.crashes = 0
        self._crashes_in_row = 0
        self._last_crash = ""
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        metrics.LOG_STORE_UP.set(1)
        metrics.LOG_WRITER_UP.set(1)
        metrics.LOG_SPOOL_ROWS.set(spool.rows)

    def start(self) -> None:
        self._thread.start()

    def problem(self) -> str | None:
        """Why the writer cannot be relied on now, for readiness; None when it is fine."""
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stop:
            return "prediction log writer is not running"
        if self._crashes_in_row:
            return (
                f"prediction log writer crashed {self._crashes_in_row} time(s) in a row "
                f"({self._last_crash}); restarting"
            )
        return None

    def try_put(
        self, rows: Sequence[Mapping[str, Any]], ack: Callable[[], None] | None = None
    ) -> bool:
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
        return True

    async def put(
        self, rows: Sequence[Mapping[str, Any]], *, durable: bool = False, wait_s: float = 2.0
    ) -> None:
        """Queue rows; push back on the caller while the queue is full, then use the spool.

        durable=True returns only once the rows are in the store or the fsynced spool, so a
        SIGKILL after the answer cannot lose them (rows of concurrent requests share a commit).
        Every wait is bounded: LogFull when queue and spool are full, LogUnavailable when the
        acknowledgement or the direct spool write takes longer than `ack_timeout_s`.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] | None = loop.create_future() if durable else None

        def resolve() -> None:
            if done is not None and not done.done():
                done.set_result(None)

        def ack() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(resolve)

        deadline = time.monotonic() + wait_s
        while not self.try_put(rows, ack if done is not None else None):
            if time.monotonic() >= deadline:
                await self._spool_now(rows)
                return  # the spool file is fsynced: durable already
            await asyncio.sleep(0.005)
        if done is not None:
            await self._acknowledged(done)

    async def _acknowledged(self, done: asyncio.Future[None]) -> None:
        finished, _ = await asyncio.wait({done}, timeout=self.ack_timeout_s)
        if not finished:
            metrics.LOG_ACK_TIMEOUTS.inc()
            raise LogUnavailable(
                f"the prediction log did not confirm the rows within {self.ack_timeout_s:g} s"
            )

    async def _spool_now(self, rows: Sequence[Mapping[str, Any]]) -> None:
        try:
            ok = await asyncio.wait_for(
                asyncio.to_thread(self._spool_direct, rows), self.ack_timeout_s
            )
        except TimeoutError:
            metrics.LOG_ACK_TIMEOUTS.inc()
            raise LogUnavailable(
                f"the prediction log spool did not take the rows within {self.ack_timeout_s:g} s"
            ) from None
        if not ok:
            raise LogFull("prediction log queue and disk spool are full")

    def _spool_direct(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        with self._spool_lock:  # one writer of the spool at a time
            ok = self.spool.append(rows)
        if ok:
            metrics.LOG_SPOOL_ROWS.set(self.spool.rows)
        return ok

    def _take(self) -> list[Mapping[str, Any]]:
        n = min(self.batch_rows, len(self._buf))
        batch = [self._buf.popleft() for _ in range(n)]
        metrics.LOG_QUEUE_ROWS.set(len(self._buf))
        return batch

    def _persisted(self, rows: int) -> None:
        """`rows` more rows (in queue order) are safe: fire the acks they complete."""
        fire = []
        with self._cond:
            self._inflight = []
            self._seq_done += rows
            while self._acks and self._acks[0][0] <= self._seq_done:
                fire.append(self._acks.popleft()[1])
        for ack in fire:
            ack()

    def _run(self) -> None:
        """The thread: the writer loop, restarted after any crash (logged, counted, its batch
        put back). Only a BaseException ends the thread early; `problem()` then reports it."""
        finished = False
        try:
            while not finished:
                try:
                    self._loop()
                    finished = True
                except Exception as exc:
                    time.sleep(self._crashed(exc))
        finally:
            if not finished:
                self._requeue_inflight()
                metrics.LOG_WRITER_UP.set(0)
                log.critical("prediction log writer thread ended; rows wait in the queue")

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._stop and len(self._buf) < self.batch_rows and not self._acks:
                    self._cond.wait(self.flush_s)
                batch = self._inflight = self._take()
                stopping = self._stop and not self._buf
            if batch:
                self._write(batch)
            self._replay_spool()
            self._cycle_ok()
            if stopping and not batch:
                return

    def _requeue_inflight(self) -> None:
        with self._cond:
            self._buf.extendleft(reversed(self._inflight))
            self._inflight = []
            metrics.LOG_QUEUE_ROWS.set(len(self._buf))

    def _crashed(self, exc: Exception) -> float:
        """Keep the batch, count and log the crash; the pause before the restart."""
        self._requeue_inflight()
        self.crashes += 1
        self._crashes_in_row += 1
        self._last_crash = f"{type(exc).__name__}: {first_line(exc)}"
        metrics.LOG_WRITER_RESTARTS.inc()
        metrics.TASK_FAILURES.labels("log_writer").inc()  # as every background task counts
        metrics.LOG_WRITER_UP.set(0)
        pause = min(self.retry_s * 2.0 ** min(self._crashes_in_row - 1, 10), MAX_RESTART_PAUSE_S)
        log.error("prediction log writer crashed, restarting in %.1f s", pause, exc_info=exc)
        return pause

    def _cycle_ok(self) -> None:
        if self._crashes_in_row:
            log.info("prediction log writer recovered after %d crash(es)", self._crashes_in_row)
            self._crashes_in_row = 0
            metrics.LOG_WRITER_UP.set(1)

    def _resting(self) -> bool:
        """The store failed less than `retry_s` ago: do not try it yet."""
        return not self.store_up and time.monotonic() - self._last_failure < self.retry_s

    def _write(self, batch: Sequence[Mapping[str, Any]]) -> None:
        if self._resting():
            self._to_spool(batch)
            return
        try:
            self.store.write_predictions(batch)
        except Exception as exc:
            self._mark_down(exc)
            self._to_spool(batch)
            return
        self._persisted(len(batch))
        self._mark_up()
        metrics.LOG_ROWS_WRITTEN.inc(len(batch))

    def _to_spool(self, batch: Sequence[Mapping[str, Any]]) -> None:
        with self._spool_lock:
            ok = self.spool.append(batch)
        if ok:
            self._persisted(len(batch))
        else:
            # Spool full: keep the rows in memory (front of the queue) rather than lose them.
            self._requeue_inflight()
            time.sleep(self.retry_s / 4)
        metrics.LOG_SPOOL_ROWS.set(self.spool.rows)

    def _replay_spool(self) -> None:
        if self._resting():
            return
        if self.spool.rows and not self._replay(self.spool.files()[:REPLAY_FILES], own=True):
            return
        if time.monotonic() >= self._next_orphan_scan:
            self._next_orphan_scan = time.monotonic() + self.retry_s
            self._adopt_orphans()

    def _adopt_orphans(self) -> None:
        """Replay folders no live writer holds (a stopped worker's, an older release's)."""
        for folder in self.spool.orphan_folders():
            if not any(folder.glob("*.jsonl")):
                continue
            fd = try_lock(folder)
            if fd is None:  # its owner lives, or another writer is replaying it
                continue
            try:
                files = sorted(folder.glob("*.jsonl"))
                log.info("replaying %d spool file(s) left in %s", len(files), folder)
                ok = self._replay(files[:REPLAY_FILES], own=False)
                _remove_temp(folder)
            finally:
                unlock(fd)
            if not ok:
                return

    def _replay(self, paths: list[Path], *, own: bool) -> bool:
        """Write spooled files to the store, oldest first; False when the store failed."""
        for path in paths:
            try:
                rows = Spool.read(path)
            except (ValueError, OSError) as exc:
                with self._spool_lock, contextlib.suppress(OSError):
                    self.spool.set_aside(path, exc)
                continue
            try:
                self.store.write_predictions(rows)
            except Exception as exc:
                if is_outage(exc):
                    self._mark_down(exc)
                    return False
                # the store answered and refused these rows: no retry will change that; keep
                # them aside (`.bad`, for a person to look at) and go on with the others
                with self._spool_lock, contextlib.suppress(OSError):
                    self.spool.set_aside(path, exc)
                continue
            self._mark_up()
            if own:
                with self._spool_lock:
                    self.spool.remove(path, len(rows))
            else:
                path.unlink()
            metrics.LOG_ROWS_WRITTEN.inc(len(rows))
        metrics.LOG_SPOOL_ROWS.set(self.spool.rows)
        return True

    def _mark_down(self, exc: Exception) -> None:
        if self.store_up:
            log.warning(
                "prediction log store %s, spooling to %s: %s",
                "is missing tables" if isinstance(exc, SchemaGap) else "unreachable",
                self.spool.folder,
                first_line(exc),
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
        """Drain the queue (to the store, or the spool when it is down) and stop the thread.

        Whatever the thread did not save in `timeout_s` (a hanging store, a dead thread) goes
        to the spool here, the batch it holds included: a row written both ways is stored
        once (inserts skip ids already present)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        with self._cond:
            rows = self._inflight + list(self._buf)
            self._buf.clear()
            with self._spool_lock:
                saved = bool(rows) and self.spool.append(rows)
            if saved:
                self._persisted(len(rows))
            elif rows:
                log.error("log writer: %d rows could not be saved at shutdown", len(rows))
        if not self._thread.is_alive():
            self.spool.close()
