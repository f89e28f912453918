"""`servewatch serve`: check settings and registry, set up the process, run uvicorn's workers.

A start that cannot serve exits non-zero with one line naming the cause, with any number of
workers: 2 for a bad setting, 3 (uvicorn's STARTUP_FAILURE) for a registry it cannot serve from
or a worker that failed to start.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from core.errors import RegistryError
from core.registry import MANIFEST, Registry, split_ref
from service.config import Settings

STARTUP_FAILURE = 3  # uvicorn's exit status for a worker that failed to start


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
        _check_monitor_settings()
    except ValidationError as exc:
        _fail(setting_error(exc), 2)
    except ValueError as exc:
        _fail(" ".join(str(exc).split()), 2)
    problem = registry_problem(settings)
    if problem:
        _fail(problem, STARTUP_FAILURE)
    # One BLAS/OpenMP thread per worker by default: workers, not threads, use the cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(settings.model_threads))
    run(settings)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_monitor_settings() -> None:
    from monitoring.config import MonitorSettings

    MonitorSettings()


def setting_error(exc: ValidationError) -> str:
    """One line naming each bad SERVEWATCH_ variable, its value and the rule it breaks."""
    parts = []
    for err in exc.errors():
        loc = "_".join(str(p) for p in err["loc"] if not isinstance(p, int))
        name = f"SERVEWATCH_{loc.upper()}" if loc else "settings"
        value = err.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        parts.append(f"{name}{shown}: {err['msg']}")
    return "; ".join(parts)


def registry_problem(settings: Settings) -> str | None:
    """Why this process cannot serve a single model from its registry (None: it can).

    Reads what a worker will read first: the registry folder, each model's folder, the served
    version's manifest and files (opened, not hashed). A model that is missing or refused is a
    problem the service reports on /readyz while others serve; no model at all is a failed start.
    """
    root = settings.registry
    who = f"uid {os.getuid()}"
    try:
        registry = Registry(root)
        names = [split_ref(w)[0] for w in settings.models] or registry.models()
    except PermissionError as exc:
        return f"cannot read {exc.filename or root} (the registry) as {who}: permission denied"
    except OSError as exc:
        return f"cannot read the registry {root}: {exc.strerror or exc}"
    if not root.is_dir():
        return f"the registry {root} is not a folder (SERVEWATCH_REGISTRY)"
    if not names:
        return f"the registry {root} holds no model (train one, or copy a version folder in)"
    unresolved = []
    for wanted in settings.models or names:
        name, ref = split_ref(wanted)
        try:
            version_dir = registry.path(name, registry.resolve(name, ref))
            files = [MANIFEST, *registry.raw_manifest(name, int(version_dir.name)).get("files", {})]
            for rel in files:
                with (version_dir / rel).open("rb"):
                    pass
        except PermissionError as exc:
            return f"cannot read {exc.filename} as {who}: permission denied"
        except (RegistryError, OSError, ValueError) as exc:
            unresolved.append(f"{wanted}: {exc}")
    if len(unresolved) == len(settings.models or names):
        return "no model can be served: " + "; ".join(unresolved)
    return None


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
    config = uvicorn.Config(
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
    try:
        started = _run_workers(config) if settings.workers > 1 else _run_one(config)
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    if not started:
        _fail("a worker failed to start (its log above names the cause)", STARTUP_FAILURE)


def _run_one(config: Any) -> bool:
    """One worker in this process; False when it failed to start. A SIGTERM or SIGINT ends it
    gracefully with status 0 (uvicorn would re-raise the signal after its shutdown)."""
    import uvicorn

    stopped: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda sig, _frame: stopped.append(sig))
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # STARTUP_FAILURE when the app fails to start
        return exc.code in (0, None)
    return bool(server.started or stopped)


def _run_workers(config: Any) -> bool:
    """uvicorn's supervisor, which returns normally when a worker fails to start; False then."""
    from uvicorn.supervisors.multiprocess import Multiprocess

    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    try:
        supervisor.run()
    except KeyboardInterrupt:
        pass
    return not any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
