"""`servewatch models show`: a version's manifest and what `servewatch serve` would run it on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from core.errors import ServewatchError
from core.registry import Registry, split_ref
from training.cli import RegistryOpt, console, out


def serving(registry: Registry, name: str, version: int) -> dict[str, Any]:
    """The version loaded as the service loads it (hashes, signature, the load-time check):
    its serving path and, per part of the model call, what runs it and why."""
    from service.config import Settings
    from service.inference.model import LoadedModel, ModelLoadError

    try:
        compiled = Settings().compiled_trees  # SERVEWATCH_COMPILED_TREES, as `serve` reads it
    except ValueError as exc:
        return {"error": f"settings: {exc}"}
    try:
        model = LoadedModel.load(registry, name, version, compiled=compiled)
    except ModelLoadError as exc:
        return {"error": str(exc)}
    parts = {
        part: {"path": p.runs, "reason": p.reason, **({"detail": p.detail} if p.detail else {})}
        for part, p in model.plan.items()
    }
    return {"path": model.serving_path, "parts": parts}


def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    registry: RegistryOpt = Path("registry"),
    load: Annotated[
        bool,
        typer.Option(
            help="Load the version as the service does and add `serving`: its serving path and "
            "why any part stays on scikit-learn."
        ),
    ] = True,
) -> None:
    """Print a version's manifest (and, under `serving`, what the service would run it on)."""
    reg = Registry(registry)
    name, vref = split_ref(ref)
    try:
        version = reg.resolve(name, vref)
        shown = dict(reg.raw_manifest(name, version))
    except ServewatchError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    if load:
        shown["serving"] = serving(reg, name, version)
    out.print_json(json.dumps(shown, default=str))
