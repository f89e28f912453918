"""run_training(): the training steps composed, from a config to a published, promoted version."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from core.registry import ManifestDraft, ReferenceSample, Refit, Registry, RowFingerprints
from training import ensemble, fingerprints, mitigation, publishing, refit, shortfall, threshold
from training.assessment import Assessment, Champion, assess, save_reports, score_champion
from training.config import TrainConfig
from training.fingerprints import RowPrints
from training.fitting import Fitted, fit_and_calibrate
from training.manifest import build_manifest
from training.prepare import Prepared, Progress, prepare, quiet, sample_pinned, search_rows
from training.publishing import (
    Alias,
    Promote,
    Release,
    publish,
    unseen_baseline,
    unseen_reference,
)
from training.selection import Selection, search
from training.threshold import Chosen

__all__ = ["Candidate", "Progress", "Promote", "TrainResult", "run_training", "train_candidate"]


@dataclass
class TrainResult:
    """A run's outcome: the version published (None for a dry run), its manifest as written
    (the JSON object of manifest.json) and the alias it took."""

    name: str
    version: int | None
    manifest: dict[str, Any]
    promoted_to: Alias | None


@dataclass
class Candidate:
    """A trained model that met its objective, with its manifest: ready to gate and publish."""

    prepared: Prepared
    assessment: Assessment
    model: Pipeline
    reference: pd.DataFrame
    manifest: ManifestDraft
    champion: Champion | None
    rows: RowPrints  # the row fingerprints of its train, validation and test rows
    tested: Pipeline | None = None
    """The tested model (fitted on train + validation; metrics.test are its figures) when `model`
    is its refit on all rows; None when `model` is the tested model."""

    def release(self) -> Release:
        reports = partial(save_reports, prepared=self.prepared, assessment=self.assessment)
        return Release(self.model, self.reference, self.manifest, reports=reports, rows=self.rows)


Select = Callable[[Prepared, Progress, float], Selection]
"""The search step: selection.search, or a distributed search's (training.distributed)."""


def train_candidate(
    config: TrainConfig,
    registry: Registry,
    say: Progress = quiet,
    *,
    select: Select = search,
    prepared: Prepared | None = None,
    started: float | None = None,
    refit_extra: refit.ExtraRows | None = None,
) -> Candidate:
    """Prepare (unless `prepared` is given; a source's search on its sample first), search
    (`select`), fit and calibrate, evaluate, build the manifest: everything but publishing; the
    run's budget counts from `started` (default: now, on time.monotonic); a refit on all rows
    also learns `refit_extra`'s rows (recorded as the fingerprints' `refit` split). Raises
    TrainingError; writes nothing."""
    started = time.monotonic() if started is None else started
    selection = None
    if prepared is None:  # a source: search on its sample, then read every row (docs/scaling.md)
        sample = search_rows(config, say)
        if sample is not None:
            mitigation.check(sample)
            threshold.check(sample)
            selection = select(sample, say, started)
        prepared = prepare(config, say, sample)
        if not sample_pinned(prepared):  # the sample was not used: search every row read
            selection = None
    raw, rows = fingerprints.of_run(prepared)
    mitigation.check(prepared)
    threshold.check(prepared)
    selection = select(prepared, say, started) if selection is None else selection
    fitted = _fit_within(prepared, selection, started, say)
    fitted, mitigated = mitigation.apply(prepared, selection, fitted, say)
    fitted, chosen = threshold.step(prepared, fitted, say)
    assessment = assess(prepared, fitted, selection, say, chosen)
    champion = score_champion(registry, prepared, assessment, fitted.model, chosen, raw)
    manifest = build_manifest(
        prepared, selection, fitted, assessment, champion, chosen, started=started, rows=rows
    )
    if mitigated is not None:
        positive = chosen.positive if chosen is not None else 1
        mitigation.record(manifest, prepared, assessment, mitigated, positive)
    cfg, splits = prepared.config, prepared.splits
    columns = list(fitted.x_full.columns)
    # the same model fitted on train only never saw the validation rows (a mitigated model's
    # on_train is the unmitigated one: not the same model)
    validation = (
        (fitted.on_train, splits.x_val[columns], splits.y_val)
        if fitted.on_train is not None and mitigated is None
        else None
    )
    reference, drawn = unseen_reference(
        fitted.model,
        (splits.x_test[columns], splits.y_test),
        (fitted.x_full, fitted.y_full),
        prepared.task,
        cfg.reference_rows,
        cfg.seed,
        threshold=chosen.threshold if chosen else None,
        positive=chosen.positive if chosen else 1,
        validation=validation,
        say=say,
        ordered=bool(cfg.time_column),
        keep_copies=cfg.split.keep_copies_together,
    )
    manifest.reference = ReferenceSample.model_validate(drawn)
    # the reference above is the tested model's; the model published may be its refit on all rows
    manifest.reference.predicted_by = "tested model"
    # a mitigated model's copies would be fitted without its mitigation
    if mitigated is None and _baseline_fits(prepared, selection, fitted, started, say):
        _add_baseline(manifest.reference, prepared, fitted, chosen, say)
    model, refitted = refit.all_rows(prepared, fitted, say, refit_extra)
    manifest.model.refit = Refit.model_validate(refitted)
    if refitted["all_rows"] and refit_extra is not None:
        rows = fingerprints.with_rows(rows, refit_extra.raw, fingerprints.REFIT)
        if manifest.data is not None:
            manifest.data.row_fingerprints = RowFingerprints.model_validate(rows.record())
    manifest.training_seconds = round(time.monotonic() - started, 1)
    tested = fitted.model if refitted["all_rows"] else None
    return Candidate(prepared, assessment, model, reference, manifest, champion, rows, tested)


def _fit_within(prepared: Prepared, selection: Selection, started: float, say: Progress) -> Fitted:
    """Fit, calibrate and consider an ensemble, without the optional steps a budgeted run
    skips (training/shortfall.py)."""
    skipped = {s["step"] for s in shortfall.decide(prepared, selection, started, say)}
    fitted = fit_and_calibrate(prepared, selection, say, calibrate="calibration" not in skipped)
    if "ensemble" in skipped:
        return ensemble.skipped(fitted, "skipped for the budget (model.search.budget)")
    return ensemble.consider(prepared, selection, fitted, say)


def _baseline_fits(
    prepared: Prepared, selection: Selection, fitted: Fitted, started: float, say: Progress
) -> bool:
    """Whether what is left of a budget pays for the baseline's copies of the model as fitted
    (training/shortfall.py `keep_baseline`)."""
    ens = fitted.ensemble or {}
    members = ens["members"] if ens.get("published") else [selection.family]
    calibrated = prepared.task == "classification" and fitted.calibration != "none"
    return shortfall.keep_baseline(prepared, selection, members, calibrated, started, say)


def _add_baseline(
    reference: ReferenceSample,
    prepared: Prepared,
    fitted: Fitted,
    chosen: Chosen | None,
    say: Progress,
) -> None:
    """`reference.baseline` (`publishing.unseen_baseline`): the tested model's metrics on its
    test rows and its fitted rows predicted out of fold, split as the search's (the test rows alone
    with a time column); left out when it cannot be measured."""
    splits, columns = prepared.splits, list(fitted.x_full.columns)
    config = prepared.config
    baseline = unseen_baseline(
        fitted.model,
        (splits.x_test[columns], splits.y_test),
        (fitted.x_full, fitted.y_full),
        prepared.task,
        config.seed,
        threshold=chosen.threshold if chosen else None,
        positive=chosen.positive if chosen else 1,
        say=say,
        folds=config.publish.baseline_folds,
        ordered=bool(config.time_column),
        keep_copies=config.split.keep_copies_together,
    )
    if baseline is not None:  # a key the section keeps as set (ReferenceSample allows extras)
        setattr(reference, "baseline", baseline)  # noqa: B010


def run_training(
    config: TrainConfig,
    registry: Registry,
    *,
    progress: Progress | None = None,
    promote: Promote = "auto",
    select: Select = search,
    prepared: Prepared | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train, evaluate, publish and promote one version (train_candidate's `select`, `prepared`
    and `started`). Raises TrainingError; writes nothing on failure."""
    mode = publishing.promote_mode(promote)  # a caller without a type checker gets a clear error
    say = progress or quiet
    candidate = train_candidate(
        config, registry, say, select=select, prepared=prepared, started=started
    )
    name = candidate.prepared.config.name
    version = publish(registry, name, candidate.release(), say)
    promoted = publishing.promote(
        registry, name, version, mode, candidate.champion, candidate.prepared.metric
    )
    return TrainResult(name, version, candidate.manifest.body(), promoted)
