"""POST /v1/models/{name}/explain: predictions with each input feature's contribution."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.protocols import v1
from service.protocols.body import read_json
from service.protocols.schemas import ERRORS, INSTANCES_BODY, ExplainResponse

router = APIRouter(prefix="/v1/models", tags=["predict"])


@router.post(
    "/{name}/explain",
    response_model=ExplainResponse,
    responses=ERRORS,
    summary="Predict and explain: per-feature contributions in the original feature space",
    openapi_extra=INSTANCES_BODY,
)
async def explain(request: Request) -> Response:
    plane: DataPlane = request.app.state.sw.plane
    with plane.call("explain", request.path_params["name"]) as call:
        plane.manager.get(call.name)
        body = await read_json(request, plane.max_body_bytes)
        plane.production(call)
        rows = v1.given(body)
        if rows is not None:  # the limit before the envelope's other rules, as it always was
            plane.explain_limit(len(rows))
        answer = await plane.explain(call, v1.instances(body))
        return Response(v1.reply(answer), media_type="application/json")
