"""`servewatch serve`: set up the process environment, then run uvicorn with N workers."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from service.config import Settings


def serve(
    registry: Annotated[
        Path | None, typer.Option(help="Registry root. [env SERVEWATCH_REGISTRY]")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME, NAME:VERSION or NAME@ALIAS; repeat for several. [env SERVEWATCH_MODELS]"
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="[env SERVEWATCH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="[env SERVEWATCH_PORT]")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes. [env SERVEWATCH_WORKERS]")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Prediction log: sqlite:///FILE or postgresql://... [env SERVEWATCH_DATABASE_URL]"
        ),
    ] = None,
) -> None:
    """Serve models over HTTP, log every prediction, expose /metrics."""
    flags = {
        "registry": registry,
        "models": ",".join(model) if model else None,
        "host": host,
        "port": port,
        "workers": workers,
        "database_url": database_url,
    }
    for key, value in flags.items():
        if value is not None:
            os.environ[f"SERVEWATCH_{key.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    # One BLAS/OpenMP thread per worker by default: workers, not threads, use the cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(settings.model_threads))
    run(settings)


def run(settings: Settings) -> None:
    import uvicorn

    multiproc_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Metrics from several workers meet in files here; a fresh folder each start.
        multiproc_dir = tempfile.mkdtemp(prefix="servewatch-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    try:
        uvicorn.run(
            "servewatch.app:build",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=30,
            limit_concurrency=2048,
            h11_max_incomplete_event_size=65536,
        )
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
