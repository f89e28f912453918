"""`servewatch train` and `servewatch models`: thin Typer commands over the training library."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ServewatchError
from core.registry import Registry

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.publishing import Promote
    from training.train import TrainResult

console = Console(stderr=True, soft_wrap=True)
out = Console()

RegistryOpt = Annotated[
    Path,
    typer.Option("--registry", envvar="SERVEWATCH_REGISTRY", help="Registry root folder."),
]


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


DataOpt = Annotated[
    str | None,
    typer.Option(
        help="CSV or Parquet file, Parquet dataset folder, postgresql:// URL, or demo:flights."
    ),
]
QueryOpt = Annotated[
    str | None, typer.Option(help="With a postgresql:// --data: the SQL that reads the rows.")
]
TableOpt = Annotated[
    str | None, typer.Option(help="With a postgresql:// --data: the table to read.")
]
TargetOpt = Annotated[str | None, typer.Option(help="Target column.")]
TaskOpt = Annotated[str | None, typer.Option(help="classification or regression (inferred).")]
NameOpt = Annotated[str | None, typer.Option(help="Model name in the registry.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML config; flags override it.")]
SensitiveOpt = Annotated[str | None, typer.Option(help="Comma-separated sensitive columns.")]
TimeColumnOpt = Annotated[str | None, typer.Option(help="Order every split by this column.")]
TimeFormatOpt = Annotated[
    str | None,
    typer.Option(help="How the time column's text reads: a strftime format, or dayfirst."),
]
SearchOpt = Annotated[
    str | None,
    typer.Option(help="grid, random or bayes (default: bayes with a budget, else random)."),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option(
        help="The run's time budget: the search draws trials until what is left is what "
        "the final fits need, the promising families getting more."
    ),
]
TrialsOpt = Annotated[
    int | None,
    typer.Option(help="Trials per model family: a cap with --budget-seconds, else 8."),
]
ModelsOpt = Annotated[str | None, typer.Option(help="Comma-separated families to compare.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (reproducible runs).")]
PromoteOpt = Annotated[str, typer.Option(help="auto, always or never.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")]
StudyOpt = Annotated[
    str | None,
    typer.Option(
        help="Spread the search over workers drawing trials from this Optuna study (in "
        "PostgreSQL); worker 0 publishes once. A new search needs a new name."
    ),
]
StudyStorageOpt = Annotated[
    str | None,
    typer.Option(
        envvar="SERVEWATCH_STUDY_STORAGE",
        help="The study's postgresql:// URL [default: SERVEWATCH_DATABASE_URL].",
    ),
]
WorkersOpt = Annotated[
    int, typer.Option(min=1, help="Worker processes on this machine (needs --study).")
]
WorkerIndexOpt = Annotated[
    int,
    typer.Option(
        min=0,
        envvar="JOB_COMPLETION_INDEX",
        help="This worker's index (a Kubernetes Indexed Job's); index 0 publishes.",
    ),
]


def train(
    data: DataOpt = None,
    query: QueryOpt = None,
    table: TableOpt = None,
    target: TargetOpt = None,
    task: TaskOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    registry: RegistryOpt = Path("registry"),
    sensitive: SensitiveOpt = None,
    time_column: TimeColumnOpt = None,
    time_format: TimeFormatOpt = None,
    search: SearchOpt = None,
    budget_seconds: BudgetOpt = None,
    trials: TrialsOpt = None,
    models: ModelsOpt = None,
    seed: SeedOpt = None,
    promote: PromoteOpt = "auto",
    json_out: JsonOpt = False,
    study: StudyOpt = None,
    study_storage: StudyStorageOpt = None,
    workers: WorkersOpt = 1,
    worker_index: WorkerIndexOpt = 0,
) -> None:
    """Train, evaluate and publish a new model version."""
    from training.config import load_config
    from training.errors import TrainingError
    from training.publishing import promote_mode

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
    try:
        mode = promote_mode(promote)
        if study is None and (workers > 1 or worker_index > 0):
            raise TrainingError(
                "--workers and --worker-index need --study NAME (the study workers share)"
            )
        cfg = load_config(config, overrides)
        result = _run(cfg, Registry(registry), mode, study, study_storage, workers, worker_index)
    except ServewatchError as exc:
        raise _fail(exc) from None
    if result is None:
        console.print(f"worker {worker_index}: no trial left in study {study}")
        return
    _report(result, Registry(registry), json_out)


def _run(
    cfg: TrainConfig,
    registry: Registry,
    mode: Promote,
    study: str | None,
    study_storage: str | None,
    workers: int,
    worker_index: int,
) -> TrainResult | None:
    """One run under a progress spinner, alone or as a worker of `study`; None when a worker
    found no trial left."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from training.train import run_training

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
            return run_training(cfg, registry, progress=say, promote=mode)
        from training import distributed

        spec = distributed.StudySpec.resolve(study, study_storage)
        return distributed.train(
            cfg, registry, spec, workers=workers, index=worker_index, progress=say, promote=mode
        )


def _report(result: TrainResult, registry: Registry, json_out: bool) -> None:
    """The published version in one line (or its manifest as JSON)."""
    m = result.manifest
    if json_out:
        out.print_json(json.dumps(m, default=str))
        return
    metric = m["objective"]["metric"]
    console.print(
        f"[green]published[/green] {result.name} v{result.version} "
        f"({m['model']['family']}, test {metric}={m['objective']['test_score']:.4f}, "
        f"baseline {m['metrics']['baseline'][metric]:.4f}) "
        f"to {registry.root / result.name / str(result.version)}"
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
