"""POST /v1/models/{name}/predict and /feedback: read the body, hand its instances to the data
plane, render the answer (service/protocols/v1.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.protocols import v1
from service.protocols.body import collect, decode_json, json_type, read_json
from service.protocols.deps import FeedbackAuthDep, StateDep
from service.protocols.schemas import (
    ERRORS,
    FEEDBACK_BODY,
    INSTANCES_BODY,
    FeedbackResponse,
    PredictResponse,
    documented,
)

router = APIRouter(prefix="/v1/models", tags=["predict"])
hot = APIRouter(prefix="/v1/models", tags=["predict"])
"""The hot route, added to the app's own routes (service/main.py), not included."""


@hot.post(
    "/{name}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Predict for one or more instances",
    openapi_extra=INSTANCES_BODY,
)
async def predict(request: Request) -> Response:
    headers = request.headers
    reply = await answer(
        request.app.state.sw.plane,
        request.path_params["name"],
        headers.get("content-type"),
        headers.get("content-length"),
        request.stream(),
        headers.get("x-request-key"),
    )
    return Response(reply, media_type="application/json")


async def answer(
    plane: DataPlane,
    name: str,
    ctype: str | None,
    length: str | None,
    chunks: AsyncIterator[bytes],
    key: str | None,
) -> bytes:
    """The predict route's work, for this route and for service.protocols.hotpath alike: an unknown
    model is a 404 before its body is read, then the content type, the size limit, the JSON and the
    data plane's answer."""
    with plane.call("predict", name) as call:
        plane.manager.get(call.name)
        json_type(ctype or "")
        raw = await collect(length or "", chunks, plane.max_body_bytes)
        body = decode_json(raw)
        plane.production(call)
        instances = v1.instances(body)
        return v1.reply(await plane.predict(call, instances, key))


@router.post(
    "/{name}/feedback",
    response_model=FeedbackResponse,
    responses=documented(400, 401, 404, 413, 422, 503),
    summary="Send ground-truth labels for earlier predictions",
    openapi_extra=FEEDBACK_BODY,
)
async def feedback(
    request: Request, name: str, state: StateDep, _auth: FeedbackAuthDep
) -> FeedbackResponse:
    """Labels are checked against the production version's label type and classes, ids against
    the feedback rules: a prediction this service issued for this model, dated neither ahead of
    the clock nor past the log's retention (a 422 names each refused item and its rule)."""
    state.plane.manager.get(name)
    body = await read_json(request, state.plane.max_body_bytes)
    stored, ids = await state.plane.feedback(name, v1.feedback_items(body))
    return v1.feedback_reply(stored, ids)
