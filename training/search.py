"""Hyperparameter search (grid, random, Bayesian via Optuna) under trial and time budgets."""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import Pipeline

from training.candidates import Choice, FloatRange, Space, grid_values, sample

TrialCallback = Callable[[str, int, float], None]


def fold_count(folds: int, rows: int, smallest_class: int | None = None) -> int:
    """The folds asked for, but never more than the rarest class has rows (stratified: every
    test fold holds every class) nor more than half the rows; at least 2."""
    cap = rows // 2 if smallest_class is None else min(smallest_class, rows // 2)
    return max(2, min(folds, cap))


class SizedStratifiedKFold(StratifiedKFold):  # type: ignore[misc]
    """StratifiedKFold that caps its folds by the rarest class of the y it splits."""

    def _sized(self, y: Any) -> StratifiedKFold:
        counts = pd.Series(np.asarray(y)).value_counts()
        n = fold_count(self.n_splits, len(y), int(counts.min()) if len(counts) else None)
        return StratifiedKFold(n_splits=n, shuffle=self.shuffle, random_state=self.random_state)

    def split(self, X: Any, y: Any, groups: Any = None) -> Any:
        return self._sized(y).split(X, y, groups)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits if y is None else int(self._sized(y).n_splits)


class SizedKFold(KFold):  # type: ignore[misc]
    """KFold that caps its folds at half the rows it splits."""

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        n = fold_count(self.n_splits, len(X))
        return KFold(n, shuffle=self.shuffle, random_state=self.random_state).split(X, y, groups)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits if X is None else fold_count(self.n_splits, len(X))


class SizedTimeSeriesSplit(TimeSeriesSplit):  # type: ignore[misc]
    """TimeSeriesSplit that caps its folds so every training window has rows."""

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        return TimeSeriesSplit(fold_count(self.n_splits, len(X))).split(X, y, groups)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits if X is None else fold_count(self.n_splits, len(X))


def make_cv(task: str, folds: int, ordered: bool, seed: int) -> Any:
    """The search's splitter; its folds are sized at split time to the rows and classes given
    (`cv.get_n_splits(x, y)` says how many a data set gets)."""
    if ordered:
        return SizedTimeSeriesSplit(n_splits=folds)
    if task == "classification":
        return SizedStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return SizedKFold(n_splits=folds, shuffle=True, random_state=seed)


@dataclass
class Trial:
    params: dict[str, Any]
    score: float
    std: float
    seconds: float


@dataclass
class FamilyResult:
    family: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        ok = [t for t in self.trials if np.isfinite(t.score)]
        return max(ok, key=lambda t: t.score) if ok else None


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
    scoring: str,
    seed: int,
    fit_params: dict[str, Any] | None = None,
    on_trial: TrialCallback | None = None,
) -> FamilyResult:
    """Evaluate up to `trials` points of `space` by cross-validation until `deadline`.

    The first trial always runs, so every family gets a score even on a tight budget.
    """
    result = FamilyResult(family)

    def evaluate(params: dict[str, Any]) -> float:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message=".*number of unique classes.*")
            try:
                scores = cross_val_score(
                    build(params),
                    x,
                    y,
                    cv=cv,
                    scoring=scoring,
                    params=fit_params,
                    error_score="raise",
                )
                score, std = float(np.mean(scores)), float(np.std(scores))
            except (ValueError, ArithmeticError):
                score, std = float("-inf"), float("nan")
        result.trials.append(Trial(params, score, std, time.perf_counter() - start))
        if on_trial:
            on_trial(family, len(result.trials), score)
        return score

    if method == "bayes" and space:
        import optuna  # heavy: imported only when Bayesian search is asked for

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
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
            value = evaluate(params)
            return value if np.isfinite(value) else -1e12

        evaluate_first = True
        while len(result.trials) < trials and (evaluate_first or time.monotonic() < deadline):
            evaluate_first = False
            study.optimize(objective, n_trials=1)
        return result

    for i, params in enumerate(_proposals(method, space, trials, seed)):
        if i > 0 and time.monotonic() >= deadline:
            break
        evaluate(params)
    return result
