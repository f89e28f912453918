"""GET /v1/models/{name}/monitoring (latest summary + history) and .../monitoring/report (HTML)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from monitoring.store import MonitorStore
from monitoring.summary import REPORT_FILE, MonitoringResponse, RunHistoryEntry, StoredRun
from service.errors import NotFound
from service.protocols.schemas import documented


def make_router(store: MonitorStore, history: int = 20) -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["monitoring"])

    def entry(run: StoredRun) -> RunHistoryEntry:
        drift = run["summary"].get("drift")  # stored summaries may lack any part
        return {
            "finished_at": run["finished_at"],
            "version": run["version"],
            "rows": run["rows"],
            "drifted_share": drift.get("drifted_share") if drift else None,
            "alerts": [a["rule"] for a in run["summary"].get("alerts", [])],
        }

    # The response model stays an open object: the body is the stored JSON as it is (older
    # releases' summaries included), never re-validated or filtered against today's types.
    @router.get("/{name}/monitoring", response_model=dict[str, object], responses=documented(404))
    async def monitoring(name: str) -> MonitoringResponse:
        runs = await run_in_threadpool(store.latest, name, history)
        if not runs:
            raise NotFound(f"no monitoring run stored for {name!r} yet")
        return {"latest": runs[0]["summary"], "history": [entry(r) for r in runs]}

    @router.get(
        "/{name}/monitoring/report",
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}, **documented(404)},
    )
    async def report(name: str) -> Response:
        runs = await run_in_threadpool(store.latest, name, history)
        for run in runs:
            if not run["report_dir"]:
                continue
            for file in (REPORT_FILE, "drift.html"):  # drift.html: runs of older releases
                path = Path(run["report_dir"]) / file
                if path.is_file():
                    return FileResponse(path, media_type="text/html")
        raise NotFound(
            f"no drift report stored for {name!r} yet (runs with too little data have none)"
        )

    return router
