"""The ASGI app factory that `servewatch serve` runs in each worker: service + monitoring."""

from __future__ import annotations

import contextlib
import importlib.util
import logging

from fastapi import FastAPI

from monitoring.collector import MonitoringCollector
from monitoring.config import MonitorSettings
from monitoring.loop import monitor_loop
from monitoring.routes import make_router
from monitoring.store import MonitorStore
from predlog.store import PredictionStore
from servewatch.auto_retrain import maybe_retrain
from service.config import Settings
from service.main import create_app


def build() -> FastAPI:
    """Build the service from SERVEWATCH_ settings and hand it the monitoring parts (the
    monitoring loop handed the gated retrain, which imports training only when a run asks).

    Evidently is imported only inside a monitoring run, never at start-up.
    """
    settings = Settings()
    msettings = MonitorSettings()
    mstore = MonitorStore(PredictionStore(settings.database_url))
    with contextlib.suppress(Exception):
        mstore.create_schema()  # the store may be down at start; runs create it later
    background = {}
    if msettings.monitor_interval > 0 and importlib.util.find_spec("evidently") is None:
        logging.getLogger("servewatch.monitor").warning(
            "monitoring in process is off: Evidently is not installed here (the serve image); "
            "run `servewatch monitor run --all` where it is (the full image, as the CronJob does)"
        )
    elif msettings.monitor_interval > 0:
        background["monitoring"] = lambda: monitor_loop(msettings, mstore.store, maybe_retrain)
    return create_app(
        settings,
        extra_collectors=[MonitoringCollector(mstore)],
        extra_routers=[make_router(mstore)],
        background=background,
    )
