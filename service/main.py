"""create_app(): the FastAPI app, built from Settings and handed anything extra it should run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

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
from service.protocols import admin, explain, health, predict, v2
from service.protocols import errors as http_errors
from service.protocols.deps import AppState
from service.protocols.hotpath import ServiceApp
from service.supervise import Supervisor

log = logging.getLogger("servewatch.service")

BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


def create_app(
    settings: Settings,
    *,
    extra_collectors: Iterable[Any] = (),
    extra_routers: Iterable[APIRouter] = (),
    background: Mapping[str, BackgroundTask] | None = None,
) -> FastAPI:
    """Build the app. Models load in the lifespan, never at import time.

    `extra_collectors` are Prometheus collectors added to /metrics (the monitoring gauges);
    `extra_routers` add routes (monitoring results); `background` are coroutines, by name, run
    for the app's lifetime under the supervisor (the monitoring loop). The service does not
    import monitoring: the composition root hands them in.
    """
    collectors = list(extra_collectors)
    tasks_to_run = dict(background or {})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        threadpool_limits(settings.model_threads)
        registry = Registry(settings.registry, signing_key=settings.signing_key or "")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        manager = ModelManager(
            registry,
            ModelManager.default_refs(registry, settings.models),
            executor,
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
        store = PredictionStore(
            settings.database_url,
            partition_hours=settings.log_partition_hours,
            partitions_ahead=settings.log_partitions_ahead,
        )
        retention_metrics = RetentionCollector(store)
        collectors.append(retention_metrics)
        try:  # the tables, and a maintenance pass without retention, recorded for /metrics
            await run_in_threadpool(partial(maintain, store, None, at_start=True))
        except Exception as exc:  # the service still answers; rows wait in the spool
            log.error("prediction log store unreachable at start: %s", first_line(exc, None))
        writer = LogWriter(
            store,
            Spool(settings.spool_dir, max(1024, settings.spool_max_bytes // settings.workers)),
            batch_rows=settings.log_batch_rows,
            flush_s=settings.log_flush_ms / 1000,
            max_rows=settings.log_queue_rows,
            ack_timeout_s=settings.log_ack_timeout_s,
        )
        writer.start()
        problems = await manager.load_all()
        settle_heap()
        if not manager.refs:
            problems.append(f"the registry {settings.registry} holds no model")
        plane = DataPlane(manager, writer, store, settings)
        try:
            await run_in_threadpool(plane.read_keys)
        except Exception as exc:  # ids are tagged with this process's key until the store answers
            log.error("prediction id keys unreadable at start: %s", first_line(exc, None))
        supervisor = Supervisor(retry_s=settings.task_retry_s)
        app.state.sw = AppState(
            settings, manager, store, writer, plane, collectors, problems, supervisor
        )
        # ends once the log's id keys are read (retrying until then): not a lifetime task
        running = [asyncio.create_task(plane.keep_keys())]
        if settings.reload_interval_s > 0:
            tasks_to_run["watcher"] = partial(manager.watch, settings.reload_interval_s)
        if settings.log_maintenance_interval_s > 0:
            tasks_to_run["log_maintenance"] = partial(
                maintenance_loop,
                store,
                settings.log_retention_days,
                settings.log_maintenance_interval_s,
            )
        healthy_s = {"log_maintenance": 2 * settings.log_maintenance_interval_s}
        running += [
            supervisor.start(name, task, healthy_s=healthy_s.get(name, math.inf))
            for name, task in tasks_to_run.items()
        ]
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await manager.close()  # in-flight predictions finish and reach the queue
            plane.close()
            await run_in_threadpool(writer.close)  # the queue drains before exit
            executor.shutdown(wait=True)
            store.dispose()
            collectors.remove(retention_metrics)
            metrics.mark_process_dead()

    app = ServiceApp(
        title="servewatch",
        version="0.1.0",
        summary="Schema-checked, micro-batched predictions from scikit-learn models, all logged.",
        lifespan=lifespan,
        telemetry={
            "tracing": settings.opentelemetry,
            "metrics": settings.opentelemetry,
            "logs": settings.opentelemetry,
        },
    )
    # the predict route below FastAPI's layers, unless they trace it
    app.hot_path = not settings.opentelemetry
    http_errors.install(app)
    # The hot routes of both protocols (/v1 predict, /v2 infer) are the app's own routes, matched
    # first and in one step: FastAPI 0.165 matches an included router's routes twice (to pick the
    # router, then inside it), about 8 us a request on the 2-core bench machine.
    app.router.routes.extend([*predict.hot.routes, *v2.hot.routes])
    app.include_router(predict.router)
    app.include_router(v2.router)
    app.include_router(health.router)
    app.include_router(explain.router)
    app.include_router(admin.router)
    for router in extra_routers:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        """The OpenAPI document, with a predict example built from each served model's schema."""
        from fastapi.openapi.utils import get_openapi

        from service.protocols import oip
        from service.protocols.schemas import FeedbackRequest, OipInferenceRequest, PredictRequest

        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["PredictRequest"] = PredictRequest.model_json_schema()
        feedback = FeedbackRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(feedback.pop("$defs", {}))
        schemas["FeedbackRequest"] = feedback
        oip_request = OipInferenceRequest.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas.update(oip_request.pop("$defs", {}))
        schemas["OipInferenceRequest"] = oip_request
        _links(doc)
        state: AppState | None = getattr(app.state, "sw", None)
        if state is not None:
            body = doc["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
            body["content"]["application/json"]["examples"] = {
                name: {
                    "summary": f"{name} v{slot.model.version}",
                    "value": {"instances": [slot.model.example_instance()]},
                }
                for name, slot in sorted(state.manager.slots.items())
            }
            body = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
            body["content"]["application/json"]["examples"] = {
                name: {
                    "summary": f"{name} v{slot.model.version}",
                    "value": oip.example_request(
                        slot.model.example_instance(), slot.model.manifest.features
                    ),
                }
                for name, slot in sorted(state.manager.slots.items())
            }
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, ctype = await run_in_threadpool(metrics.exposition, collectors)
        return Response(body, media_type=ctype)

    return app


def _links(doc: dict[str, Any]) -> None:
    """OpenAPI links for the workflow a client follows (and schemathesis' stateful run): a
    prediction's id and answer to its feedback, and the model's description."""
    paths = doc["paths"]
    predict = paths["/v1/models/{name}/predict"]["post"]
    feedback = paths["/v1/models/{name}/feedback"]["post"]
    model = paths["/v1/models/{name}"]["get"]
    name = {"name": "$request.path.name"}
    predict["responses"]["200"]["links"] = {
        "Feedback": {
            "operationId": feedback["operationId"],
            "parameters": name,
            "requestBody": {
                "labels": [
                    {
                        "prediction_id": "$response.body#/predictions/0/prediction_id",
                        "label": "$response.body#/predictions/0/prediction",
                    }
                ]
            },
            "description": "A ground-truth label for the first prediction (here: its answer).",
        },
        "Model": {"operationId": model["operationId"], "parameters": name},
    }
    feedback["responses"]["200"]["links"] = {
        "Model": {"operationId": model["operationId"], "parameters": name}
    }


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (each worker process builds its app from the env)."""
    return create_app(Settings())
