"""`servewatch train` and `servewatch models`: thin Typer commands over the training library."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ServewatchError
from core.registry import Registry

console = Console(stderr=True, soft_wrap=True)
out = Console()

RegistryOpt = Annotated[
    Path,
    typer.Option("--registry", envvar="SERVEWATCH_REGISTRY", help="Registry root folder."),
]


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def train(
    data: Annotated[
        str | None,
        typer.Option(
            help="CSV or Parquet file, Parquet dataset folder, postgresql:// URL, or demo:flights."
        ),
    ] = None,
    query: Annotated[
        str | None, typer.Option(help="With a postgresql:// --data: the SQL that reads the rows.")
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="With a postgresql:// --data: the table to read.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target column.")] = None,
    task: Annotated[
        str | None, typer.Option(help="classification or regression (inferred).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name in the registry.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config; flags override it.")] = None,
    registry: RegistryOpt = Path("registry"),
    sensitive: Annotated[
        str | None, typer.Option(help="Comma-separated sensitive columns.")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="Order every split by this column.")
    ] = None,
    time_format: Annotated[
        str | None,
        typer.Option(help="How the time column's text reads: a strftime format, or dayfirst."),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(help="grid, random or bayes (default: bayes with a budget, else random)."),
    ] = None,
    budget_seconds: Annotated[
        float | None,
        typer.Option(
            help="The run's time budget: the search draws trials until what is left is what "
            "the final fits need, the promising families getting more."
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(help="Trials per model family: a cap with --budget-seconds, else 8."),
    ] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated families to compare.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (reproducible runs).")] = None,
    promote: Annotated[str, typer.Option(help="auto, always or never.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    study: Annotated[
        str | None,
        typer.Option(
            help="Spread the search over workers drawing trials from this Optuna study (in "
            "PostgreSQL); worker 0 publishes once. A new search needs a new name."
        ),
    ] = None,
    study_storage: Annotated[
        str | None,
        typer.Option(
            envvar="SERVEWATCH_STUDY_STORAGE",
            help="The study's postgresql:// URL [default: SERVEWATCH_DATABASE_URL].",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes on this machine (needs --study).")
    ] = 1,
    worker_index: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="JOB_COMPLETION_INDEX",
            help="This worker's index (a Kubernetes Indexed Job's); index 0 publishes.",
        ),
    ] = 0,
) -> None:
    """Train, evaluate and publish a new model version."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from training.config import load_config
    from training.errors import TrainingError
    from training.train import run_training

    overrides = {
        "data": data,
        "source.query": query,
        "source.table": table,
        "target": target,
        "task": task,
        "name": name,
        "time_column": time_column,
        "time_format": time_format,
        "seed": seed,
        "search.method": search,
        "search.budget_seconds": budget_seconds,
        "search.trials": trials,
        "fairness.sensitive": sensitive.split(",") if sensitive else None,
        "models": models.split(",") if models else None,
    }
    from training.publishing import promote_mode

    try:
        mode = promote_mode(promote)
        if study is None and (workers > 1 or worker_index > 0):
            raise TrainingError(
                "--workers and --worker-index need --study NAME (the study workers share)"
            )
        cfg = load_config(config, overrides)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            job = bar.add_task("starting", total=None)
            say: Callable[[str], None] = lambda m: bar.update(job, description=m)  # noqa: E731
            if study is None:
                result = run_training(cfg, Registry(registry), progress=say, promote=mode)
            else:
                from training import distributed

                spec = distributed.StudySpec.resolve(study, study_storage)
                shared = distributed.train(
                    cfg, Registry(registry), spec, workers=workers, index=worker_index,
                    progress=say, promote=mode,
                )  # fmt: skip
                if shared is None:
                    console.print(f"worker {worker_index}: no trial left in study {study}")
                    return
                result = shared
    except ServewatchError as exc:
        raise _fail(exc) from None
    m = result.manifest
    if json_out:
        out.print_json(json.dumps(m, default=str))
        return
    metric = m["objective"]["metric"]
    console.print(
        f"[green]published[/green] {result.name} v{result.version} "
        f"({m['model']['family']}, test {metric}={m['objective']['test_score']:.4f}, "
        f"baseline {m['metrics']['baseline'][metric]:.4f}) "
        f"to {Registry(registry).root / result.name / str(result.version)}"
        + (f"; alias {result.promoted_to}" if result.promoted_to else ""),
        highlight=False,
    )


models_app = typer.Typer(
    help="List, inspect, promote, roll back and import model versions.", no_args_is_help=True
)


@models_app.command("list")
def list_models(registry: RegistryOpt = Path("registry")) -> None:
    """Every model with its versions and aliases."""
    reg = Registry(registry)
    table = Table("model", "version", "created", "family", "test score", "aliases")
    for name in reg.models():
        aliases = reg.aliases(name)
        for v in reg.versions(name):
            raw = reg.raw_manifest(name, v)
            tags = ", ".join(a for a, e in aliases.items() if e.get("version") == v)
            score = raw.get("objective", {}).get("test_score")
            metric = raw.get("objective", {}).get("metric", "")
            table.add_row(
                name,
                str(v),
                raw.get("created_at", ""),
                str(raw.get("model", {}).get("family", "")),
                f"{metric} {score:.4f}" if isinstance(score, float) else "-",
                tags,
            )
    if not table.row_count:
        console.print(f"no models in {registry}")
        return
    out.print(table)


@models_app.command("promote")
def promote_cmd(
    name: str,
    version: int,
    alias: Annotated[str, typer.Option(help="production or staging")] = "production",
    registry: RegistryOpt = Path("registry"),
) -> None:
    """Point an alias at a version (atomically)."""
    try:
        before = Registry(registry).set_alias(name, alias, version)
    except ServewatchError as exc:
        raise _fail(exc) from None
    console.print(f"{name}@{alias}: {before if before is not None else '-'} -> {version}")


@models_app.command("rollback")
def rollback_cmd(
    name: str,
    alias: Annotated[str, typer.Option(help="production or staging")] = "production",
    registry: RegistryOpt = Path("registry"),
) -> None:
    """Move an alias back to the version it pointed to before."""
    try:
        version = Registry(registry).rollback(name, alias)
    except ServewatchError as exc:
        raise _fail(exc) from None
    console.print(f"{name}@{alias} -> {version}")


@models_app.command("import")
def import_cmd(
    pipeline: Annotated[Path, typer.Argument(help="A fitted scikit-learn pipeline (.joblib).")],
    name: Annotated[str, typer.Option(help="Model name.")],
    data: Annotated[str, typer.Option(help="Sample data with the target (CSV/Parquet).")],
    target: Annotated[str, typer.Option(help="Target column in the sample.")],
    registry: RegistryOpt = Path("registry"),
    personal_data: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated columns clients send that are personal data: accepted in "
            "requests, never features, logged as keyed hashes or not at all."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Decision threshold of a binary classifier: `prediction` is the positive class "
            "when its probability is >= this (default: the most probable class)."
        ),
    ] = None,
    positive_label: Annotated[
        str | None,
        typer.Option(
            help="The positive class the threshold applies to (default 1 or True, else the "
            "last of the pipeline's classes)."
        ),
    ] = None,
) -> None:
    """Register a pipeline fitted elsewhere; schema, reference and metrics come from a sample."""
    from training.importer import import_pipeline

    personal = [c.strip() for c in (personal_data or "").split(",") if c.strip()]
    try:
        version = import_pipeline(
            pipeline,
            name=name,
            sample=data,
            target=target,
            registry=Registry(registry),
            personal_data=personal,
            threshold=threshold,
            positive_label=positive_label,
        )
    except ServewatchError as exc:
        raise _fail(exc) from None
    console.print(f"imported {name} v{version} into {registry}")
