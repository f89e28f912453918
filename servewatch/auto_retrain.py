"""The automatic retrain the composition root hands monitoring's runs (`monitoring.loop.Retrain`).

Retraining needs training/, which monitoring never imports: `servewatch serve`'s loop and
`servewatch monitor run --all` are handed `maybe_retrain`, which imports `servewatch.retrain` (and
so training) only when a run asks for a retrain.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `servewatch`'s every command imports this module: nothing heavy at import
    from monitoring.config import MonitorSettings
    from monitoring.loop import RetrainOutcome
    from monitoring.summary import MonitorSummary
    from predlog.store import PredictionStore

log = logging.getLogger("servewatch.monitor")


def maybe_retrain(
    settings: MonitorSettings, store: PredictionStore, model: str, summary: MonitorSummary
) -> RetrainOutcome | None:
    """Start a gated retrain when an alert or the schedule asks; never raises."""
    from monitoring.loop import retrain_reason

    reason = retrain_reason(settings, model, summary)
    if reason is None:
        return None
    from core.errors import ServewatchError
    from core.registry import Registry
    from servewatch.retrain import retrain

    stamp = settings.monitor_reports_dir / f".retrain-{model}"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    try:
        result = retrain(
            registry=Registry(settings.registry),
            store=store,
            model=model,
            incremental=settings.retrain_incremental,
        )
    except (ServewatchError, OSError) as exc:
        log.warning("automatic retrain of %s (%s) did not run: %s", model, reason, exc)
        return {"reason": reason, "error": str(exc)}
    gate = result.manifest["gate"]
    log.warning(
        "automatic retrain of %s (%s): v%s, gate %s%s",
        model,
        reason,
        result.version,
        "passed" if gate["passed"] else "refused",
        ", promoted to production" if result.promoted_to else "",
    )
    return {
        "reason": reason,
        "version": result.version,
        "gate_passed": gate["passed"],
        "promoted": result.promoted_to,
    }
