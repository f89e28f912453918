"""HotPath: POST /v1/models/{name}/predict served in front of FastAPI's middleware and routing.

FastAPI and Starlette cost about 60 us of a request's CPU (their middleware layers, routing,
the request object; measured: uvicorn answering a constant from a bare ASGI app 35 us, from a
FastAPI route 95 us). The predict route does none of what they add (no dependencies, no
response model), so this ASGI layer, put in front of the app's middleware stack, hands that
route's requests to the data plane itself: same checks in the same order, same errors, same
answer. Everything else (and every request when OpenTelemetry or user middleware is on) goes
through FastAPI as before; the FastAPI route stays for the OpenAPI document.
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

PREFIX, SUFFIX = "/v1/models/", "/predict"
JSON_HEADER = (b"content-type", b"application/json")


class ServiceApp(FastAPI):
    """FastAPI with `HotPath` in front of its middleware stack (unless `hot_path` is False)."""

    hot_path = True

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return HotPath(self, stack) if self.hot_path and not self.user_middleware else stack


class HotPath:
    """ASGI: the predict route straight to the data plane, the rest to FastAPI's stack."""

    def __init__(self, app: FastAPI, stack: ASGIApp) -> None:
        self.app = app
        self.stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX):
                name = path[len(PREFIX) : -len(SUFFIX)]
                state = getattr(self.app.state, "sw", None)
                if name and "/" not in name and state is not None:
                    await self.predict(state.plane, name, scope, receive, send)
                    return
        await self.stack(scope, receive, send)

    async def predict(
        self, plane: Any, name: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """service.protocols.predict.answer on the raw ASGI messages, its errors rendered as the
        app's exception handlers and ServerErrorMiddleware would."""
        ctype = length = key = None
        for k, v in scope["headers"]:  # the first of each, as Starlette's headers.get
            if k == b"content-type" and ctype is None:
                ctype = v.decode("latin-1")
            elif k == b"content-length" and length is None:
                length = v.decode("latin-1")
            elif k == b"x-request-key" and key is None:
                key = v.decode("latin-1")
        try:
            reply = await answer(plane, name, ctype, length, _chunks(receive), key)
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
