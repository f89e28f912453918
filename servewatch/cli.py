"""The `servewatch` command: one Typer app whose subcommands come from each package."""

from __future__ import annotations

import typer

from monitoring.cli import monitor_app, retrain_cmd
from servewatch.log import log_app
from servewatch.models import show
from servewatch.serve import serve
from training.cli import models_app, train

app = typer.Typer(
    help="servewatch: train scikit-learn models, serve them, and watch them in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("train")(train)
models_app.command("show")(show)
app.add_typer(models_app, name="models")
app.command("serve")(serve)
app.add_typer(monitor_app, name="monitor")
app.command("retrain")(retrain_cmd)
app.add_typer(log_app, name="log")
