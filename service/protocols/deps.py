"""Annotated dependency aliases the routes use: the app's state, read through Depends."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from predlog.logwriter import LogWriter
from predlog.store import PredictionStore
from service.config import Settings
from service.dataplane import DataPlane
from service.errors import NotFound, Unauthorized
from service.models import ModelManager
from service.supervise import Supervisor


@dataclass
class AppState:
    settings: Settings
    manager: ModelManager
    store: PredictionStore
    writer: LogWriter
    plane: DataPlane
    extra_collectors: list[Any] = field(default_factory=list)
    load_problems: list[str] = field(default_factory=list)
    supervisor: Supervisor = field(default_factory=Supervisor)


# Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
# request that cost a tenth of the event loop's time under load.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.sw
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def _check_bearer(request: Request, expected: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # Constant-time comparison: response time says nothing about how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("a valid bearer token is required")


async def require_admin(request: Request, state: StateDep) -> None:
    token = state.settings.admin_token
    if token is None:
        raise NotFound("admin routes are off: set SERVEWATCH_ADMIN_TOKEN to enable them")
    _check_bearer(request, token)


async def require_feedback(request: Request, state: StateDep) -> None:
    token = state.settings.feedback_token
    if token is not None:
        _check_bearer(request, token)


AdminDep = Annotated[None, Depends(require_admin)]
FeedbackAuthDep = Annotated[None, Depends(require_feedback)]
