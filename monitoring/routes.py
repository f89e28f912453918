"""GET /v1/models/{name}/monitoring (latest summary + history) and .../monitoring/report (HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from monitoring.store import MonitorStore
from service.errors import NotFound
from service.routes.predict import documented


def make_router(store: MonitorStore, history: int = 20) -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["monitoring"])

    @router.get("/{name}/monitoring", responses=documented(404))
    async def monitoring(name: str) -> dict[str, Any]:
        runs = await run_in_threadpool(store.latest, name, history)
        if not runs:
            raise NotFound(f"no monitoring run stored for {name!r} yet")
        return {
            "latest": runs[0]["summary"],
            "history": [
                {
                    "finished_at": r["finished_at"],
                    "version": r["version"],
                    "rows": r["rows"],
                    "drifted_share": (r["summary"].get("drift") or {}).get("drifted_share"),
                    "alerts": [a["rule"] for a in r["summary"].get("alerts", [])],
                }
                for r in runs
            ],
        }

    @router.get(
        "/{name}/monitoring/report",
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}, **documented(404)},
    )
    async def report(name: str) -> Response:
        runs = await run_in_threadpool(store.latest, name, history)
        for run in runs:
            path = Path(run["report_dir"] or "") / "drift.html"
            if run["report_dir"] and path.is_file():
                return FileResponse(path, media_type="text/html")
        raise NotFound(
            f"no drift report stored for {name!r} yet (runs with too little data have none)"
        )

    return router
