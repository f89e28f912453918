"""Search: every candidate family on the same CV folds of the same rows; the best one is chosen."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from core import metrics as metric_contract
from training import data, fairness
from training.candidates import (
    calibrated,
    default_params,
    make_estimator,
    model_space,
    preprocessing_space,
    unavailable,
)
from training.config import Family, TrainConfig
from training.errors import TrainingError
from training.growing import grow, sample_rows
from training.pipeline import build_pipeline
from training.prepare import Prepared, Progress
from training.search import (
    FamilyResult,
    Scoring,
    Trial,
    make_cv,
    objective_scoring,
    search_family,
)
from training.threshold import positive_index


@dataclass(frozen=True)
class Selection:
    """The search's outcome: every family's result and the chosen one."""

    results: list[FamilyResult]
    family: str
    best: Trial
    skipped: list[Family]  # families not tried (svm on large data)
    scoring: Scoring  # the objective metric's scorer (`str()` is scikit-learn's name for it)
    rows: int  # training rows the search ran on
    rungs: list[int]  # rows the finalists were re-scored on (`rows` first; search.grow_rows)
    folds: int  # CV folds as actually split (fewer than asked on small data)
    size: data.DataSize  # one fold's training part: spaces and estimators are sized to it

    def pipeline(self, prepared: Prepared, calibrate: str | None = None) -> Pipeline:
        """The chosen family's candidate with its best parameters, unfitted (ensembles and
        mitigation fit it again)."""
        return candidate_pipeline(
            prepared.kinds,
            self.family,
            self.best.params,
            prepared.task,
            prepared.config,
            calibrate,
            size=self.size,
        )


def search(prepared: Prepared, say: Progress) -> Selection:
    """Search each family within its share of the budget. Raises TrainingError when none fits."""
    config, task, splits = prepared.config, prepared.task, prepared.splits
    total, ordered = len(splits.x_train), bool(config.time_column)
    start = min(total, config.search.max_rows)

    def rows_of(n: int) -> tuple[pd.DataFrame, pd.Series]:
        idx = sample_rows(total, start, n, ordered, config.seed)
        return splits.x_train.iloc[idx], splits.y_train.iloc[idx]

    x_search, y_search = rows_of(start)
    cv = make_cv(
        task,
        config.split.cv_folds,
        bool(config.time_column),
        config.seed,
        config.split.keep_copies_together,
    )
    folds = cv.get_n_splits(x_search[prepared.features], y_search)  # fewer on small data
    # Spaces and estimators are sized to one fold's training rows; the final fits keep the
    # same sizing so that the model fitted is the one the search chose.
    size = data.size_of(x_search[prepared.features], y_search, task).fold_train(folds)
    scoring = objective_scoring(
        metric_contract.get(prepared.metric).scorer(prepared.n_classes), _positive(prepared)
    )
    families = [
        f for f in config.models if not (f == "svm" and len(splits.x_train) > config.svm_max_rows)
    ]
    for reason in filter(None, map(unavailable, families)):  # e.g. deep without torch
        say(reason)
    families = [f for f in families if unavailable(f) is None]
    skipped = sorted(set(config.models) - set(families))
    if not families:
        raise TrainingError(
            "no model family left to try (svm is skipped on large data, deep without torch)"
        )
    sens = config.fairness.sensitive
    if config.fairness.mitigation == "reweight" and not sens:
        raise TrainingError("fairness.mitigation reweight needs fairness.sensitive columns")

    def sample(n: int, family: str) -> tuple[pd.DataFrame, pd.Series, dict[str, Any] | None]:
        """The search's rows, features and fit parameters (reweighting's weights) on n rows."""
        x, y = rows_of(n)
        fit_params = None
        if config.fairness.mitigation == "reweight" and has_fit_parameter(
            make_estimator(family, task, {}, 0), "sample_weight"
        ):
            fit_params = {"model__sample_weight": fairness.reweighting(x[sens[0]], y)}
        return x[prepared.features], y, fit_params

    deadline = time.monotonic() + config.search.budget_seconds
    results: list[FamilyResult] = []
    builds: dict[str, Callable[[dict[str, Any]], Pipeline]] = {}
    for i, family in enumerate(families):
        family_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(families) - i)
        space = {
            **preprocessing_space(family, config, size),
            **model_space(family, task, size),
        }

        def build(params: dict[str, Any], family: str = family) -> Pipeline:
            return candidate_pipeline(prepared.kinds, family, params, task, config, size=size)

        builds[family] = build
        x_fam, y_fam, fit_params = sample(start, family)
        res = search_family(
            family,
            space,
            build,
            x_fam,
            y_fam,
            method=config.search.method,
            trials=config.search.trials,
            deadline=family_deadline,
            cv=cv,
            scoring=scoring,
            seed=config.seed,
            fit_params=fit_params,
            default=default_params(family, task, space) if config.search.default_first else None,
            halving=config.search.halving,
            on_trial=lambda fam, n, s: say(
                f"search {fam}: trial {n}/{config.search.trials} cv {scoring}={s:.4f}"
            ),
        )
        results.append(res)
    reached = [start]
    if config.search.grow_rows and start < total:
        reached = grow(
            results,
            builds,
            sample,
            start=start,
            total=total,
            per_family=config.search.grow_finalists,
            deadline=deadline,
            cv=cv,
            scoring=scoring,
            say=say,
        )
    # Scorers are greater-is-better (errors are negated), so the highest CV score wins.
    ranked = [(r, r.best) for r in results if r.best is not None]
    ranked.sort(key=lambda pair: -pair[1].score)
    if not ranked:
        raise TrainingError("every candidate failed to fit; check the data-quality report")
    chosen, best = ranked[0]
    say(f"best family: {chosen.family} (cv {scoring}={best.score:.4f} on {best.rows} rows)")
    return Selection(
        results=results,
        family=chosen.family,
        best=best,
        skipped=skipped,
        scoring=scoring,
        rows=len(x_search),
        rungs=reached,
        folds=folds,
        size=size,
    )


def _positive(prepared: Prepared) -> str | None:
    """A binary classifier's positive class as the pipelines hold it (text), else None."""
    classes = prepared.classes
    if not classes or len(classes) != 2:
        return None
    config, splits = prepared.config, prepared.splits
    return classes[positive_index(config.decision, classes, splits.y_train, prepared.label_type)]


def candidate_pipeline(
    kinds: data.FeatureKinds,
    family: str,
    params: dict[str, Any],
    task: str,
    config: TrainConfig,
    calibrate: str | None = None,
    *,
    size: data.DataSize | None = None,
) -> Pipeline:
    """One candidate: preprocessing (its `pre_*` parameters) and the family's estimator."""
    pre = {k[4:]: v for k, v in params.items() if k.startswith("pre_")}
    model_params = {k: v for k, v in params.items() if not k.startswith("pre_")}
    est = make_estimator(family, task, model_params, config.seed, size)
    if calibrate:
        est = calibrated(est, calibrate, size)
    return build_pipeline(
        kinds,
        est,
        family=family,
        prep=config.preprocessing,
        scaler=pre.get("scaler", "standard"),
        interactions=bool(pre.get("interactions", False)),
        pca=pre.get("pca"),
    )
