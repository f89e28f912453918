"""The domain errors as HTTP replies: /v1's error envelope, /v2's {"error": ...}, the handlers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.errors import ProtocolError, ServiceError, schema_details


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


async def _service_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return render(exc)


def render(exc: ServiceError) -> Response:
    """The response for a domain error (/v2's in that protocol's shape)."""
    if isinstance(exc, ProtocolError):
        return Response(
            orjson.dumps({"error": exc.message}),
            status_code=exc.status_code,
            media_type="application/json",
        )
    return error_response(exc.status_code, exc.code, exc.message, exc.details)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = schema_details(exc.errors())
    return error_response(422, "invalid_request", "the request body breaks the schema", details)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, "http_error", str(exc.detail))


INTERNAL = "internal error; the service log has details"


async def _unhandled(_request: Request, _exc: Exception) -> Response:
    # Never a stack trace or an internal path in a response; the log has the details.
    return error_response(500, "internal_error", INTERNAL)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
