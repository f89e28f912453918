"""Runtime: what a running app owns (models, log store and writer, data plane, background tasks),
built when the app starts and closed, in order, when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from core.errors import first_line
from core.registry import Registry
from predlog.logwriter import LogWriter, Spool
from predlog.retention import RetentionCollector, maintain, maintenance_loop
from predlog.store import PredictionStore
from service import metrics
from service.canary import CanaryLimits
from service.config import Settings
from service.dataplane import DataPlane
from service.models import ModelManager, settle_heap
from service.protocols.deps import AppState
from service.supervise import Supervisor

log = logging.getLogger("servewatch.service")

BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def lifespan(
    app: FastAPI,
    *,
    settings: Settings,
    collectors: list[Any],
    background: Mapping[str, BackgroundTask],
) -> AsyncIterator[None]:
    """The app's lifespan: a `Runtime` started (its state on `app.state.sw`), then stopped."""
    runtime = Runtime(settings, collectors, background)
    app.state.sw = await runtime.start()
    try:
        yield
    finally:
        await runtime.stop()


class Runtime:
    """The parts one app runs with, started in dependency order and stopped in reverse: models
    load after the log writer runs, and in-flight predictions reach the log before it closes."""

    def __init__(
        self, settings: Settings, collectors: list[Any], background: Mapping[str, BackgroundTask]
    ) -> None:
        self.settings = settings
        self.collectors = collectors
        """/metrics' extra collectors: the retention collector joins them while running."""
        self.background = dict(background)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.manager = self._manager()
        self.store = PredictionStore(
            settings.database_url,
            partition_hours=settings.log_partition_hours,
            partitions_ahead=settings.log_partitions_ahead,
        )
        self.retention = RetentionCollector(self.store)
        self.writer = self._writer()
        self.plane = DataPlane(self.manager, self.writer, self.store, settings)
        self.supervisor = Supervisor(retry_s=settings.task_retry_s)
        self.running: list[asyncio.Task[Any]] = []

    def _manager(self) -> ModelManager:
        settings = self.settings
        registry = Registry(settings.registry, signing_key=settings.signing_key or "")
        manager = ModelManager(
            registry,
            ModelManager.default_refs(registry, settings.models),
            self.executor,
            max_rows=settings.batch_max_rows,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            inline_max_s=settings.batch_inline_max_ms / 1000,
            compiled=settings.compiled_trees,
        )
        manager.shadow = set(settings.shadow)
        manager.canary = dict(settings.canary)
        manager.canary_limits = CanaryLimits(
            min_requests=settings.canary_min_requests,
            max_error_rate_increase=settings.canary_max_error_rate_increase,
            max_latency_ratio=settings.canary_max_latency_ratio,
        )
        return manager

    def _writer(self) -> LogWriter:
        settings = self.settings
        return LogWriter(
            self.store,
            Spool(settings.spool_dir, max(1024, settings.spool_max_bytes // settings.workers)),
            batch_rows=settings.log_batch_rows,
            flush_s=settings.log_flush_ms / 1000,
            max_rows=settings.log_queue_rows,
            ack_timeout_s=settings.log_ack_timeout_s,
        )

    async def start(self) -> AppState:
        """The log store's tables, the writer, the models, the id keys, the background tasks;
        the state the routes read."""
        from threadpoolctl import threadpool_limits

        settings, store = self.settings, self.store
        threadpool_limits(settings.model_threads)
        self.collectors.append(self.retention)
        try:  # the tables, and a maintenance pass without retention, recorded for /metrics
            await run_in_threadpool(partial(maintain, store, None, at_start=True))
        except Exception as exc:  # the service still answers; rows wait in the spool
            log.error("prediction log store unreachable at start: %s", first_line(exc, None))
        self.writer.start()
        problems = await self.manager.load_all()
        settle_heap()
        if not self.manager.refs:
            problems.append(f"the registry {settings.registry} holds no model")
        try:
            await run_in_threadpool(self.plane.read_keys)
        except Exception as exc:  # ids are tagged with this process's key until the store answers
            log.error("prediction id keys unreadable at start: %s", first_line(exc, None))
        state = AppState(
            settings,
            self.manager,
            store,
            self.writer,
            self.plane,
            self.collectors,
            problems,
            self.supervisor,
        )
        self._start_tasks()
        return state

    def _start_tasks(self) -> None:
        settings, tasks = self.settings, self.background
        # ends once the log's id keys are read (retrying until then): not a lifetime task
        self.running = [asyncio.create_task(self.plane.keep_keys())]
        if settings.reload_interval_s > 0:
            tasks["watcher"] = partial(self.manager.watch, settings.reload_interval_s)
        if settings.log_maintenance_interval_s > 0:
            tasks["log_maintenance"] = partial(
                maintenance_loop,
                self.store,
                settings.log_retention_days,
                settings.log_maintenance_interval_s,
            )
        healthy_s = {"log_maintenance": 2 * settings.log_maintenance_interval_s}
        self.running += [
            self.supervisor.start(name, task, healthy_s=healthy_s.get(name, math.inf))
            for name, task in tasks.items()
        ]

    async def stop(self) -> None:
        """Background tasks cancelled, in-flight predictions finished and queued, the queue
        drained to the log, then the threads and the store's connections closed."""
        for task in self.running:
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        await self.manager.close()  # in-flight predictions finish and reach the queue
        self.plane.close()
        writer = self.writer
        await run_in_threadpool(writer.close)  # the queue drains before exit
        self.executor.shutdown(wait=True)
        self.store.dispose()
        self.collectors.remove(self.retention)
        metrics.mark_process_dead()
