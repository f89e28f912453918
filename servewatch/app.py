"""The ASGI app factory that `servewatch serve` runs in each worker: the service, composed."""

from __future__ import annotations

from fastapi import FastAPI

from service.config import Settings
from service.main import create_app


def build() -> FastAPI:
    """Build the service from SERVEWATCH_ settings (called once per worker process)."""
    return create_app(Settings())
