"""Publish a model fitted on every row: the tested model's configuration refitted on train,
validation and test once the test has been scored (`publish.refit_all`)."""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from training import fairness
from training.fitting import Fitted, fit_rows
from training.prepare import Prepared, Progress

REFITTABLE_MITIGATIONS = ("none", "reweight")
"""Mitigations a refit repeats as they were fitted (reweight: weights over every row). The
others are published as tested: postprocess fits its per-group thresholds on the validation rows
(on all rows they would be fitted on rows the model learnt), and resample, reductions and
adversarial refit their own way."""


def all_rows(prepared: Prepared, fitted: Fitted, say: Progress) -> tuple[Pipeline, dict[str, Any]]:
    """(the model to publish, the manifest's `model.refit`). The tested model `fitted.model`
    (fitted on train + validation) cloned, so that everything its fit chose is kept: family,
    hyperparameters, preprocessing, the calibration method, the ensemble and its members; fitted
    on train + validation + test. The decision threshold chosen on validation stays as chosen."""
    config, splits = prepared.config, prepared.splits
    tested_rows = len(fitted.x_full)
    if not config.publish.refit_all:
        return fitted.model, _as_tested(tested_rows, "publish.refit_all is false")
    mitigation = config.fairness.mitigation
    if mitigation not in REFITTABLE_MITIGATIONS:
        reason = f"fairness.mitigation {mitigation} is published as tested (not refitted)"
        return fitted.model, _as_tested(tested_rows, reason)
    columns = list(fitted.x_full.columns)
    x_all = pd.concat([fitted.x_full, splits.x_test[columns]])
    y_all = pd.concat([fitted.y_full, splits.y_test])
    weights = None
    if mitigation == "reweight":
        sens = config.fairness.sensitive[0]
        groups = pd.concat([splits.x_train[sens], splits.x_val[sens], splits.x_test[sens]])
        weights = fairness.reweighting(groups, y_all)
    say(f"refit on every row (train + validation + test: {len(x_all)} rows)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = fit_rows(clone(fitted.model), x_all, y_all, weights)
    return model, {
        "all_rows": True,
        "rows": len(x_all),
        "tested_rows": tested_rows,
        "note": "the published model is the tested model's configuration refitted on train + "
        "validation + test; metrics.test, the champion comparison, the explanations and the "
        "reference sample are the tested model's (fitted on train + validation), measured "
        "before the refit on rows it never saw",
    }


def _as_tested(rows: int, reason: str) -> dict[str, Any]:
    return {"all_rows": False, "rows": rows, "reason": reason}
