"""Publish a model fitted on every row: the tested model's configuration refitted on train,
validation and test once the test has been scored (`publish.refit_all`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from core import labels
from training import data, fairness
from training.budget import REFITTABLE_MITIGATIONS
from training.fitting import Fitted, fit_rows
from training.prepare import Prepared, Progress


@dataclass(frozen=True)
class ExtraRows:
    """Rows the refit on all rows learns besides the run's own, never searched, tested or
    sampled for the reference: a retrain's parent's test rows when the parent (refitted on all
    rows) learnt them, so the challenger published learns every row the champion learnt."""

    raw: pd.DataFrame  # as read: the run's features, target and sensitive columns
    why: str


def all_rows(
    prepared: Prepared, fitted: Fitted, say: Progress, extra: ExtraRows | None = None
) -> tuple[Pipeline, dict[str, Any]]:
    """(the model to publish, the manifest's `model.refit`). The tested model `fitted.model`
    (fitted on train + validation) cloned, so that everything its fit chose is kept: family,
    hyperparameters, preprocessing, the calibration method, the ensemble and its members; fitted
    on train + validation + test (and `extra`'s rows). The decision threshold chosen on
    validation stays as chosen."""
    config, splits = prepared.config, prepared.splits
    tested_rows = len(fitted.x_full)
    if not config.publish.refit_all:
        return fitted.model, _as_tested(tested_rows, "publish.refit_all is false")
    mitigation = config.fairness.mitigation
    if mitigation not in REFITTABLE_MITIGATIONS:
        reason = f"fairness.mitigation {mitigation} is published as tested (not refitted)"
        return fitted.model, _as_tested(tested_rows, reason)
    columns = list(fitted.x_full.columns)
    sens = config.fairness.sensitive[:1] if mitigation == "reweight" else []
    parts = [splits.x_train, splits.x_val, splits.x_test]
    x_parts, y_parts = [fitted.x_full, splits.x_test[columns]], [fitted.y_full, splits.y_test]
    if extra is not None:
        x_more, y_more = _extra_rows(prepared, extra, [*dict.fromkeys([*columns, *sens])])
        parts.append(x_more)
        x_parts.append(x_more[columns])
        y_parts.append(y_more)
    x_all, y_all = pd.concat(x_parts), pd.concat(y_parts)
    weights = None
    if sens:
        weights = fairness.reweighting(pd.concat([p[sens[0]] for p in parts]), y_all)
    also = f" + {extra.why}" if extra is not None else ""
    say(f"refit on every row (train + validation + test{also}: {len(x_all)} rows)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = fit_rows(clone(fitted.model), x_all, y_all, weights)
    record: dict[str, Any] = {"all_rows": True, "rows": len(x_all), "tested_rows": tested_rows}
    if extra is not None:
        record["extra_rows"] = len(y_parts[-1])
        record["extra_rows_are"] = extra.why
    record["note"] = (
        "the published model is the tested model's configuration refitted on train + "
        "validation + test; metrics.test, the champion comparison, the explanations and the "
        "reference sample are the tested model's (fitted on train + validation), measured "
        "before the refit on rows it never saw"
    )
    return model, record


def _extra_rows(
    prepared: Prepared, extra: ExtraRows, columns: list[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """`extra`'s rows typed as the run's (`columns`, and labels as the run holds them: a
    classifier's as text, rows of a class the run does not know left out)."""
    target = prepared.target
    rows = extra.raw[extra.raw[target].notna()]
    if prepared.task == "classification":
        y = rows[target].map(labels.key)
        rows, y = rows[y.isin(prepared.classes or [])], y[y.isin(prepared.classes or [])]
    else:
        y = pd.to_numeric(rows[target], errors="coerce").astype("float64")
    x = data.coerce_types(rows, prepared.kinds)[columns]
    return x, y


def _as_tested(rows: int, reason: str) -> dict[str, Any]:
    return {"all_rows": False, "rows": rows, "reason": reason}
