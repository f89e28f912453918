"""Liveness (/healthz: the process answers) and readiness (/readyz: models, log writer, store)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from service.protocols.deps import StateDep
from service.protocols.schemas import Health

router = APIRouter(tags=["health"])

SERVING_TASKS = frozenset({"watcher"})  # the hot-reload watcher: which versions this replica serves


async def readiness_problems(state: StateDep, *, store: bool) -> list[str]:
    """What keeps this replica from being ready (empty: ready); /v2/health/ready asks too."""
    problems = list(state.load_problems)
    if not state.manager.slots:
        problems.append("no model is loaded")
    writer_problem = state.writer.problem()
    if writer_problem is not None:
        problems.append(writer_problem)
    # a background task failing again and again; with store=false (the Kubernetes probe) only the
    # one this replica's answers depend on: the log's maintenance and the monitoring loop fail
    # with the store or the reports' volume, on every replica at once, and are alerted on
    problems += state.supervisor.problems(None if store else SERVING_TASKS)
    if store:
        try:
            await run_in_threadpool(state.store.ping)
        except Exception as exc:
            problems.append(f"prediction log store unreachable: {type(exc).__name__}")
    return problems


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="alive")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep, store: bool = True) -> Response | Health:
    """Ready when every requested model is loaded, the log writer runs and the log store answers.

    `?store=false` leaves the store out: a Kubernetes readiness probe uses it so that a store
    outage, which the disk spool absorbs, does not take every replica out of the Service. The
    writer is always checked: a crashing or dead writer is this replica's fault, not the store's.
    """
    problems = await readiness_problems(state, store=store)
    models = {name: slot.model.version for name, slot in state.manager.slots.items()}
    body = Health(status="ready" if not problems else "not_ready", models=models, problems=problems)
    if problems:
        return Response(body.model_dump_json(), status_code=503, media_type="application/json")
    return body
