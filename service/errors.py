"""Domain errors, each with its HTTP status (rendered by service/protocols/errors.py).

ServiceError
 ├── BadRequest (400)          malformed JSON, wrong content type
 ├── Unauthorized (401)        missing or wrong bearer token
 ├── NotFound (404)            unknown model or route resource
 ├── PayloadTooLarge (413)     body over the byte limit or too many instances
 ├── InvalidInstances (422)    instances that break the model's schema (one entry per problem)
 ├── InvalidRequest (422)      another body that breaks its schema, e.g. a label that is no class
 ├── ClientGone (499)          the client hung up before its body arrived (nginx's code)
 ├── Unavailable (503)         no model loaded, log store and spool both full, the log did not
 │                             take the rows in time, a version retired mid-call
 └── ProtocolError (any)       an error of the Open Inference Protocol's /v2 routes, rendered in
                               that protocol's shape {"error": "<message>"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.errors import ServewatchError

MAX_PROBLEMS = 100
"""The most problems an error body lists; its message still counts them all."""


class ServiceError(ServewatchError):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class InvalidInstances(ServiceError):
    status_code = 422
    code = "invalid_instances"


class InvalidRequest(ServiceError):
    status_code = 422
    code = "invalid_request"


class ClientGone(ServiceError):
    status_code = 499
    code = "client_closed_request"


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"


class ProtocolError(ServiceError):
    code = "protocol_error"

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def schema_details(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as an error body's details: the field (dotted; "(body)" for the body
    itself), the rule broken and pydantic's message."""
    return [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "(body)",
            "rule": e["type"],
            "message": e["msg"],
        }
        for e in errors
    ]
