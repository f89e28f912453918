"""Search: every candidate family on the same CV folds of the same rows; the best one is chosen."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from core import metrics as metric_contract
from training import budget, data, fairness, fresh, noise
from training.candidates import (
    calibrated,
    default_params,
    make_estimator,
    model_space,
    preprocessing_space,
    unavailable,
)
from training.config import UNBUDGETED_SECONDS, Family, TrainConfig
from training.errors import TrainingError
from training.growing import grow, sample_rows
from training.pipeline import build_pipeline
from training.prepare import Prepared, Progress
from training.search import (
    FamilyResult,
    FamilySearch,
    Scoring,
    Trial,
    make_cv,
    objective_scoring,
    run_family,
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
    leader: str = ""  # the family with the highest CV score (`family` unless a simpler one tied)
    within_noise: tuple[str, ...] = ()  # families the leader does not beat beyond noise
    spent: dict[str, Any] | None = None  # the manifest's model.search.budget (see `search`)
    ended: float | None = None  # the search's end on its clock (time.monotonic by default)

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


def search(
    prepared: Prepared,
    say: Progress,
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    family_search: Callable[..., FamilySearch] = FamilySearch,
    grow_rows: bool = True,
) -> Selection:
    """Search the families: with `search.budget_seconds`, until the run's budget (from `started`,
    on `clock`, the run's `time.monotonic()`) less what the later steps need is spent, halving over
    families (training.budget); without, `search.trials` each in equal shares of 120 s. Each
    family's trials are `family_search`'s (FamilySearch, or a distributed search's twin drawing
    them from a shared study); the finalists are re-scored on more rows unless `grow_rows` is
    false. Raises TrainingError when none fits."""
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

    opts = config.search
    members = config.ensemble.size if config.ensemble.enabled else 1
    all_rows = len(splits.x_train) + len(splits.x_val) + len(splits.x_test)
    grows = grow_rows and opts.grow_rows and start < total
    given = opts.budget_seconds
    if given:  # the run's budget, from its start
        deadline = (started if started is not None else clock()) + given
    else:  # the search's own bound, from now
        deadline = clock() + UNBUDGETED_SECONDS
    searches: list[FamilySearch] = []
    builds: dict[str, Callable[[dict[str, Any]], Pipeline]] = {}
    cells = len(splits.x_test) * len(prepared.features)
    speed = budget.calibrate() if given else 1.0
    after = budget.after_seconds(cells, speed) if given else 0.0

    def reserve() -> float:
        """What the steps after the search need (budgeted runs), from the trials so far."""
        if not given:
            return 0.0
        done = [f.result for f in searches]
        return budget.reserve_seconds(done, folds=folds, rows=all_rows, members=members,
                                      after=after)  # fmt: skip

    def end() -> float:
        """The search's deadline: the budget less the later steps and growing's first rung."""
        done = [f.result for f in searches]
        grow_first = budget.grow_seconds(done, opts.grow_finalists) if grows and given else 0.0
        return deadline - reserve() - grow_first

    def progress(fam: str, n: int, s: float) -> None:
        of = f"/{opts.cap}" if opts.cap else ""
        left = f"; {max(end() - clock(), 0):.0f}s of the search left" if given else ""
        say(f"search {fam}: trial {n}{of} cv {scoring}={s:.4f}{left}")

    for family in families:
        space = {
            **preprocessing_space(family, config, size),
            **model_space(family, task, size),
        }

        def build(params: dict[str, Any], family: str = family) -> Pipeline:
            return candidate_pipeline(prepared.kinds, family, params, task, config, size=size)

        builds[family] = build
        x_fam, y_fam, fit_params = sample(start, family)
        searches.append(
            family_search(
                family,
                space,
                build,
                x_fam,
                y_fam,
                method=opts.resolved_method,
                cap=opts.cap,
                cv=cv,
                scoring=scoring,
                seed=config.seed,
                fit_params=fit_params,
                default=default_params(family, task, space) if opts.default_first else None,
                on_trial=progress,
                clock=clock,
            )
        )
    search_start = clock()
    if given:
        rungs = budget.spend(searches, end, clock=clock, say=say)
        schedule = "halving over families"
    else:
        for i, fs in enumerate(searches):
            run_family(fs, clock() + (deadline - clock()) / (len(searches) - i), opts.halving)
        rungs, schedule = [list[str](families)], "equal shares"
    results = [f.result for f in searches]
    reached = [start]
    if grows:
        reached = grow(
            results,
            builds,
            sample,
            start=start,
            total=total,
            per_family=opts.grow_finalists,
            deadline=deadline - reserve(),
            cv=cv,
            scoring=scoring,
            say=say,
            clock=clock,
        )
    fresh.rescore(
        results,
        builds,
        sample,
        cv=fresh.fresh_cv(
            task, config.split.cv_folds, ordered, config.seed, config.split.keep_copies_together
        ),
        scoring=scoring,
        deadline=deadline - reserve() + fresh.seconds(results) if given else math.inf,
        say=say,
        clock=clock,
    )
    chosen, best, leader, tied = pick(results)
    say(f"best family: {chosen.family} (cv {scoring}={best.score:.4f} on {best.rows} rows)")
    spent = {
        "budget_seconds": given,
        "schedule": schedule,
        "rungs": rungs,
        "seconds": round(clock() - search_start, 2),
        "reserved_seconds": round(reserve(), 2) if given else None,
        "trial_cap": opts.cap,
        "fresh_folds_seed": config.seed + fresh.SEED_OFFSET,
        "reserved_besides_fits_seconds": round(after, 2) if given else None,
        "calibration_slowdown": round(speed, 2) if given else None,
    }
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
        leader=leader.family,
        within_noise=tuple(tied),
        spent=spent,
        ended=clock(),
    )


def pick(results: list[FamilyResult]) -> tuple[FamilyResult, Trial, FamilyResult, list[str]]:
    """The chosen family and configuration, the leader (the highest CV score; scorers are
    greater-is-better) and the families within its noise: those the leader does not beat beyond
    one standard error of their paired per-fold difference (training.noise). Of the leader and
    those, the simplest family (noise.SIMPLICITY) is chosen. The families are compared on their
    chosen configurations' fresh folds (training.fresh) when every one was re-scored on them, else
    on the search's. Raises TrainingError when no family has a score."""
    chosen_of = [(r, r.best) for r in results if r.best is not None]
    if not chosen_of:
        raise TrainingError("every candidate failed to fit; check the data-quality report")
    again = [a for a in (r.fresh(t) for r, t in chosen_of) if a is not None]
    scores = again if len(again) == len(chosen_of) else [t for _, t in chosen_of]
    compared = sorted(zip(chosen_of, scores, strict=True), key=lambda c: -c[1].score)
    (leader, leader_best), top = compared[0]
    tied = [
        (r, t)
        for (r, t), s in compared[1:]
        if s.rows == top.rows
        and len(s.folds) == len(top.folds) >= 2
        and not noise.beats(top.folds, s.folds)
    ]
    contenders = [(leader, leader_best), *tied]
    chosen, best = min(contenders, key=lambda pair: noise.simplicity(pair[0].family))
    return chosen, best, leader, [r.family for r, _ in tied]


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
