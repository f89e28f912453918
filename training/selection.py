"""Search: every candidate family on the same CV folds of the same rows; the best one is chosen."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from core import metrics as metric_contract
from training import budget, data, fairness, fresh, noise, shortfall
from training.candidates import (
    calibrated,
    categories_space,
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
    run = _SearchRun.plan(prepared, say, started, clock, grow_rows)
    for family in run.families:
        run.add(family, family_search)
    search_start = clock()
    rungs, schedule = run.spend()
    results = [f.result for f in run.searches]
    reached = run.grow(results)
    run.rescore(results)
    chosen, best, leader, tied = pick(results)
    say(f"best family: {chosen.family} (cv {run.scoring}={best.score:.4f} on {best.rows} rows)")
    spent = run.spent(schedule, rungs, search_start)
    return Selection(
        results=results,
        family=chosen.family,
        best=best,
        skipped=run.skipped,
        scoring=run.scoring,
        rows=run.start,
        rungs=reached,
        folds=run.folds,
        size=run.size,
        leader=leader.family,
        within_noise=tuple(tied),
        spent=spent,
        ended=clock(),
    )


@dataclass
class _SearchRun:
    """One search's shared state: its rows, folds, scorer, families, clock and budget, and the
    family searches as they are added."""

    prepared: Prepared
    say: Progress
    clock: Callable[[], float]
    start: int  # rows searched (the first rung)
    cv: Any
    folds: int
    size: data.DataSize
    scoring: Scoring
    families: list[Family]
    skipped: list[Family]
    deadline: float
    given: float | None  # search.budget_seconds
    grows: bool
    speed: float  # budget.calibrate()'s slowdown (budgeted runs)
    after: float  # seconds the steps after the final fits need (budgeted runs)
    searches: list[FamilySearch] = field(default_factory=list)
    builds: dict[str, Callable[[dict[str, Any]], Pipeline]] = field(default_factory=dict)
    floor: float | None = None  # the floor's estimate, when the budget is below it

    @classmethod
    def plan(
        cls,
        prepared: Prepared,
        say: Progress,
        started: float | None,
        clock: Callable[[], float],
        grow_rows: bool,
    ) -> _SearchRun:
        """The rows, folds, sizing, scorer and families of a search, and its deadline."""
        config, task, splits = prepared.config, prepared.task, prepared.splits
        total = len(splits.x_train)
        start = min(total, config.search.max_rows)
        x_search, y_search = _rows_of(prepared, start, start)
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
        families, skipped = _families(config, total, say)
        if config.fairness.mitigation == "reweight" and not config.fairness.sensitive:
            raise TrainingError("fairness.mitigation reweight needs fairness.sensitive columns")
        given = config.search.budget_seconds
        if given:  # the run's budget, from its start
            deadline = (started if started is not None else clock()) + given
        else:  # the search's own bound, from now
            deadline = clock() + UNBUDGETED_SECONDS
        speed = budget.calibrate() if given else 1.0
        after = (
            budget.after_seconds(len(splits.x_test), len(prepared.features), speed)
            if given
            else 0.0
        )
        grows = grow_rows and config.search.grow_rows and start < total
        return cls(prepared, say, clock, start, cv, folds, size, scoring, families, skipped,
                   deadline, given, grows, speed, after)  # fmt: skip

    def sample(self, n: int, family: str) -> tuple[pd.DataFrame, pd.Series, dict[str, Any] | None]:
        """The search's rows, features and fit parameters (reweighting's weights) on n rows."""
        prepared = self.prepared
        config = prepared.config
        x, y = _rows_of(prepared, self.start, n)
        fit_params = None
        if config.fairness.mitigation == "reweight" and has_fit_parameter(
            make_estimator(family, prepared.task, {}, 0), "sample_weight"
        ):
            sens = config.fairness.sensitive
            fit_params = {"model__sample_weight": fairness.reweighting(x[sens[0]], y)}
        return x[prepared.features], y, fit_params

    def reserve(self) -> float:
        """What the steps after the search need (budgeted runs), from the trials so far: the
        leading families' measured fit and predict seconds a row times the rows of the fits
        and of the assessment's predictions (`budget.reserve_seconds`); the baseline's copies
        only when they will be fitted (`budget.baseline_copies`), and the fairness mitigation's
        fits (`budget.mitigation_fits`)."""
        if not self.given:
            return 0.0
        splits = self.prepared.splits
        config = self.prepared.config
        all_rows = len(splits.x_train) + len(splits.x_val) + len(splits.x_test)
        members = config.ensemble.size if config.ensemble.enabled else 1
        done = [f.result for f in self.searches]
        copies = budget.baseline_copies(
            config.publish.baseline_folds,
            len(splits.x_train) + len(splits.x_val),
            mitigated=config.fairness.mitigation != "none",
            ordered=bool(config.time_column),
        )
        mitigation = config.fairness.mitigation
        fit_share = (all_rows - len(splits.x_test)) / all_rows
        classification = self.prepared.task == "classification"
        fits = budget.chosen_fits(
            calibration=config.calibration,
            classification=classification,
            fit_share=fit_share,
            train_share=len(splits.x_train) / all_rows,
            refit=config.publish.refit_all and mitigation in budget.REFITTABLE_MITIGATIONS,
        )
        calibrated = classification and config.calibration != "none"
        copy_fits = (budget.CALIBRATED_FIT if calibrated else 1.0) * fit_share
        return budget.reserve_seconds(done, folds=self.folds, rows=all_rows, members=members,
                                      after=self.after, baseline_folds=copies,
                                      mitigation=budget.mitigation_fits(mitigation),
                                      fits=fits, copy_fits=copy_fits,
                                      test_rows=len(splits.x_test),
                                      features=len(self.prepared.features),
                                      speed=self.speed, calibrated=calibrated)  # fmt: skip

    def end(self) -> float:
        """The search's deadline: the budget less the later steps and growing's first rung."""
        done = [f.result for f in self.searches]
        grow_first = (
            budget.grow_seconds(done, self.prepared.config.search.grow_finalists)
            if self.grows and self.given
            else 0.0
        )
        return self.deadline - self.reserve() - grow_first

    def progress(self, fam: str, n: int, s: float) -> None:
        """Say a trial's CV score (and, budgeted, the search's seconds left)."""
        cap = self.prepared.config.search.cap
        of = f"/{cap}" if cap else ""
        left = (
            f"; {max(self.end() - self.clock(), 0):.0f}s of the search left" if self.given else ""
        )
        self.say(f"search {fam}: trial {n}{of} cv {self.scoring}={s:.4f}{left}")

    def add(self, family: str, family_search: Callable[..., FamilySearch]) -> None:
        """The search of one family over its preprocessing and model spaces."""
        prepared, config, size = self.prepared, self.prepared.config, self.size
        task, opts = prepared.task, config.search
        space = {
            **preprocessing_space(family, config, size),
            **categories_space(family, config, len(prepared.kinds.categorical)),
            **model_space(family, task, size),
        }

        def build(params: dict[str, Any]) -> Pipeline:
            return candidate_pipeline(prepared.kinds, family, params, task, config, size=size)

        self.builds[family] = build
        x_fam, y_fam, fit_params = self.sample(self.start, family)
        self.searches.append(
            family_search(
                family,
                space,
                build,
                x_fam,
                y_fam,
                method=opts.resolved_method,
                cap=opts.cap,
                cv=self.cv,
                scoring=self.scoring,
                seed=config.seed,
                fit_params=fit_params,
                default=default_params(family, task, space) if opts.default_first else None,
                on_trial=self.progress,
                clock=self.clock,
            )
        )

    def spend(self) -> tuple[list[list[str]], str]:
        """Run the family searches: halving over families within the budget, or equal shares
        of the search's own bound; the rungs and the schedule's name."""
        clock = self.clock
        if self.given:
            rungs = budget.spend(
                self.searches, self.end, clock=clock, say=self.say, floor=self.below_floor
            )
            return rungs, "halving over families"
        for i, fs in enumerate(self.searches):
            share = clock() + (self.deadline - clock()) / (len(self.searches) - i)
            run_family(fs, share, self.prepared.config.search.halving)
        return [list[str](self.families)], "equal shares"

    def below_floor(self, waiting: list[str]) -> None:
        """Say, as soon as it shows, that the budget is below the run's floor: the search's time
        is spent while the families `waiting` have still to run their first trial (which always
        runs), with the floor's estimate (a lower bound: the seconds spent, the remaining first
        trials at the median first trial so far, what the steps after the search need whatever
        they drop: training/shortfall.py); once every first trial has run (`waiting` empty), the
        floor measured. Nothing is said, or recorded, while the estimate is within the budget."""
        given = self.given or 0.0
        spent = self.clock() - (self.deadline - given)
        results = [f.result for f in self.searches if f.result.best is not None]
        required = self.after
        if results:
            best = max(results, key=lambda r: r.best.score)  # type: ignore[union-attr]
            estimate = shortfall.costs(
                self.prepared, results, best.family, self.folds, self.after, self.speed
            )
            required = estimate.required
        firsts = sorted(r.trials[0].seconds for r in results)
        median = firsts[len(firsts) // 2] if firsts else 0.0
        floor = spent + median * len(waiting) + required
        if floor <= given:
            return
        self.floor = floor
        if not waiting:
            self.say(
                f"search.budget_seconds {given:g} is below this run's floor: every family's "
                f"first trial took {spent:.0f}s from the run's start, and the steps after the "
                f"search need about {required:.0f}s whatever they drop (floor about "
                f"{floor:.0f}s); optional steps are skipped for the budget"
            )
            return
        each = f"about {median:.1f}s each" if firsts else "their cost not measured yet"
        self.say(
            f"search.budget_seconds {given:g} is below this run's floor (estimated at least "
            f"{floor:.0f}s: {spent:.0f}s spent, the first trials of {', '.join(waiting)} still "
            f"to run, {each}, as every family's first trial always runs, and {required:.0f}s "
            "for the steps after the search that always run): the run will end past its "
            f"budget; give search.budget_seconds {floor:.0f} or more, or fewer families (models)"
        )

    def grow(self, results: list[FamilyResult]) -> list[int]:
        """The finalists re-scored on more rows (search.grow_rows); the rows of each rung."""
        if not self.grows:
            return [self.start]
        return grow(
            results,
            self.builds,
            self.sample,
            start=self.start,
            total=len(self.prepared.splits.x_train),
            per_family=self.prepared.config.search.grow_finalists,
            deadline=self.deadline - self.reserve(),
            cv=self.cv,
            scoring=self.scoring,
            say=self.say,
            clock=self.clock,
        )

    def rescore(self, results: list[FamilyResult]) -> None:
        """The top and default configurations re-scored on fresh folds (training.fresh)."""
        config = self.prepared.config
        fresh.rescore(
            results,
            self.builds,
            self.sample,
            cv=fresh.fresh_cv(
                self.prepared.task,
                config.split.cv_folds,
                bool(config.time_column),
                config.seed,
                config.split.keep_copies_together,
            ),
            scoring=self.scoring,
            deadline=self.deadline - self.reserve() + fresh.seconds(results)
            if self.given
            else math.inf,
            say=self.say,
            clock=self.clock,
        )

    def spent(self, schedule: str, rungs: list[list[str]], search_start: float) -> dict[str, Any]:
        """The manifest's `model.search.budget`."""
        given, config = self.given, self.prepared.config
        return {
            "budget_seconds": given,
            "schedule": schedule,
            "rungs": rungs,
            "seconds": round(self.clock() - search_start, 2),
            "reserved_seconds": round(self.reserve(), 2) if given else None,
            "trial_cap": config.search.cap,
            "fresh_folds_seed": config.seed + fresh.SEED_OFFSET,
            "reserved_besides_fits_seconds": round(self.after, 2) if given else None,
            "calibration_slowdown": round(self.speed, 2) if given else None,
            # training/shortfall.py: the floor said early, the steps skipped after the search
            "shortfall": {
                "floor_estimate_seconds": None if self.floor is None else round(self.floor, 1),
                "skipped": [],
            }
            if given
            else None,
        }


def _rows_of(prepared: Prepared, start: int, n: int) -> tuple[pd.DataFrame, pd.Series]:
    """`n` training rows, the first `start` of them the search's (training.growing)."""
    config, splits = prepared.config, prepared.splits
    idx = sample_rows(len(splits.x_train), start, n, bool(config.time_column), config.seed)
    return splits.x_train.iloc[idx], splits.y_train.iloc[idx]


def _families(
    config: TrainConfig, train_rows: int, say: Progress
) -> tuple[list[Family], list[Family]]:
    """The families to try and those skipped (svm on large data; one whose package is missing,
    said why); TrainingError when none is left."""
    families = [f for f in config.models if not (f == "svm" and train_rows > config.svm_max_rows)]
    for reason in filter(None, map(unavailable, families)):  # e.g. deep without torch
        say(reason)
    families = [f for f in families if unavailable(f) is None]
    skipped = sorted(set(config.models) - set(families))
    if not families:
        raise TrainingError(
            "no model family left to try (svm is skipped on large data, deep without torch)"
        )
    return families, skipped


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
        categories=str(pre.get("categories") or "ordinal"),
    )
