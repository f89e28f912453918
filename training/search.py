"""Hyperparameter search (grid, random, Bayesian via Optuna; pruning, successive halving) under
trial and time budgets."""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import brier_score_loss, f1_score, get_scorer, precision_score, recall_score
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit
from sklearn.pipeline import Pipeline

from training import data
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


@dataclass
class FamilyResult:
    family: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        """The best trial on the most rows any trial saw (a halving search's last rung); pruned
        trials never win."""
        most = max((t.rows for t in self.trials), default=0)
        ok = [t for t in self.trials if np.isfinite(t.score) and not t.pruned and t.rows == most]
        return max(ok, key=lambda t: t.score) if ok else None


class Pruned(Exception):
    """Raised by a fold report to stop a trial that cannot catch up (Optuna's pruner said so)."""


FoldReport = Callable[[int, float], None]


def _cv_score(
    pipe: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    cv: Any,
    scoring: Scoring,
    fit_params: dict[str, Any] | None,
    report: FoldReport | None = None,
) -> tuple[float, float]:
    """Mean and standard deviation of `scoring` over the folds of `cv`; after each fold
    `report(fold, running mean)` may raise Pruned."""
    scorer = get_scorer(scoring)
    scores: list[float] = []
    for i, (tr, te) in enumerate(cv.split(x, y)):
        params = {k: np.asarray(v)[tr] for k, v in (fit_params or {}).items()}
        est = clone(pipe).fit(x.iloc[tr], y.iloc[tr], **params)
        scores.append(float(scorer(est, x.iloc[te], y.iloc[te])))
        if report is not None:
            report(i, float(np.mean(scores)))
    return float(np.mean(scores)), float(np.std(scores))


def evaluate_trial(
    build: Callable[[dict[str, Any]], Pipeline],
    params: dict[str, Any],
    x: pd.DataFrame,
    y: pd.Series,
    cv: Any,
    scoring: Scoring,
    fit_params: dict[str, Any] | None = None,
    report: FoldReport | None = None,
) -> Trial:
    """One configuration cross-validated on `x`, `y`: a failed fit scores -inf, a pruned one its
    running mean (marked `pruned`)."""
    start = time.perf_counter()
    pruned = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*number of unique classes.*")
        try:
            score, std = _cv_score(build(params), x, y, cv, scoring, fit_params, report)
        except Pruned as exc:
            score, std, pruned = float(exc.args[0]), float("nan"), True
        except (ValueError, ArithmeticError):
            score, std = float("-inf"), float("nan")
    return Trial(params, score, std, time.perf_counter() - start, len(x), pruned)


def _proposals(method: str, space: Space, trials: int, seed: int) -> list[dict[str, Any]]:
    if method == "grid":
        names = list(space)
        grid = [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(grid_values(space[n]) for n in names))
        ]
        order = np.random.default_rng(seed).permutation(len(grid))
        return [grid[i] for i in order[:trials]]
    rng = np.random.default_rng(seed)
    return [sample(space, rng) for _ in range(trials)]


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


def search_family(
    family: str,
    space: Space,
    build: Callable[[dict[str, Any]], Pipeline],
    x: pd.DataFrame,
    y: pd.Series,
    *,
    method: str,
    trials: int,
    deadline: float,
    cv: Any,
    scoring: Scoring,
    seed: int,
    fit_params: dict[str, Any] | None = None,
    on_trial: TrialCallback | None = None,
    default: dict[str, Any] | None = None,
    halving: bool = False,
) -> FamilyResult:
    """Evaluate up to `trials` points of `space` by cross-validation until `deadline`.

    `default` (the family's untuned configuration) is the first trial, so the search never
    ends below it; the first trial always runs, so every family gets a score even on a tight
    budget. `bayes` prunes trials (Optuna's MedianPruner on the running fold mean); `halving`
    (random or grid) samples HALVING_FACTOR times as many configurations and races them on
    growing row samples, spending about the cost of `trials` full evaluations.
    """
    result = FamilyResult(family)

    def evaluate(
        params: dict[str, Any],
        rows: np.ndarray[Any, Any] | None = None,
        report: FoldReport | None = None,
    ) -> float:
        xs, ys, fp = x, y, fit_params
        if rows is not None:
            xs, ys = x.iloc[rows], y.iloc[rows]
            fp = {k: np.asarray(v)[rows] for k, v in (fit_params or {}).items()} or None
        trial = evaluate_trial(build, params, xs, ys, cv, scoring, fp, report)
        result.trials.append(trial)
        if on_trial:
            on_trial(family, len(result.trials), trial.score)
        return trial.score

    if default is not None:
        evaluate(default)
    if method == "bayes" and space:
        _bayes(space, evaluate, result, trials, deadline, seed)
        return result
    if halving and method in ("random", "grid") and space:
        _halving(space, evaluate, result, method, trials, deadline, seed, len(x))
        return result
    for params in _proposals(method, space, trials, seed):
        if len(result.trials) >= trials:
            break
        if result.trials and time.monotonic() >= deadline:
            break
        evaluate(params)
    return result


def _bayes(
    space: Space,
    evaluate: Callable[..., float],
    result: FamilyResult,
    trials: int,
    deadline: float,
    seed: int,
) -> None:
    """Optuna's TPE sampler; its MedianPruner stops a trial whose running fold mean falls below
    the median of earlier trials at the same fold."""
    import optuna  # heavy: imported only when Bayesian search is asked for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )

    def objective(trial: Any) -> float:
        params: dict[str, Any] = {}
        for name, dim in space.items():
            if isinstance(dim, Choice):
                idx = trial.suggest_categorical(name, list(range(len(dim.values))))
                params[name] = dim.values[idx]
            elif isinstance(dim, FloatRange):
                params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            else:
                params[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)

        def report(fold: int, mean: float) -> None:
            trial.report(mean, fold)
            if trial.should_prune():
                raise Pruned(mean)

        value = evaluate(params, report=report)
        if result.trials[-1].pruned:
            raise optuna.TrialPruned()
        return value if np.isfinite(value) else -1e12

    while len(result.trials) < trials and (not result.trials or time.monotonic() < deadline):
        study.optimize(objective, n_trials=1)


def _halving(
    space: Space,
    evaluate: Callable[..., float],
    result: FamilyResult,
    method: str,
    trials: int,
    deadline: float,
    seed: int,
    rows_total: int,
) -> None:
    """Successive halving: HALVING_FACTOR x `trials` configurations on a row sample, the best
    third on three times the rows, ... the last on every row, where the default (evaluated on
    every row first) competes with them."""
    configs = _proposals(method, space, trials * HALVING_FACTOR, seed)
    rungs = halving_rungs(len(configs), rows_total)
    order = np.random.default_rng(seed).permutation(rows_total)
    scores = {i: float("nan") for i in range(len(configs))}
    alive = list(range(len(configs)))
    for k, (keep, rows) in enumerate(rungs):
        if k > 0:
            alive = sorted(alive, key=lambda i: -np.nan_to_num(scores[i], nan=-np.inf))[:keep]
        sample_rows = np.sort(order[:rows])
        for i in alive:
            if result.trials and time.monotonic() >= deadline:
                return
            scores[i] = evaluate(configs[i], rows=None if rows >= rows_total else sample_rows)
