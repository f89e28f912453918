"""create_app(): the FastAPI app, built from Settings and handed anything extra it should run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from service import metrics
from service.config import Settings
from service.protocols import admin, explain, health, openapi, predict, v2
from service.protocols import errors as http_errors
from service.protocols.hotpath import ServiceApp
from service.runtime import BackgroundTask, lifespan


def create_app(
    settings: Settings,
    *,
    extra_collectors: Iterable[Any] = (),
    extra_routers: Iterable[APIRouter] = (),
    background: Mapping[str, BackgroundTask] | None = None,
) -> FastAPI:
    """Build the app. Models load in the lifespan (`service.runtime`), never at import time.

    `extra_collectors` are Prometheus collectors added to /metrics (the monitoring gauges);
    `extra_routers` add routes (monitoring results); `background` are coroutines, by name, run
    for the app's lifetime under the supervisor (the monitoring loop). The service does not
    import monitoring: the composition root hands them in.
    """
    collectors = list(extra_collectors)
    tasks = dict(background or {})
    app = ServiceApp(
        title="servewatch",
        version="0.1.0",
        summary="Schema-checked, micro-batched predictions from scikit-learn models, all logged.",
        lifespan=partial(lifespan, settings=settings, collectors=collectors, background=tasks),
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
    for router in (predict.router, v2.router, health.router, explain.router, admin.router):
        app.include_router(router)
    for router in extra_routers:
        app.include_router(router)
    app.openapi = partial(openapi.document, app)  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, ctype = await run_in_threadpool(metrics.exposition, collectors)
        return Response(body, media_type=ctype)

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (each worker process builds its app from the env)."""
    return create_app(Settings())
