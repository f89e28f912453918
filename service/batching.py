"""MicroBatcher: gathers concurrent requests into one model call, off the event loop.

While the model is busy, new requests queue up; when it is free, everything queued (up to
`max_rows`) goes into the next call. A short extra wait is taken only under concurrency, so a
lone request never waits.

Where the call runs depends on what it costs: a model whose calls average under `inline_max_s`
(a linear model on the numpy fast path: tens of microseconds) is called on the event loop, since
handing it to a thread would cost more than the call and, holding the GIL, gain no parallelism.
Slower models (trees, boosting) run on the model thread so the loop keeps serving I/O. The
average follows the measured calls, so a model that slows down moves off the loop.

A batcher that has been closed (its version swapped out) still answers: a request that took the
old version's slot before the swap, and reached `predict` only after it (its body was still
arriving), gets a direct, unbatched call on that version. No call can wait on a stopped loop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import chain
from typing import Any

from service import metrics
from service.errors import Unavailable
from service.model import LoadedModel, Outputs


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
        self.mean_call_s = float("inf")  # moving average; the first call goes to the thread
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
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.model.predict_columns, columns)
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._inflight += 1
        try:
            self._queue.put_nowait(_Job(columns, rows, future))
            return await future
        finally:
            self._inflight -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
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
            merged = _merge(jobs) if len(jobs) > 1 else first.columns
            start = time.perf_counter()
            try:
                if inline:
                    out = self.model.predict_columns(merged)
                else:
                    out = await loop.run_in_executor(
                        self._executor, self.model.predict_columns, merged
                    )
            except asyncio.CancelledError:  # closed past its deadline: nobody waits forever
                _fail(jobs, Unavailable("the model version was retired mid-call; retry"))
                raise
            except Exception as exc:  # the callers get the error; the loop goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - start
            self.mean_call_s = (
                elapsed
                if self.mean_call_s == float("inf")
                else 0.8 * self.mean_call_s + 0.2 * elapsed
            )
            self._call_hist.observe(elapsed)
            self._batch_hist.observe(rows)
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


def _fail(jobs: list[_Job], exc: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


def _merge(jobs: list[_Job]) -> dict[str, list[Any]]:
    names = jobs[0].columns.keys()
    return {n: list(chain.from_iterable(job.columns[n] for job in jobs)) for n in names}
