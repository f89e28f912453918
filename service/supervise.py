"""Supervisor: background tasks never stop silently; an error is logged, counted, retried.

Each task (the hot-reload watcher, log maintenance, the monitoring loop) runs under one
supervisor: an exception that escapes it is logged with its traceback, counted in
`servewatch_background_task_failures_total{task}`, and the task starts again after a pause
that doubles with each failure in a row (up to a minute). Failing `persist_after` times in a
row makes it a readiness problem (/readyz) until it recovers: a pass that calls `healthy()`
ends the row, as does, for a task that cannot call it, a run lasting its `healthy_s` (log
maintenance: two of its intervals, so at least one whole pass). The log writer (a thread) is
supervised the same way in predlog/logwriter.py and counts in the same metric.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from core.errors import first_line
from predlog import metrics

log = logging.getLogger("servewatch.supervise")

Task = Callable[[], Coroutine[Any, Any, None]]
MAX_PAUSE_S = 60.0

_current: contextvars.ContextVar[_State | None] = contextvars.ContextVar("task", default=None)


@dataclass
class _State:
    name: str
    healthy_s: float
    in_row: int = 0
    last_error: str = ""
    running_since: float | None = None  # None while it pauses before a restart

    def failing(self, persist_after: int) -> bool:
        if self.in_row < persist_after:
            return False
        since = self.running_since
        return since is None or time.monotonic() - since < self.healthy_s


def healthy() -> None:
    """Called by a supervised task after a good pass: any failures in a row are over."""
    state = _current.get()
    if state is not None and state.in_row:
        log.info("background task %s recovered after %d failure(s)", state.name, state.in_row)
        state.in_row = 0


class Supervisor:
    def __init__(self, *, retry_s: float = 1.0, persist_after: int = 3) -> None:
        self.retry_s = retry_s
        self.persist_after = persist_after
        self.states: dict[str, _State] = {}

    def start(self, name: str, task: Task, *, healthy_s: float = math.inf) -> asyncio.Task[None]:
        """Run `task()` for the app's lifetime, restarted after any failure; a run that lasts
        `healthy_s` counts as recovered (for a task that does not call `healthy()`)."""
        state = self.states[name] = _State(name, healthy_s)
        metrics.TASK_FAILURES.labels(name)  # exported at 0 from start, for increase() and alerts
        context = contextvars.copy_context()
        context.run(_current.set, state)
        return asyncio.get_running_loop().create_task(
            self._keep(state, task), name=f"supervised-{name}", context=context
        )

    async def _keep(self, state: _State, task: Task) -> None:
        while True:
            started = state.running_since = time.monotonic()
            try:
                await task()
                raise RuntimeError("the task returned; it should run for the app's lifetime")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.running_since = None
                if time.monotonic() - started >= state.healthy_s:
                    state.in_row = 0  # it ran well for a while: a new row starts
                state.in_row += 1
                state.last_error = f"{type(exc).__name__}: {first_line(exc)}"
                metrics.TASK_FAILURES.labels(state.name).inc()
                pause = min(self.retry_s * 2.0 ** min(state.in_row - 1, 16), MAX_PAUSE_S)
                log.error(
                    "background task %s failed (%d in a row), restarting in %.1f s",
                    state.name,
                    state.in_row,
                    pause,
                    exc_info=exc,
                )
                await asyncio.sleep(pause)

    def problems(self, only: frozenset[str] | None = None) -> list[str]:
        """The tasks (of `only`, when given) failing `persist_after` times in a row or more."""
        return [
            f"background task {s.name} failed {s.in_row} times in a row ({s.last_error}); retrying"
            for s in self.states.values()
            if s.failing(self.persist_after) and (only is None or s.name in only)
        ]
