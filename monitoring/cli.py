"""`servewatch monitor run|ui|export`: a monitoring run from the command line (or a CronJob)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from monitoring.config import MonitorSettings
from monitoring.summary import REPORT_FILE, MonitorSummary

if TYPE_CHECKING:  # the loop brings the runner and the registry: imported when a run starts
    from monitoring.loop import Retrain

console = Console(stderr=True, soft_wrap=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `6h`, `7d` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 30m, 6h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def monitor_settings(registry: Path | None, database_url: str | None) -> MonitorSettings:
    """The monitoring settings, the command's options over SERVEWATCH_ variables."""
    overrides = {
        k: v
        for k, v in {"registry": registry, "database_url": database_url}.items()
        if v is not None
    }
    return MonitorSettings(**overrides)  # type: ignore[arg-type]


RegistryOpt = Annotated[Path | None, typer.Option(help="Registry root [env SERVEWATCH_REGISTRY].")]
DbOpt = Annotated[
    str | None, typer.Option(help="Prediction log URL [env SERVEWATCH_DATABASE_URL].")
]


RUN_HELP = (
    "One monitoring run. Exit code 0 whether or not alerts fire; 2 when the run cannot happen."
)


def make_monitor_app(retrain: Retrain | None = None) -> typer.Typer:
    """The `monitor` commands; `run --all` hands each model's summary to `retrain` (the composition
    root's gated retrain, `servewatch.auto_retrain.maybe_retrain`; None: no automatic retrain)."""
    app = typer.Typer(
        help="Drift and performance over the prediction log; alerts.", no_args_is_help=True
    )
    app.command("run", help=RUN_HELP)(_run_command(retrain))
    app.command("ui")(ui)
    app.command("export")(export)
    return app


def _run_command(retrain: Retrain | None) -> Callable[..., None]:
    """`monitor run`, its fleet mode handed `retrain`."""

    def run(
        model: Annotated[str | None, typer.Option(help="Model name.")] = None,
        all_models: Annotated[
            bool, typer.Option("--all", help="Every model in the registry (the CronJob's mode).")
        ] = False,
        version: Annotated[
            int | None, typer.Option(help="Version (default: production/newest).")
        ] = None,
        since: Annotated[str | None, typer.Option(help="Window: the last 30m, 6h, 7d ...")] = None,
        last: Annotated[int | None, typer.Option(help="Window: the newest N predictions.")] = None,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print the summary as JSON.")
        ] = False,
        shard: Annotated[
            str | None,
            typer.Option(help="With --all: only shard K/N of the models (K from 0; e.g. 0/2)."),
        ] = None,
        slot: Annotated[
            str | None,
            typer.Option(
                help="With --all: a model run once in this slot (10m ...) is not run again."
            ),
        ] = None,
        registry: RegistryOpt = None,
        database_url: DbOpt = None,
    ) -> None:
        """`monitor run` (its help: `RUN_HELP`)."""
        settings = monitor_settings(registry, database_url)
        if all_models:
            _run_fleet(settings, shard, slot, json_out, retrain)
            return
        if shard or slot:
            console.print("[red]error:[/red] --shard and --slot go with --all")
            raise typer.Exit(2)
        if model is None:
            console.print("[red]error:[/red] pass --model NAME or --all")
            raise typer.Exit(2)
        _run_model(settings, model, version, since, last, json_out)

    return run


def _run_model(
    settings: MonitorSettings,
    model: str,
    version: int | None,
    since: str | None,
    last: int | None,
    json_out: bool,
) -> None:
    """`monitor run --model`: one run, its summary printed (as JSON with `json_out`)."""
    from monitoring.runner import MonitorError, Settling, run_monitoring
    from predlog.store import PredictionStore

    ago = parse_duration(since) if since else None  # before the database's clock
    try:
        summary = run_monitoring(
            settings=settings,
            store=PredictionStore(settings.database_url),
            model=model,
            version=version,
            ago=ago,
            last=last,
        )
    except Settling as exc:  # not a failure: the rows are there, a later run takes them
        console.print(f"[yellow]not yet:[/yellow] {exc}", highlight=False)
        return
    except MonitorError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(summary, default=str))
        return
    _print_figures(model, summary)
    _print_canary(summary)
    _print_outcome(summary)


def _print_figures(model: str, summary: MonitorSummary) -> None:
    """The run's rows, drift share, estimated and realised figures and their noise bands."""
    drift = summary.get("drift")
    perf = summary["performance"]
    console.print(
        f"{model} v{summary['version']}: {summary['rows']} rows "
        f"({summary['labelled_rows']} labelled); drift share "
        f"{drift['drifted_share']:.0%}"
        if drift
        else "drift not judged (too few rows)",
        highlight=False,
    )
    console.print(
        f"estimated {perf.get('estimated')}; realised {perf.get('realised')}", highlight=False
    )
    metric, noise = summary.get("metric"), perf.get("noise")
    if metric and noise:
        bands = [
            f"{kind} {metric} worse by up to {band['widths'][metric]:.4g} in {band['rows']:,} rows"
            for kind, band in (("realised", noise["realised"]), ("estimated", noise["estimated"]))
            if band and metric in band["widths"]
        ]
        if bands:
            console.print(
                f"noise band at {noise['confidence']:.0%}: {'; '.join(bands)} ({noise['note']})",
                highlight=False,
            )


def _print_canary(summary: MonitorSummary) -> None:
    """The canary's judgement, when the run judged one."""
    canary = summary.get("canary")
    if canary:
        metric = summary.get("metric")
        judged = (
            f"{metric} {canary['realised']:.4g} vs production {canary['production']:.4g}, "
            f"limit {canary['limit']:.4g}"
            + (f" (noise band {canary['band']:.3g})" if "band" in canary else "")
            if "realised" in canary
            else "not judged: too few labels on one side, carried to the next run"
        )
        console.print(
            f"canary v{canary['version']}: {canary['labelled_rows']} labels; {judged}",
            highlight=False,
        )


def _print_outcome(summary: MonitorSummary) -> None:
    """The reference sample's note, the alerts, the report and the Evidently snapshot."""
    reference = summary.get("reference")
    if reference and not reference["unseen"]:
        console.print(f"reference sample: {reference['note']}", highlight=False)
    for a in summary["alerts"]:
        console.print(
            f"[yellow]ALERT[/yellow] {a['rule']} ({a['severity']}): {a['message']}", highlight=False
        )
    console.print(f"report: {summary['report_dir']}/{REPORT_FILE}", highlight=False)
    workspace = summary.get("evidently")
    if workspace and workspace.get("saved"):
        console.print(f"evidently: snapshot saved to {workspace['workspace']}", highlight=False)
    elif workspace:
        console.print(
            f"[yellow]evidently:[/yellow] {workspace.get('error')} "
            f"({workspace.get('pending', 0)} snapshot(s) pending)",
            highlight=False,
        )


def _run_fleet(
    settings: MonitorSettings,
    shard: str | None,
    slot: str | None,
    json_out: bool,
    retrain: Retrain | None,
) -> None:
    """`monitor run --all [--shard K/N] [--slot 10m]`: exit 1 when a model's run failed."""
    from dataclasses import asdict

    from monitoring.fleet import parse_shard
    from monitoring.loop import run_fleet
    from predlog.store import PredictionStore

    try:
        part = parse_shard(shard) if shard else None
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    seconds = parse_duration(slot) if slot else None
    if seconds is not None and seconds <= 0:
        console.print(f"[red]error:[/red] --slot {slot}: must be longer than 0s", highlight=False)
        raise typer.Exit(2)
    outcome = run_fleet(settings, PredictionStore(settings.database_url), part, seconds, retrain)
    if json_out:
        typer.echo(json.dumps(asdict(outcome)))
    else:
        console.print(
            f"ran {len(outcome.ran)}, failed {len(outcome.failed)}; skipped "
            f"{len(outcome.busy)} running elsewhere, {len(outcome.done)} done in this slot",
            highlight=False,
        )
    if outcome.failed:
        console.print(f"[red]error:[/red] monitoring failed for: {', '.join(outcome.failed)}")
        raise typer.Exit(1)


def ui(
    workspace: Annotated[
        str | None,
        typer.Option(help="Workspace folder [env SERVEWATCH_EVIDENTLY_WORKSPACE]."),
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Listen port.")] = 8000,
) -> None:
    """Evidently's UI over the monitoring runs' workspace: a project per model, a dashboard."""
    import os
    import sys

    location = workspace if workspace is not None else MonitorSettings().evidently_workspace
    location = location.strip()
    if not location or location.startswith(("http://", "https://")):
        where = f"the Evidently UI at {location}" if location else "off"
        console.print(
            f"[red]error:[/red] SERVEWATCH_EVIDENTLY_WORKSPACE is {where}: there is no local "
            "workspace folder to serve (pass --workspace DIR)",
            highlight=False,
        )
        raise typer.Exit(2)
    try:  # an empty workspace is fine: runs sent to this UI by URL fill it
        Path(location).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        console.print(
            f"[red]error:[/red] workspace {location} cannot be created ({exc.strerror})",
            highlight=False,
        )
        raise typer.Exit(2) from None
    env = {**os.environ, "DO_NOT_TRACK": "1"}  # Evidently's usage telemetry: off
    args = ["ui", "--workspace", location, "--host", host, "--port", str(port)]
    os.execve(sys.executable, [sys.executable, "-m", "evidently.cli", *args], env)


def export(
    model: Annotated[str, typer.Option(help="Model name.")],
    out: Annotated[Path, typer.Option(help="CSV or Parquet file to write.")],
    labelled: Annotated[bool, typer.Option(help="Only rows with feedback labels.")] = True,
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
    max_rows: Annotated[int, typer.Option(min=1, help="The newest this many rows at most.")] = (
        1_000_000
    ),
    registry: RegistryOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Write logged inputs with their labels: a file `servewatch train --data` accepts."""
    import orjson
    import pandas as pd

    from core.registry import Registry
    from predlog.store import PredictionStore, WindowQuery

    settings = monitor_settings(registry, database_url)
    try:
        target = (
            Registry(settings.registry)
            .manifest(model, Registry(settings.registry).resolve(model))
            .target
        )
    except Exception as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    store = PredictionStore(settings.database_url)
    window = WindowQuery(model, version=version, labelled=labelled)
    rows = store.read_log_window(window, cap=max_rows, outputs=False)
    records = []
    for r in rows:
        rec = orjson.loads(r["inputs"])
        rec[target] = orjson.loads(r["label"]) if r["label"] is not None else None
        rec["logged_at"] = pd.Timestamp(r["created_at"], unit="s")
        records.append(rec)
    if not records:
        console.print(f"[red]error:[/red] no {'labelled ' if labelled else ''}rows for {model}")
        raise typer.Exit(2)
    frame = pd.DataFrame.from_records(records).sort_values("logged_at")
    if out.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    console.print(f"wrote {len(frame)} rows to {out} (target column {target!r})")
