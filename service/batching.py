"""MicroBatcher: gathers concurrent requests into one model call, off the event loop.

While the model is busy, new requests queue up; when it is free, everything queued (up to
`max_rows`) goes into the next call. A short extra wait is taken only under concurrency, so a
lone request never waits.

Where the call runs depends on what it costs: a model whose recent calls take under `inline_max_s`
(their median; a linear model on the numpy fast path: tens of microseconds) is called on the event
loop, since handing it to a thread would cost more than the call and, holding the GIL, gain no
parallelism. Slower models (trees, boosting) run on the model thread so the loop keeps serving
I/O. The median follows the measured calls, timed where they run (a call on the model thread without
the hand-off and the wait for the event loop to take its answer, which a busy loop stretches
past the call itself), so a model that slows down moves off the loop.

A request that already carries `DIRECT_ROWS` rows or more to a model called on the event loop is
a batch of its own: it is called at once, without the queue and the hand-off to the batcher's
task. Models called on the model thread keep batching such requests: merging them saves each
call's fixed cost (measured on a compiled forest: 12% more CPU per 32-row request without it).

One request never fails another: a call that raises is halved and made again until the error
belongs to one request, whose refused rows are named the same way (422 `model_refused`); the others
get their predictions. At most twice as many calls as requests, and only when a call fails.

A batcher that has been closed (its version swapped out) still answers: a request that took the
old version's slot before the swap, and reached `predict` only after it (its body was still
arriving), gets a direct, unbatched call on that version. No call can wait on a stopped loop.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import chain
from typing import Any

from core.errors import first_line
from service import metrics
from service.errors import MAX_PROBLEMS, InvalidInstances, Unavailable
from service.inference.model import LoadedModel, Outputs

log = logging.getLogger("servewatch.batching")

RECENT_CALLS = 16
"""Calls whose median decides where the next run: a median, not a moving average, because on a
loaded machine a few calls descheduled midway take milliseconds, and an average of them sent a
110 us linear model to the thread."""
DIRECT_ROWS = 16
"""Requests with at least this many rows skip the queue: one call of their own."""


@dataclass
class _Job:
    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[Outputs]


class MicroBatcher:
    def __init__(
        self,
        model: LoadedModel,
        executor: Executor,
        *,
        max_rows: int,
        max_wait_s: float,
        inline_max_s: float = 0.0,
    ) -> None:
        self.model = model
        self._executor = executor
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._inline_max_s = inline_max_s
        self.mean_call_s = float("inf")  # recent calls' median; the first call goes to the thread
        self._recent: deque[float] = deque(maxlen=RECENT_CALLS)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._batch_hist = metrics.BATCH_ROWS.labels(model.name)
        self._call_hist = metrics.MODEL_CALL_SECONDS.labels(model.name, str(model.version))
        self._inflight = 0
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"batcher-{self.model.name}"
        )

    async def predict(self, columns: dict[str, list[Any]], rows: int) -> Outputs:
        if self._closed:  # retired by a swap: answer on this version, one call, no batching
            try:
                return await self._call(columns, inline=False)
            except Exception as exc:
                raise await self._refused(columns, rows, exc, inline=False) from None
        inline = self.mean_call_s < self._inline_max_s
        if rows >= DIRECT_ROWS and inline:  # a batch already: one call of its own, no queue
            self._inflight += 1
            try:
                return await self._timed(columns, rows, inline)
            except Exception as exc:
                raise await self._refused(columns, rows, exc, inline) from None
            finally:
                self._inflight -= 1
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._inflight += 1
        try:
            self._queue.put_nowait(_Job(columns, rows, future))
            return await future
        finally:
            self._inflight -= 1

    async def _run(self) -> None:
        last_jobs = 1
        while True:
            first = await self._queue.get()
            jobs, rows = [first], first.rows
            inline = self.mean_call_s < self._inline_max_s
            # Waiting for more rows pays only when a call is costly; a cheap inline call is made
            # at once (requests arriving meanwhile queue up for the next one by themselves).
            if last_jobs > 1 and self._max_wait_s > 0 and rows < self._max_rows and not inline:
                try:
                    await asyncio.sleep(self._max_wait_s)
                except asyncio.CancelledError:  # closed while this job waited for company
                    _fail(jobs, Unavailable("the model version was retired; retry"))
                    raise
            while rows < self._max_rows and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                rows += job.rows
            last_jobs = len(jobs)
            try:
                await self._answer(jobs, rows, inline)
            except asyncio.CancelledError:  # closed past its deadline: nobody waits forever
                _fail(jobs, Unavailable("the model version was retired mid-call; retry"))
                raise

    async def _call(self, columns: dict[str, list[Any]], inline: bool) -> Outputs:
        if inline:
            return self.model.predict_columns(columns)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.model.predict_columns, columns)

    def _costed(self, columns: dict[str, list[Any]]) -> tuple[Outputs, float]:
        """The model's outputs and the seconds the call took where it ran. (Not its CPU time:
        reading a thread's CPU clock cost 2-190 us a call on the machines measured.)"""
        start = time.perf_counter()
        out = self.model.predict_columns(columns)
        return out, time.perf_counter() - start

    async def _timed(self, columns: dict[str, list[Any]], rows: int, inline: bool) -> Outputs:
        """One call, its cost measured: the time from the request's side to the histogram, the
        call's own time to the average that decides where the next calls run."""
        start = time.perf_counter()
        if inline:
            out, took = self._costed(columns)
        else:
            loop = asyncio.get_running_loop()
            out, took = await loop.run_in_executor(self._executor, self._costed, columns)
        self._recent.append(took)
        self.mean_call_s = statistics.median(self._recent)
        self._call_hist.observe(time.perf_counter() - start)
        self._batch_hist.observe(rows)
        return out

    async def _answer(self, jobs: list[_Job], rows: int, inline: bool) -> None:
        """One call for `jobs`; when it raises, each half is called again, down to the one
        request the error belongs to (so one request's bad value never fails another's)."""
        merged = _merge(jobs) if len(jobs) > 1 else jobs[0].columns
        try:
            out = await self._timed(merged, rows, inline)
        except Exception as exc:
            if len(jobs) == 1:
                job = jobs[0]
                refused = await self._refused(job.columns, job.rows, exc, inline)
                if not job.future.done():
                    job.future.set_exception(refused)
                return
            half = len(jobs) // 2
            for some in (jobs[:half], jobs[half:]):
                await self._answer(some, sum(j.rows for j in some), inline)
            return
        offset = 0
        for job in jobs:
            end = offset + job.rows
            part = Outputs(
                out.predictions[offset:end],
                out.probabilities[offset:end] if out.probabilities is not None else None,
            )
            if not job.future.done():
                job.future.set_result(part)
            offset = end

    async def _refused(
        self, columns: dict[str, list[Any]], rows: int, exc: Exception, inline: bool
    ) -> Exception:
        """What one request whose call raised gets: for an error about the input (ValueError,
        TypeError, ArithmeticError: scikit-learn's way of refusing a value), `ModelRefused`
        naming the rows that fail on their own (found by halving, as many calls as needed and
        no more than twice the rows); any other error as it is (a 500 for that request only)."""
        if not isinstance(exc, ValueError | TypeError | ArithmeticError):
            log.error(
                "model call of %s v%s failed", self.model.name, self.model.version, exc_info=exc
            )
            return exc
        bad: list[int] = []
        if rows > 1:
            await self._bad_rows(columns, list(range(rows)), bad, inline)
        bad = bad or list(range(rows))
        metrics.VALIDATION_ERRORS.labels(self.model.name, "_instance", "model_refused").inc(
            len(bad)
        )
        return ModelRefused(bad, f"{type(exc).__name__}: {first_line(exc)}")

    async def _bad_rows(
        self, columns: dict[str, list[Any]], rows: list[int], bad: list[int], inline: bool
    ) -> None:
        if len(rows) == 1:
            bad.append(rows[0])
            return
        half = len(rows) // 2
        for part in (rows[:half], rows[half:]):
            picked = {n: [col[i] for i in part] for n, col in columns.items()}
            try:
                await self._call(picked, inline)
            except Exception:
                await self._bad_rows(columns, part, bad, inline)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Let queued and running calls finish (in-flight requests complete), then stop; later
        calls are answered directly, and calls still queued at the deadline get a 503."""
        deadline = time.monotonic() + timeout_s
        while (self._inflight or not self._queue.empty()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._closed = True  # from here on predict() never queues
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        stranded = []
        while not self._queue.empty():
            stranded.append(self._queue.get_nowait())
        _fail(stranded, Unavailable("the model version was retired; retry"))


class ModelRefused(InvalidInstances):
    """The model raised on these rows of a request (each tried on its own): a 422 naming them."""

    def __init__(self, rows: list[int], reason: str) -> None:
        message = f"the model cannot predict for {len(rows)} instance(s): {reason}"
        super().__init__(
            message,
            [
                {"instance": i, "feature": "", "rule": "model_refused", "message": reason}
                for i in rows[:MAX_PROBLEMS]
            ],
        )


def _fail(jobs: list[_Job], exc: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


def _merge(jobs: list[_Job]) -> dict[str, list[Any]]:
    names = jobs[0].columns.keys()
    return {n: list(chain.from_iterable(job.columns[n] for job in jobs)) for n in names}
