"""HotPath: POST /v1/models/{name}/predict and /v2's infer routes served in front of FastAPI.

FastAPI and Starlette cost about 60 us of a request's CPU (their middleware layers, routing,
the request object; measured: uvicorn answering a constant from a bare ASGI app 35 us, from a
FastAPI route 95 us). The prediction routes do none of what they add (no dependencies, no
response model), so this ASGI layer, put in front of the app's middleware stack, hands their
requests to the data plane itself: same checks in the same order, same errors, same answer.
Everything else (and every request when OpenTelemetry or user middleware is on) goes through
FastAPI as before; the FastAPI routes stay for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.protocols.errors import INTERNAL, error_response, render
from service.protocols.predict import answer
from service.protocols.v2 import HEADER_LENGTH, InferHeaders, infer_answer

V1_PREFIX, V1_SUFFIX = "/v1/models/", "/predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
JSON_HEADER = (b"content-type", b"application/json")


class ServiceApp(FastAPI):
    """FastAPI with `HotPath` in front of its middleware stack (unless `hot_path` is False)."""

    hot_path = True
    """False when FastAPI's own telemetry is on (create_app: OpenTelemetry), which the hot routes
    would skip."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return HotPath(self, stack) if self.hot_path and not self.user_middleware else stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A hot route's request straight to `HotPath.serve`, past FastAPI's and Starlette's
        entry (its telemetry check: 2-3% of a single-row request's CPU in process); the rest,
        and every request under a root path, through them."""
        hot = self.middleware_stack
        if isinstance(hot, HotPath) and not self.root_path:
            found = hot.found(scope)
            if found is not None:
                scope["app"] = self
                await hot.serve(*found, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def route(method: str, path: str) -> tuple[str, str, str | None] | None:
    """("v1", name, None), ("v2", name, version or None) for a path the hot routes serve (as
    FastAPI's routes match it: each path parameter one non-empty segment), else None."""
    if method != "POST":
        return None
    if path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX):
        name = path[len(V1_PREFIX) : -len(V1_SUFFIX)]
        return ("v1", name, None) if name and "/" not in name else None
    if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
        parts = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", parts[0], None
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return "v2", parts[0], parts[2]
    return None


class HotPath:
    """ASGI: the predict and infer routes straight to the data plane, the rest to FastAPI's
    stack."""

    def __init__(self, app: FastAPI, stack: ASGIApp) -> None:
        self.app = app
        self.stack = stack

    def found(self, scope: Scope) -> tuple[Any, tuple[str, str, str | None]] | None:
        """The app's state and the hot route of a request this layer serves, else None."""
        if scope["type"] == "http" and not scope.get("root_path"):
            found = route(scope["method"], scope["path"])
            state = getattr(self.app.state, "sw", None)
            if found is not None and state is not None:
                return state, found
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.found(scope)
        if found is not None:
            await self.serve(*found, scope, receive, send)
            return
        await self.stack(scope, receive, send)

    async def serve(
        self,
        state: Any,
        found: tuple[str, str, str | None],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """service.protocols.predict.answer or v2.infer_answer on the raw ASGI messages, their
        errors rendered as the app's exception handlers and ServerErrorMiddleware would."""
        protocol, name, version = found
        h = _headers(scope["headers"])
        try:
            if protocol == "v1":
                reply = await answer(
                    state.plane, name, h.get(b"content-type"), h.get(b"content-length"),
                    _chunks(receive), h.get(b"x-request-key"),
                )  # fmt: skip
            else:
                reply = await infer_answer(
                    state, name, version, _infer_headers(h), _chunks(receive)
                )
        except ServiceError as exc:
            await render(exc)(scope, receive, send)
            return
        except Exception:
            # as Starlette's ServerErrorMiddleware: a 500 without details, then the error
            # raised on for the server to log
            response = error_response(500, "internal_error", INTERNAL)
            await response(scope, receive, send)
            raise
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(reply)).encode()), JSON_HEADER],
            }
        )
        await send({"type": "http.response.body", "body": reply})


WANTED = frozenset(
    (b"content-type", b"content-length", b"x-request-key", b"content-encoding", HEADER_LENGTH)
)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The first value of each header the hot routes read (as Starlette's headers.get), by its
    name in lower case (as ASGI gives it)."""
    found: dict[bytes, str] = {}
    for k, v in raw:
        if k in WANTED and k not in found:
            found[k] = v.decode("latin-1")
    return found


def _infer_headers(h: dict[bytes, str]) -> InferHeaders:
    return InferHeaders(
        h.get(b"content-encoding"),
        h.get(HEADER_LENGTH),
        h.get(b"content-length"),
        h.get(b"x-request-key"),
    )


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive (ClientDisconnect when the client hangs up)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] == "http.request":
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
