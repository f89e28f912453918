"""The monitoring loop that `servewatch serve` runs on one machine (a CronJob does it at scale)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from core.registry import Registry
from monitoring import fleet
from monitoring.config import MonitorSettings
from monitoring.runner import MonitorError, run_monitoring
from monitoring.summary import MonitorSummary
from predlog.store import PredictionStore

log = logging.getLogger("servewatch.monitor")


class RetrainOutcome(TypedDict, total=False):
    """What an automatic retrain did: `reason` and `error`, or the new version and its gate."""

    reason: str
    error: str
    version: int | None
    gate_passed: bool
    promoted: str | None


Retrain = Callable[[MonitorSettings, PredictionStore, str, MonitorSummary], RetrainOutcome | None]
"""What a model's run hands its summary to: a gated retrain when `retrain_reason` gives one
(`servewatch.auto_retrain.maybe_retrain`: retraining needs training/, so the composition root
hands it in, as it hands `create_app` its routes); never raises."""


def run_all(
    settings: MonitorSettings, store: PredictionStore, retrain: Retrain | None = None
) -> list[str]:
    """One run per model in the registry, under a file lock so one worker of N does the work;
    after each, `retrain` (None: no automatic retrain).

    Returns the models whose run failed unexpectedly (too little data is not a failure).
    """
    failed: list[str] = []
    lock_path = settings.monitor_reports_dir / ".loop.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with Path(lock_path).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return failed  # another worker is running this round
        try:
            failed = run_fleet(settings, store, retrain=retrain).failed
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return failed


def run_fleet(
    settings: MonitorSettings,
    store: PredictionStore,
    shard: fleet.Shard | None = None,
    slot_seconds: float | None = None,
    retrain: Retrain | None = None,
) -> fleet.FleetOutcome:
    """A run of each model of `shard` (every model without one), each under its lock (a model
    another process is running is left to it), then `retrain`; with `slot_seconds`, a model
    whose run of the current slot finished is skipped and each run finished is recorded
    (monitoring/fleet.py). ValueError for a slot of 0 seconds or less (it would run every
    model every time)."""
    if slot_seconds is not None and slot_seconds <= 0:
        raise ValueError(f"--slot: {slot_seconds:g} seconds; a slot must be longer than 0s")
    outcome = fleet.FleetOutcome()
    fleet.create_schema(store)
    slot = fleet.current_slot(store, slot_seconds) if slot_seconds is not None else None
    lock_dir = settings.monitor_reports_dir / ".locks"
    for model in fleet.models_of(Registry(settings.registry).models(), shard):
        with fleet.model_lock(store, model, lock_dir) as mine:
            if not mine:
                outcome.busy.append(model)
                continue
            if slot is not None and fleet.slot_done(store, model, slot):
                outcome.done.append(model)
                continue
            if not run_one(settings, store, model, retrain):
                outcome.failed.append(model)
                continue
            outcome.ran.append(model)
            if slot is not None:
                fleet.mark_done(store, model, slot)
    return outcome


def run_one(
    settings: MonitorSettings, store: PredictionStore, model: str, retrain: Retrain | None = None
) -> bool:
    """One model's run and the retrain it may ask for (`retrain`; None: none); False when it
    failed unexpectedly (too little data is not a failure). Logs, never raises."""
    try:
        s = run_monitoring(settings=settings, store=store, model=model)
        if retrain is not None:
            retrain(settings, store, model, s)
        drift = s.get("drift")
        log.info(
            "monitoring %s v%s: %d rows, drift share %s, alerts %s",
            model,
            s["version"],
            s["rows"],
            drift["drifted_share"] if drift else None,
            [a["rule"] for a in s["alerts"]],
        )
    except MonitorError as exc:
        log.info("monitoring %s skipped: %s", model, exc)
    except Exception:
        log.exception("monitoring run for %s failed; the loop goes on", model)
        return False
    return True


async def monitor_loop(
    settings: MonitorSettings, store: PredictionStore, retrain: Retrain | None = None
) -> None:
    """Every `monitor_interval` seconds, off the event loop (Evidently is CPU-bound), each
    model's run then `retrain`. Run under the service's supervisor: an error outside a model's
    run (which `run_all` logs and goes on from) is logged, counted and retried, never
    swallowed."""
    # imported here, in the service's process: service.supervise brings the service's metrics,
    # which a `monitor run` job (the CronJob, no PROMETHEUS_MULTIPROC_DIR of its own) must not load
    from service.supervise import healthy

    while True:
        await asyncio.sleep(settings.monitor_interval)
        await asyncio.to_thread(run_all, settings, store, retrain)
        healthy()


def retrain_reason(settings: MonitorSettings, model: str, summary: MonitorSummary) -> str | None:
    """Why an automatic retrain should start now, or None."""
    fired = [
        t["rule"]
        for t in summary.get("transitions", [])
        if t["status"] == "firing" and t["rule"] in settings.retrain_on_alert
    ]
    if fired:
        return f"alert {', '.join(fired)} fired"
    if settings.retrain_interval > 0:
        stamp = settings.monitor_reports_dir / f".retrain-{model}"
        if not stamp.exists() or time.time() - stamp.stat().st_mtime >= settings.retrain_interval:
            return "scheduled"
    return None
