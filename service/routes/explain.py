"""POST /v1/models/{name}/explain: predictions with each input feature's contribution."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import StateDep
from service.routes.predict import (
    ERRORS,
    INSTANCES_BODY,
    RequestContext,
    answer,
    checked_instances,
    timed,
)
from service.schemas import ExplainResponse

router = APIRouter(prefix="/v1/models", tags=["predict"])


@router.post(
    "/{name}/explain",
    response_model=ExplainResponse,
    responses=ERRORS,
    summary="Predict and explain: per-feature contributions in the original feature space",
    openapi_extra=INSTANCES_BODY,
)
async def explain(name: str, request: Request, state: StateDep) -> Response:
    async def run(start: float, ctx: RequestContext) -> Response:
        slot = state.manager.get(name)
        ctx.version = str(slot.model.version)
        instances, checked = await checked_instances(slot, name, request, state)
        model = slot.model
        out = await slot.batcher.predict(checked.columns, len(instances))
        loop = asyncio.get_running_loop()
        # Same single model thread as predictions: explanations never over-subscribe the CPU.
        explanations = await loop.run_in_executor(
            state.manager.executor, model.explain_columns, checked.columns
        )
        extras = [{"explanation": e} for e in explanations]
        return await answer(name, model, instances, out, state, start, extras)

    return await timed("explain", name, state, run)
