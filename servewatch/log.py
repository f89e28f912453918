"""`servewatch log maintain`: partitions ahead, retention behind (the CronJob's command)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from core.errors import first_line
from service.config import Settings

log_app = typer.Typer(help="The prediction log: partitions and retention.", no_args_is_help=True)


@log_app.command("maintain")
def maintain(
    database_url: Annotated[
        str | None, typer.Option(help="Prediction log URL [env SERVEWATCH_DATABASE_URL].")
    ] = None,
    retention_days: Annotated[
        float | None,
        typer.Option(help="Remove rows older than this [env SERVEWATCH_LOG_RETENTION_DAYS]."),
    ] = None,
) -> None:
    """Create the log tables (partitioning an unpartitioned PostgreSQL log once no pod of a
    release before the partitioned log writes to it: until then `"migration": "deferred"`),
    create partitions ahead, move rows out of the DEFAULT partition and drop what is older than
    the retention; prints what it did as JSON."""
    from predlog.retention import maintain as run_maintenance
    from predlog.retention import summary
    from predlog.store import PredictionStore

    overrides: dict[str, object] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if retention_days is not None:
        overrides["log_retention_days"] = retention_days
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    store = PredictionStore(
        settings.database_url,
        partition_hours=settings.log_partition_hours,
        partitions_ahead=settings.log_partitions_ahead,
    )
    try:
        done = run_maintenance(store, settings.log_retention_days, migrate=True)
    except Exception as exc:
        typer.echo(f"error: log maintenance failed: {first_line(exc, None)}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.dispose()
    typer.echo(json.dumps(summary(done)))
