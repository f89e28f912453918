"""Build the manifest: what a trained version says about itself (docs/architecture.md)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pandas as pd

from core import labels
from core.registry import DataRecord, Decision, FeatureSchema, ManifestDraft, ModelInfo, Objective
from training import data, sources
from training.assessment import Assessment, Champion
from training.fingerprints import RowPrints
from training.fitting import Fitted
from training.prepare import Prepared
from training.schema import infer_schema
from training.search import FamilyResult
from training.selection import Selection
from training.threshold import Chosen


def build_manifest(
    prepared: Prepared,
    selection: Selection,
    fitted: Fitted,
    assessment: Assessment,
    champion: Champion | None,
    chosen: Chosen | None = None,
    *,
    started: float,
    rows: RowPrints | None = None,
) -> ManifestDraft:
    """The manifest of a trained version, before publishing adds `version`, `files`, `plots`.

    `started` is the run's `time.monotonic()` at its start (for `training_seconds`); `rows` its
    row fingerprints (`data.row_fingerprints`)."""
    config, classes = prepared.config, prepared.classes
    return ManifestDraft(
        name=config.name,
        created_at=now(),
        task=prepared.task,
        target=prepared.target,
        classes=labels.native_classes(classes, prepared.label_type) if classes else None,
        label_type=prepared.label_type,
        features=_features(fitted.x_full, prepared),
        objective=Objective(
            metric=prepared.metric,
            min_test_score=config.objective.min_test_score,
            test_score=assessment.score,
            passed=True,  # a run that misses its objective publishes nothing
        ),
        model=_model_record(prepared, selection, fitted),
        decision=Decision.model_validate(chosen.record) if chosen is not None else None,
        metrics=_metrics_record(selection, fitted, assessment),
        fairness=assessment.fairness,
        champion=champion,
        error_analysis={"worst_slices": assessment.worst_slices},
        explanations={
            "permutation_importance": assessment.importances,
            "shap": assessment.shap,
        },
        data_quality=prepared.report.to_dict(),
        data=_data_record(prepared, rows),
        personal_data=config.features.personal,
        config=_config_record(prepared),
        libraries=library_versions(),
        git_commit=git_commit(),
        training_seconds=round(time.monotonic() - started, 1),
    )


def _features(x: pd.DataFrame, prepared: Prepared) -> list[FeatureSchema]:
    """The input schema as the manifest records it: a bound not known is left out, not null."""
    schema = infer_schema(x, prepared.kinds)
    return [FeatureSchema.model_validate(f.model_dump(exclude_none=True)) for f in schema]


SELECTION_RULE = (
    "one standard error of the paired per-fold CV difference; within it "
    "the default (in a family) and the simplest family (between families)"
)


def _model_record(prepared: Prepared, selection: Selection, fitted: Fitted) -> ModelInfo:
    """The manifest's `model`: the family and its parameters (an ensemble's method and
    members when one is published), calibration, the candidates, the search and selection."""
    ens = fitted.ensemble or {}
    published = bool(ens.get("published"))
    config = prepared.config
    return ModelInfo.model_validate(
        {
            "family": "ensemble" if published else selection.family,
            "params": {"method": ens["method"], "members": ens["params"]}
            if published
            else selection.best.params,
            "calibration": fitted.calibration,
            "ensemble": fitted.ensemble,
            "candidates": [_candidate_record(r) for r in selection.results],
            "skipped_families": selection.skipped,
            "search": {
                "method": config.search.resolved_method,
                "scoring": str(selection.scoring),
                "rows": selection.rows,
                "grown_rows": selection.rungs[1:],
                "folds": selection.folds,
                "budget": _budget_record(selection),
            },
            "selection": {
                "rule": SELECTION_RULE,
                "compared_on": "fresh folds"
                if all(r.fresh(r.best) for r in selection.results if r.best)
                else "search folds",
                "leader": selection.leader,
                "within_noise": list(selection.within_noise),
                "chosen": selection.family,
            },
        }
    )


def _candidate_record(result: FamilyResult) -> dict[str, Any]:
    """One family's line in `model.candidates`: its best CV figures, trials and noise record."""
    best = result.best
    return {
        "family": result.family,
        "cv_score": best.score if best else None,
        "cv_std": best.std if best else None,
        "cv_rows": best.rows if best else None,
        "trials": len(result.trials),
        "default_cv_score": result.trials[0].score if result.trials else None,
        **_noise_record(result),
    }


def _metrics_record(selection: Selection, fitted: Fitted, assessment: Assessment) -> dict[str, Any]:
    """The manifest's `metrics`: the chosen configuration's CV figures, validation, test and
    the baseline's."""
    best = selection.best
    picked = _trials_on(selection, best.rows)
    return {
        "cv": {
            "best_of_trials": best.score,
            "score": best.score,  # the same figure under its old name, for older readers
            "trials": picked,
            "note": f"the best of {picked} trials' cross-validated scores: optimistic by "
            "selection; the test score is the unbiased figure",
            "std": best.std,
            "scoring": str(selection.scoring),
            "rows": best.rows,
        },
        "validation": fitted.validation,
        "test": assessment.metrics,
        "baseline": assessment.baseline,
    }


def _data_record(prepared: Prepared, rows: RowPrints | None) -> DataRecord:
    """The manifest's `data`: source (without password), rows, fingerprint, split, time range
    and the row fingerprints' record."""
    config, splits = prepared.config, prepared.splits
    return DataRecord.model_validate(
        {
            "source": sources.without_password(config.data) if config.data else None,
            **({"read": prepared.source} if prepared.source else {}),
            "rows": len(prepared.frame),
            "fingerprint": data.fingerprint(prepared.frame[prepared.keep]),
            "split": {
                "train": len(splits.x_train),
                "validation": len(splits.x_val),
                "test": len(splits.x_test),
                "copies_kept_together": splits.copies,
                "ordered_by": config.time_column,
            },
            "time_range": _time_range(splits, config.time_column),
            **({"row_fingerprints": rows.record()} if rows is not None else {}),
        }
    )


def _config_record(prepared: Prepared) -> dict[str, Any]:
    """The config as run, with the task resolved and the source's password left out."""
    config = prepared.config
    data_source = config.data and sources.without_password(config.data)
    copy = config.model_copy(update={"task": prepared.task, "data": data_source})
    record: dict[str, Any] = json.loads(copy.model_dump_json())
    return record


def _budget_record(selection: Selection) -> dict[str, Any] | None:
    """The search's budget record, with the seconds measured from the search's end to this
    manifest (the steps `reserved_seconds` was estimated for, but the reference sample and
    publishing)."""
    if selection.spent is None:
        return None
    after = None if selection.ended is None else round(time.monotonic() - selection.ended, 2)
    spent = dict(selection.spent)
    shortfall = spent.pop("shortfall", None)  # issue 32's later key, kept last
    return {**spent, "after_search_seconds": after, "shortfall": shortfall}


def _noise_record(result: FamilyResult) -> dict[str, Any]:
    """A candidate's seconds, and what the noise rule compared: its chosen configuration
    (`default` or `tuned`), the top tuned score, the fold scores of both."""
    best, top, default = result.best, result.top, result.default_trial
    return {
        "seconds": round(result.seconds, 2),
        "configuration": None if best is None else "default" if best.default else "tuned",
        "top_cv_score": top.score if top else None,
        "cv_folds": list(best.folds) if best else None,
        "top_cv_folds": list(top.folds) if top else None,
        "default_cv_folds": list(default.folds) if default else None,
        **_fresh_record(result),
    }


def _fresh_record(result: FamilyResult) -> dict[str, Any]:
    """The fold scores of the top and default configurations, and of the chosen one, on the fresh
    folds the noise rule compared them on (training.fresh; None where not re-scored)."""
    top, default, best = (result.fresh(t) for t in (result.top, result.default_trial, result.best))
    return {
        "fresh_cv_score": best.score if best else None,
        "fresh_cv_folds": list(best.folds) if best else None,
        "fresh_top_cv_folds": list(top.folds) if top else None,
        "fresh_default_cv_folds": list(default.folds) if default else None,
    }


def _trials_on(selection: Selection, rows: int) -> int:
    """How many of the chosen family's trials its best was picked among (those on `rows`)."""
    chosen = next((r for r in selection.results if r.family == selection.family), None)
    return sum(1 for t in chosen.trials if t.rows == rows) if chosen else 1


def now() -> str:
    """The manifest's `created_at`: UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def library_versions() -> dict[str, str]:
    """Python's and the libraries' versions a version was made with."""
    out = {"python": platform.python_version()}
    for pkg in ("scikit-learn", "pandas", "numpy", "joblib", "servewatch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def git_commit() -> str | None:
    """The working tree's commit, or None outside a git checkout."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


def _time_range(splits: data.Splits, column: str | None) -> dict[str, str] | None:
    """The first and last time of the rows (train, validation and test); None without one."""
    if not column:
        return None
    t = pd.concat([splits.x_train[column], splits.x_val[column], splits.x_test[column]])
    return {"start": str(t.min()), "end": str(t.max())}
