"""The Open Inference Protocol (KServe v2) REST routes under /v2, through the same data plane."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from core.digits import whole_number
from service.dataplane import DataPlane, count_invalid
from service.errors import InvalidInstances, NotFound, ProtocolError, ServiceError
from service.models import Slot
from service.protocols import oip
from service.protocols.body import collect
from service.protocols.deps import AppState, StateDep
from service.protocols.health import readiness_problems
from service.protocols.schemas import (
    OipInferenceResponse,
    OipLive,
    OipModelMetadata,
    OipModelReady,
    OipReady,
    OipServerMetadata,
    oip_documented,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
hot = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
"""The infer routes, added to the app's own routes (service/main.py), not included."""

PATH_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The model's name in the registry.",
    }
]
VERSION_PARAMETER: dict[str, Any] = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The version production serves (another version is a 404).",
}


def _body(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "description": "JSON, or Triton's binary tensor extension (JSON header of "
            "Inference-Header-Content-Length bytes, then the tensors' raw bytes).",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/OipInferenceRequest"}}
            },
        },
    }


INFER_RESPONSES = oip_documented(400, 404, 413, 422, 503)


@hot.post(
    "/models/{name}/infer",
    response_model=OipInferenceResponse,
    responses=INFER_RESPONSES,
    summary="Predict (Open Inference Protocol); same validation, log and metrics as /v1",
    openapi_extra=_body(PATH_PARAMETERS),
)
async def infer(request: Request) -> Response:
    return await _infer(request, None)


@hot.post(
    "/models/{name}/versions/{version}/infer",
    response_model=OipInferenceResponse,
    responses=INFER_RESPONSES,
    summary="Predict with the given version (production's; never the canary)",
    openapi_extra=_body([*PATH_PARAMETERS, VERSION_PARAMETER]),
)
async def infer_version(request: Request) -> Response:
    return await _infer(request, request.path_params["version"])


@router.get("", response_model=OipServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> OipServerMetadata:
    return OipServerMetadata(name="servewatch", version=request.app.version, extensions=[])


@router.get("/health/live", response_model=OipLive, summary="Liveness")
async def live() -> OipLive:
    return OipLive(live=True)


@router.get(
    "/health/ready",
    response_model=OipReady,
    responses={503: {"model": OipReady}},
    summary="Readiness (503 until models and the log store are up, as /readyz)",
)
async def ready(state: StateDep) -> Response | OipReady:
    if await readiness_problems(state, store=True):
        return Response(
            OipReady(ready=False).model_dump_json(), status_code=503, media_type="application/json"
        )
    return OipReady(ready=True)


def _slot(state: AppState, name: str, version: str | None) -> Slot:
    """The production slot of `name`, checked against `version`; 404 in the protocol's shape."""
    try:
        slot = state.manager.get(name)
    except NotFound as exc:
        raise as_protocol_error(exc) from None
    if version is not None and _version(name, version) != slot.model.version:
        raise ProtocolError(
            404, f"version {version} of {name!r} is not served here (serving {slot.model.version})"
        )
    return slot


def _version(name: str, text: str) -> int:
    number = whole_number(text)
    if number is None:
        raise ProtocolError(404, f"version {text[:40]!r} of {name!r}: versions are whole numbers")
    return number


@router.get(
    "/models/{name}",
    response_model=OipModelMetadata,
    responses=oip_documented(404),
    summary="Model metadata: one input per feature, the outputs",
)
async def model_metadata(name: str, state: StateDep) -> dict[str, Any]:
    return oip.metadata(name, _slot(state, name, None).model)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=OipModelMetadata,
    responses=oip_documented(404),
    summary="Model version metadata",
)
async def version_metadata(name: str, version: str, state: StateDep) -> dict[str, Any]:
    return oip.metadata(name, _slot(state, name, version).model)


@router.get(
    "/models/{name}/ready",
    response_model=OipModelReady,
    responses=oip_documented(404),
    summary="Model readiness",
)
async def model_ready(name: str, state: StateDep) -> OipModelReady:
    _slot(state, name, None)
    return OipModelReady(name=name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=OipModelReady,
    responses=oip_documented(404),
    summary="Model version readiness",
)
async def version_ready(name: str, version: str, state: StateDep) -> OipModelReady:
    _slot(state, name, version)
    return OipModelReady(name=name, ready=True)


async def _infer(request: Request, version: str | None) -> Response:
    encoding, header_length = _headers(request.scope["headers"])
    headers = request.headers
    reply = await infer_answer(
        request.app.state.sw,
        request.path_params["name"],
        version,
        InferHeaders(
            encoding, header_length, headers.get("content-length"), headers.get("x-request-key")
        ),
        request.stream(),
    )
    return Response(reply, media_type="application/json")


@dataclass(frozen=True, slots=True)
class InferHeaders:
    """What an infer request's headers say (the first of each): Content-Encoding,
    Inference-Header-Content-Length, Content-Length and X-Request-Key."""

    encoding: str | None
    header_length: str | None
    length: str | None
    key: str | None


async def infer_answer(
    state: AppState,
    name: str,
    version: str | None,
    headers: InferHeaders,
    chunks: AsyncIterator[bytes],
) -> bytes:
    """The infer routes' work, for these routes and for service.protocols.hotpath alike: an
    unknown model or version is a 404 before the body is read, then the encoding, the size
    limit, the decoding and the data plane's answer; errors in the protocol's shape."""
    plane: DataPlane = state.plane
    # counted under endpoint="predict" like /v1: one operation, whichever protocol asked
    with plane.call("predict", name) as call:
        slot = _slot(state, name, version)  # an unknown model is a 404 before its body is read
        call.version = str(slot.model.version)
        try:
            encoding = headers.encoding
            if encoding is not None and encoding.lower() != "identity":
                raise ProtocolError(400, "compressed request bodies are not supported")
            raw = await collect(headers.length or "", chunks, plane.max_body_bytes)
            try:
                req, rows = oip.decode(raw, headers.header_length, slot.model.validator)
            except oip.Malformed as exc:
                raise ProtocolError(400, str(exc)) from None
            except oip.Rejected as exc:
                known = slot.model.validator.known
                count_invalid(name, known, ((feature, rule) for feature, rule, _ in exc.problems))
                raise ProtocolError(422, str(exc)) from None
            answer = await plane.predict(
                call, rows, headers.key, version=None if version is None else int(version)
            )
        except ServiceError as exc:
            raise as_protocol_error(exc) from None
        return oip.render(name, answer.model, answer.outputs, answer.ids, req.id, req.outputs)


_ENCODING = b"content-encoding"
HEADER_LENGTH = oip.BINARY_HEADER.encode()
"""Inference-Header-Content-Length as ASGI names it."""


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """Content-Encoding and Inference-Header-Content-Length (the first of each), in one pass
    over the request's raw headers (ASGI gives their names in lower case)."""
    encoding = header_length = None
    for key, value in raw:
        if key == _ENCODING and encoding is None:
            encoding = value.decode("latin-1")
        elif key == HEADER_LENGTH and header_length is None:
            header_length = value.decode("latin-1")
    return encoding, header_length


def as_protocol_error(exc: ServiceError) -> ProtocolError:
    """A domain error in /v2's shape: its status and message; the schema's problems as one
    message naming each input, row and rule."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, InvalidInstances):
        return ProtocolError(422, _problems(exc))
    return ProtocolError(exc.status_code, exc.message)


def _problems(exc: InvalidInstances) -> str:
    """/v1's per-instance problems as one message naming each input, row and rule."""
    details = exc.details or []
    if not details:
        return exc.message
    return oip.describe(
        [
            (
                str(d.get("feature")),
                str(d.get("rule")),
                d["message"]
                if d.get("instance") is None
                else f"row {d['instance']}: {d['message']}",
            )
            for d in details
        ]
    )
