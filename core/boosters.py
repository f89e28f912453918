"""Early stopping for the LightGBM and XGBoost families: stop on a held-out tenth, refit on all."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

VALIDATION_FRACTION = 0.1
"""Share of the rows a boosted model holds out to find its number of rounds."""
PATIENCE = 50
"""Rounds without improvement on the held-out rows before boosting stops."""
MIN_ROWS = 1000
"""Below this many rows no round count is searched (a tenth would be too noisy to stop on): the
model boosts its `n_estimators` rounds, as scikit-learn's HistGradientBoosting does below it."""


def holdout(
    x: Any, y: Any, weight: Any, seed: int | None, stratify: bool
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """(x_fit, x_stop, y_fit, y_stop, w_fit, w_stop): a seeded, stratified for classifiers, tenth
    held out to stop on."""
    index = np.arange(len(y))
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    strat = np.asarray(y) if stratify and len(classes) > 1 and counts.min() >= 2 else None
    fit_i, stop_i = train_test_split(
        index, test_size=VALIDATION_FRACTION, random_state=seed, stratify=strat
    )
    w_fit = None if weight is None else np.asarray(weight)[fit_i]
    w_stop = None if weight is None else np.asarray(weight)[stop_i]
    return _take(x, fit_i), _take(x, stop_i), _take(y, fit_i), _take(y, stop_i), w_fit, w_stop


def _take(a: Any, rows: Any) -> Any:
    return a.iloc[rows] if hasattr(a, "iloc") else np.asarray(a)[rows]


class EarlyStopped:
    """Mixin for a LightGBM or XGBoost scikit-learn estimator: `n_estimators` is a ceiling. On
    MIN_ROWS rows or more, boosting on nine tenths stops when the held-out tenth has not improved
    for PATIENCE rounds; the model is then refitted on every row with the rounds that were best
    (`rounds_`), so that it holds exactly those trees (the compiled service reads them all)."""

    n_estimators: Any
    random_state: Any
    rounds_: int

    def _stop_round(self, x: Any, y: Any, x_stop: Any, y_stop: Any, w: Any, w_stop: Any) -> int:
        raise NotImplementedError

    def _fit_all(self, x: Any, y: Any, weight: Any) -> Any:
        raise NotImplementedError

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:  # noqa: N803 (scikit-learn)
        ceiling = self.n_estimators
        if len(y) < MIN_ROWS:
            self._fit_all(X, y, sample_weight)
            self.rounds_ = int(ceiling or 100)  # XGBoost: None is its 100
            return self
        stratify = hasattr(self, "predict_proba")
        seed = self.random_state if isinstance(self.random_state, int) else 0
        x_fit, x_stop, y_fit, y_stop, w_fit, w_stop = holdout(X, y, sample_weight, seed, stratify)
        best = self._stop_round(x_fit, y_fit, x_stop, y_stop, w_fit, w_stop)
        self.n_estimators = best
        try:
            self._fit_all(X, y, sample_weight)
        finally:
            self.n_estimators = ceiling
        self.rounds_ = best
        return self
