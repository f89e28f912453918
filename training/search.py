"""Hyperparameter search (grid, random, Bayesian via Optuna; pruning, successive halving) under
trial and time budgets."""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import brier_score_loss, f1_score, get_scorer, precision_score, recall_score
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit
from sklearn.pipeline import Pipeline

from core.errors import ServewatchError
from training import data, noise
from training.candidates import Choice, FloatRange, Space, grid_values, sample

TrialCallback = Callable[[str, int, float], None]


@dataclass(frozen=True)
class PositiveScorer:
    """scikit-learn's binary scorer `name` (f1, precision, recall, neg_brier_score) of the class
    `positive`, the label as the pipeline holds it (text): scikit-learn's own scorers take 1 as
    the positive class, which labels held as text never are, so every fit "failed"."""

    name: str
    positive: Any

    def __call__(self, estimator: Any, x: Any, y: Any) -> float:
        truth = np.asarray(y, dtype=object)
        if self.name == "neg_brier_score":
            column = list(estimator.classes_).index(self.positive)
            proba = np.asarray(estimator.predict_proba(x), dtype=float)[:, column]
            return -float(brier_score_loss(truth == self.positive, proba))
        score = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[self.name]
        predicted = np.asarray(estimator.predict(x), dtype=object)
        return float(score(truth, predicted, pos_label=self.positive, zero_division=0))

    def __str__(self) -> str:
        return self.name


Scoring = str | PositiveScorer
"""What the search scores by: a scikit-learn scoring string, or a binary scorer of a class."""
POSITIVE_SCORERS = ("f1", "precision", "recall", "neg_brier_score")


def objective_scoring(scoring: str, positive: Any = None) -> Scoring:
    """The scorer of scikit-learn scoring string `scoring` for the positive class `positive`
    (binary classifiers; None otherwise): a PositiveScorer where the string's scorer would take
    1 as the positive class."""
    if positive is not None and scoring in POSITIVE_SCORERS:
        return PositiveScorer(scoring, positive)
    return scoring


def fold_count(folds: int, rows: int, smallest_class: int | None = None) -> int:
    """The folds asked for, but never more than the rarest class has rows (stratified: every
    test fold holds every class) nor more than half the rows; at least 2."""
    cap = rows // 2 if smallest_class is None else min(smallest_class, rows // 2)
    return max(2, min(folds, cap))


def _copies(X: Any, keep: bool = True) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """The copy groups of the rows of X (data.copy_groups): each group's first row and rows;
    None without copies or when `keep` is false."""
    if not keep:
        return None
    groups = data.copy_groups(X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X)))
    return None if groups is None else data.group_members(groups)


def _expand(folds: Any, members: list[np.ndarray]) -> Any:
    """Folds over groups' first rows as folds over every row of the groups."""
    for tr, te in folds:
        yield np.concatenate([members[i] for i in tr]), np.concatenate([members[i] for i in te])


class SizedStratifiedKFold(StratifiedKFold):  # type: ignore[misc]
    """StratifiedKFold that caps its folds by the rarest class of the y it splits and keeps
    copies (identical feature rows) in one fold."""

    keep_copies = True  # make_cv sets it from split.keep_copies_together

    def _sized(self, y: Any) -> StratifiedKFold:
        counts = pd.Series(np.asarray(y)).value_counts()
        n = fold_count(self.n_splits, len(y), int(counts.min()) if len(counts) else None)
        return StratifiedKFold(n_splits=n, shuffle=self.shuffle, random_state=self.random_state)

    def split(self, X: Any, y: Any, groups: Any = None) -> Any:
        copies = _copies(X, self.keep_copies)
        if copies is None:
            return self._sized(y).split(X, y, groups)
        first, members = copies
        y_first = np.asarray(y)[first]
        return _expand(self._sized(y_first).split(np.zeros(len(first)), y_first), members)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        if y is None:
            return int(self.n_splits)
        copies = None if X is None else _copies(X, self.keep_copies)
        return int(self._sized(y if copies is None else np.asarray(y)[copies[0]]).n_splits)


class SizedKFold(KFold):  # type: ignore[misc]
    """KFold that caps its folds at half the rows it splits and keeps copies in one fold."""

    keep_copies = True  # make_cv sets it from split.keep_copies_together

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        copies = _copies(X, self.keep_copies)
        rows = len(X) if copies is None else len(copies[0])
        folds = KFold(fold_count(self.n_splits, rows), shuffle=self.shuffle,
                      random_state=self.random_state)  # fmt: skip
        if copies is None:
            return folds.split(X, y, groups)
        return _expand(folds.split(np.zeros(rows)), copies[1])

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        if X is None:
            return int(self.n_splits)
        copies = _copies(X, self.keep_copies)
        return fold_count(self.n_splits, len(X) if copies is None else len(copies[0]))


class SizedTimeSeriesSplit(TimeSeriesSplit):  # type: ignore[misc]
    """TimeSeriesSplit that caps its folds so every training window has rows; a training row
    with a copy in the fold's test window is left out of that fold's training."""

    keep_copies = True  # make_cv sets it from split.keep_copies_together

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        folds = TimeSeriesSplit(fold_count(self.n_splits, len(X))).split(X, y, groups)
        copies = _copies(X, self.keep_copies)
        if copies is None:
            return folds
        ids = np.empty(len(X), dtype=int)
        for i, rows in enumerate(copies[1]):
            ids[rows] = i
        return ((tr[~np.isin(ids[tr], ids[te])], te) for tr, te in folds)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits if X is None else fold_count(self.n_splits, len(X))


def make_cv(task: str, folds: int, ordered: bool, seed: int, keep_copies: bool = True) -> Any:
    """The search's splitter; its folds are sized at split time to the rows and classes given
    (`cv.get_n_splits(x, y)` says how many a data set gets); copies (identical feature rows) stay
    in one fold unless `keep_copies` is false."""
    cv: Any
    if ordered:
        cv = SizedTimeSeriesSplit(n_splits=folds)
    elif task == "classification":
        cv = SizedStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        cv = SizedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv.keep_copies = keep_copies
    return cv


@dataclass
class Trial:
    params: dict[str, Any]
    score: float
    std: float
    seconds: float
    rows: int = 0  # rows the trial was cross-validated on (fewer on a halving search's early rungs)
    pruned: bool = False  # stopped after some folds by the Bayesian search's pruner
    folds: tuple[float, ...] = ()  # the score of each CV fold (empty when pruned or failed)
    default: bool = False  # the family's untuned default configuration
    fit_seconds: float = 0.0  # of `seconds`, the folds' fits (training/budget.py `rates`)
    score_seconds: float = 0.0  # of `seconds`, the folds' scoring: predictions and the metric
    fit_rows: int = 0  # rows the folds' fits learnt, added up (0: not measured)
    scored_rows: int = 0  # rows the folds' scoring predicted, added up


@dataclass
class FamilyResult:
    family: str
    trials: list[Trial] = field(default_factory=list)
    rescored: list[tuple[Trial, Trial]] = field(default_factory=list)
    """(trial, the same configuration on fresh folds): training.fresh, after the search."""

    def fresh(self, trial: Trial | None) -> Trial | None:
        """`trial` re-scored on the fresh folds, if it was."""
        return next((new for old, new in self.rescored if old is trial), None)

    def _finalists(self) -> list[Trial]:
        """Completed trials on the most rows any trial saw (a halving search's last rung, the
        last rung of growing): only they compete."""
        most = max((t.rows for t in self.trials), default=0)
        return [t for t in self.trials if np.isfinite(t.score) and not t.pruned and t.rows == most]

    @property
    def top(self) -> Trial | None:
        """The highest-scoring trial on the most rows; pruned trials never win."""
        return max(self._finalists(), key=lambda t: t.score, default=None)

    @property
    def default_trial(self) -> Trial | None:
        """The untuned default's trial on the most rows, if it has one."""
        return next((t for t in reversed(self._finalists()) if t.default), None)

    @property
    def best(self) -> Trial | None:
        """The family's chosen configuration: its top trial, but the untuned default when the
        top one does not beat it beyond noise (training.noise: one standard error of their
        paired per-fold difference), on the fresh folds once both were re-scored on them
        (training.fresh), else on the search's."""
        top, default = self.top, self.default_trial
        if top is None or default is None or top is default:
            return top
        a, b = self.fresh(top), self.fresh(default)
        if a is None or b is None:
            a, b = top, default
        return top if noise.beats(a.folds, b.folds) else default

    @property
    def seconds(self) -> float:
        """Seconds the family's trials took (the search's and growing's)."""
        return float(sum(t.seconds for t in self.trials))


class Pruned(ServewatchError):
    """Raised by a fold report to stop a trial that cannot catch up (Optuna's pruner said so)."""


FoldReport = Callable[[int, float], None]


@dataclass
class Timing:
    """What a trial's folds spent fitting and scoring, on the search's clock, and on how many
    rows (filled fold by fold: a pruned trial keeps the folds it ran)."""

    clock: Callable[[], float] = time.perf_counter
    last: float = 0.0  # the clock's last reading (a fold's fit starts where the last one ended)
    fit_seconds: float = 0.0
    score_seconds: float = 0.0
    fit_rows: int = 0
    scored_rows: int = 0


def _cv_score(
    pipe: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    cv: Any,
    scoring: Scoring,
    fit_params: dict[str, Any] | None,
    report: FoldReport | None = None,
    timing: Timing | None = None,
) -> list[float]:
    """The score of `scoring` on each fold of `cv`; after each fold `report(fold, running mean)`
    may raise Pruned. `timing` adds up each fold's fit and scoring seconds and rows."""
    scorer = get_scorer(scoring)
    if timing is None:
        timing = Timing()
        timing.last = timing.clock()
    scores: list[float] = []
    for i, (tr, te) in enumerate(cv.split(x, y)):
        params = {k: np.asarray(v)[tr] for k, v in (fit_params or {}).items()}
        est = clone(pipe).fit(x.iloc[tr], y.iloc[tr], **params)
        fitted = timing.clock()
        scores.append(float(scorer(est, x.iloc[te], y.iloc[te])))
        timing.fit_seconds += fitted - timing.last
        timing.last = timing.clock()
        timing.score_seconds += timing.last - fitted
        timing.fit_rows += len(tr)
        timing.scored_rows += len(te)
        if report is not None:
            report(i, float(np.mean(scores)))
    return scores


def evaluate_trial(
    build: Callable[[dict[str, Any]], Pipeline],
    params: dict[str, Any],
    x: pd.DataFrame,
    y: pd.Series,
    cv: Any,
    scoring: Scoring,
    fit_params: dict[str, Any] | None = None,
    report: FoldReport | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Trial:
    """One configuration cross-validated on `x`, `y`: a failed fit scores -inf, a pruned one its
    running mean (marked `pruned`); its seconds, and its folds' fit and scoring seconds and rows,
    on `clock`."""
    start = clock()
    pruned = False
    folds: list[float] = []
    timing = Timing(clock, start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*number of unique classes.*")
        try:
            folds = _cv_score(build(params), x, y, cv, scoring, fit_params, report, timing)
            score, std = float(np.mean(folds)), float(np.std(folds))
        except Pruned as exc:
            score, std, pruned = float(exc.args[0]), float("nan"), True
        except (ValueError, ArithmeticError):
            score, std = float("-inf"), float("nan")
    seconds = clock() - start
    return Trial(params, score, std, seconds, len(x), pruned, tuple(folds),
                 fit_seconds=timing.fit_seconds, score_seconds=timing.score_seconds,
                 fit_rows=timing.fit_rows, scored_rows=timing.scored_rows)  # fmt: skip


def _grid(space: Space, seed: int) -> list[dict[str, Any]]:
    """Every point of the grid (three per range, every choice), in a seeded order."""
    names = list(space)
    grid = [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(grid_values(space[n]) for n in names))
    ]
    order = np.random.default_rng(seed).permutation(len(grid))
    return [grid[i] for i in order]


def _proposals(method: str, space: Space, seed: int) -> Iterator[dict[str, Any]]:
    """The configurations a grid (all of it, then none) or random (endless) search tries."""
    if method == "grid":
        yield from _grid(space, seed)
        return
    rng = np.random.default_rng(seed)
    while True:
        yield sample(space, rng)


HALVING_FACTOR = 3
"""A halving search samples this many times `trials` configurations and keeps the best third
of them on each rung, with three times the rows."""
HALVING_MIN_ROWS = 150
"""A halving search's first rung has at least this many rows (fewer score too noisily)."""


def halving_rungs(configs: int, rows: int) -> list[tuple[int, int]]:
    """(configurations, rows) of each rung of a successive-halving search: a third of the
    configurations go on from each rung with three times the rows, the last rung on every row;
    no rung has fewer than HALVING_MIN_ROWS rows (small data: fewer rungs)."""
    counts = [configs]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / HALVING_FACTOR))
    n = 1
    while n < len(counts) and rows // HALVING_FACTOR**n >= HALVING_MIN_ROWS:
        n += 1
    return [(c, rows // HALVING_FACTOR ** (n - 1 - k)) for k, c in enumerate(counts[:n])]


class FamilySearch:
    """One family's search, a trial at a time (`step`): its untuned default first, then the
    method's proposals (grid points in a seeded order, random draws, Optuna's TPE for `bayes`),
    until `cap` trials (None: no cap) or the grid runs out (`done`). The budget's scheduler
    (training.budget) and `run_family` both drive it."""

    def __init__(
        self,
        family: str,
        space: Space,
        build: Callable[[dict[str, Any]], Pipeline],
        x: pd.DataFrame,
        y: pd.Series,
        *,
        method: str,
        cap: int | None,
        cv: Any,
        scoring: Scoring,
        seed: int,
        fit_params: dict[str, Any] | None = None,
        default: dict[str, Any] | None = None,
        on_trial: TrialCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.result = FamilyResult(family)
        self.space, self.build, self.x, self.y = space, build, x, y
        self.method, self.cap, self.cv, self.scoring, self.seed = method, cap, cv, scoring, seed
        self.fit_params, self.on_trial, self.clock = fit_params, on_trial, clock
        self._default = default
        self._proposals = _proposals(method, space, seed)
        self._study: Any = None
        self._exhausted = False

    @property
    def done(self) -> bool:
        """No trial left to run: the cap is reached, or every configuration was tried."""
        capped = self.cap is not None and len(self.result.trials) >= self.cap
        return capped or self._exhausted

    @property
    def cost(self) -> float:
        """The median seconds of its trials so far (0 before the first)."""
        seconds = [t.seconds for t in self.result.trials]
        return float(np.median(seconds)) if seconds else 0.0

    def evaluate(
        self,
        params: dict[str, Any],
        rows: np.ndarray[Any, Any] | None = None,
        report: FoldReport | None = None,
        default: bool = False,
    ) -> float:
        """Cross-validate `params` (on `rows` of the search's rows when given), record the trial
        (its seconds on the search's clock) and return its score."""
        xs, ys, fp = self.x, self.y, self.fit_params
        if rows is not None:
            xs, ys = self.x.iloc[rows], self.y.iloc[rows]
            fp = {k: np.asarray(v)[rows] for k, v in (self.fit_params or {}).items()} or None
        trial = evaluate_trial(
            self.build, params, xs, ys, self.cv, self.scoring, fp, report, self.clock
        )
        trial.default = default
        self.result.trials.append(trial)
        if self.on_trial:
            self.on_trial(self.result.family, len(self.result.trials), trial.score)
        return trial.score

    def run_default(self) -> bool:
        """Run the untuned default if it has not run yet; whether it ran."""
        if self._default is None or self.done:
            return False
        default, self._default = self._default, None
        self.evaluate(default, default=True)
        self._exhausted = not self.space
        return True

    def step(self) -> None:
        """Run the next trial (nothing once `done`)."""
        if self.done or self.run_default():
            return
        if not self.space:  # nothing to search: one trial of the estimator as it is
            self._exhausted = True
            self.evaluate({})
        elif self.method == "bayes":
            self._bayes_step()
        else:
            params = next(self._proposals, None)
            if params is None:
                self._exhausted = True
            else:
                self.evaluate(params)

    def _bayes_step(self) -> None:
        """One trial of Optuna's TPE sampler; its MedianPruner stops a trial whose running fold
        mean falls below the median of earlier trials at the same fold."""
        import optuna  # heavy: imported only when Bayesian search is asked for

        if self._study is None:
            self._study = create_study(self.seed)
        space = self.space

        def objective(trial: Any) -> float:
            value = self.evaluate(suggest(trial, space), report=pruning_report(trial))
            if self.result.trials[-1].pruned:
                raise optuna.TrialPruned()
            return value if np.isfinite(value) else -1e12

        self._study.optimize(objective, n_trials=1)


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """An Optuna trial's point of `space` (a choice is suggested as its index)."""
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            idx = trial.suggest_categorical(name, list(range(len(dim.values))))
            params[name] = dim.values[idx]
        elif isinstance(dim, FloatRange):
            params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        else:
            params[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    return params


def pruning_report(trial: Any) -> FoldReport:
    """The fold report of an Optuna trial: raises Pruned when its pruner says so."""

    def report(fold: int, mean: float) -> None:
        trial.report(mean, fold)
        if trial.should_prune():
            raise Pruned(mean)

    return report


def create_study(seed: int, storage: Any = None, name: str | None = None) -> Any:
    """The Optuna study of one family's Bayesian search: TPE seeded by `seed`, MedianPruner on
    the running fold mean; in memory unless a `storage` (an Optuna storage or URL) is given, as
    study `name` (loaded when it exists)."""
    import optuna  # heavy: imported only when Bayesian search is asked for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        direction="maximize",
        storage=storage,
        study_name=name,
        load_if_exists=name is not None,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )


def search_family(
    family: str,
    space: Space,
    build: Callable[[dict[str, Any]], Pipeline],
    x: pd.DataFrame,
    y: pd.Series,
    *,
    trials: int,
    deadline: float,
    halving: bool = False,
    **options: Any,
) -> FamilyResult:
    """Up to `trials` trials of one family until `deadline` (a search without a budget);
    `options` are FamilySearch's (method, cv, scoring, seed, default, ...)."""
    fs = FamilySearch(family, space, build, x, y, cap=trials, **options)
    return run_family(fs, deadline, halving)


def run_family(fs: FamilySearch, deadline: float, halving: bool = False) -> FamilyResult:
    """Run `fs` until its cap or `deadline` (its first trial always runs); `halving` (random or
    grid) races HALVING_FACTOR times its cap of configurations on growing row samples."""
    if halving and fs.method in ("random", "grid") and fs.space and fs.cap:
        fs.run_default()  # scored on every row, it competes in the last rung
        _halving(fs.space, fs, fs.method, fs.cap, deadline, fs.seed, len(fs.x))
        return fs.result
    while not fs.done and (not fs.result.trials or fs.clock() < deadline):
        fs.step()
    return fs.result


def _halving(
    space: Space,
    fs: FamilySearch,
    method: str,
    trials: int,
    deadline: float,
    seed: int,
    rows_total: int,
) -> None:
    """Successive halving: HALVING_FACTOR x `trials` configurations on a row sample, the best
    third on three times the rows, ... the last on every row, where the default (evaluated on
    every row first) competes with them."""
    configs = list(itertools.islice(_proposals(method, space, seed), trials * HALVING_FACTOR))
    rungs = halving_rungs(len(configs), rows_total)
    order = np.random.default_rng(seed).permutation(rows_total)
    scores = {i: float("nan") for i in range(len(configs))}
    alive = list(range(len(configs)))
    for k, (keep, rows) in enumerate(rungs):
        if k > 0:
            alive = sorted(alive, key=lambda i: -np.nan_to_num(scores[i], nan=-np.inf))[:keep]
        sample_rows = np.sort(order[:rows])
        for i in alive:
            if fs.result.trials and fs.clock() >= deadline:
                return
            scores[i] = fs.evaluate(configs[i], rows=None if rows >= rows_total else sample_rows)
