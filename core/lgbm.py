"""The lightgbm family: LightGBM's scikit-learn estimators, stopped early (core.boosters)."""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm

from core.boosters import PATIENCE, EarlyStopped

# `categorical_feature` given as a parameter (training/pipeline.py: native categorical splits on
# the code columns) reaches the Dataset all the same; LightGBM still warns that it would not
_CATEGORICAL_PARAM = "categorical_feature keyword has been found in `params`"


class _Stopping(EarlyStopped):
    def _fit_all(self, x: Any, y: Any, weight: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _CATEGORICAL_PARAM)
            return super(EarlyStopped, self).fit(x, y, sample_weight=weight)  # type: ignore[misc]

    def _stop_round(self, x: Any, y: Any, x_stop: Any, y_stop: Any, w: Any, w_stop: Any) -> int:
        with warnings.catch_warnings():  # eval_set: eval_X and eval_y from LightGBM 4.7 only
            warnings.filterwarnings("ignore", "The argument 'eval_set' is deprecated")
            warnings.filterwarnings("ignore", _CATEGORICAL_PARAM)
            super(EarlyStopped, self).fit(  # type: ignore[misc]
                x,
                y,
                sample_weight=w,
                eval_set=[(x_stop, y_stop)],
                eval_sample_weight=None if w_stop is None else [w_stop],
                callbacks=[lightgbm.early_stopping(PATIENCE, verbose=False)],
            )
        best = int(getattr(self, "best_iteration_", 0) or 0)
        return max(1, best or int(self.n_estimators))


class LightGBMClassifier(_Stopping, lightgbm.LGBMClassifier):  # type: ignore[misc]
    """LGBMClassifier whose `n_estimators` is a ceiling found by early stopping."""


class LightGBMRegressor(_Stopping, lightgbm.LGBMRegressor):  # type: ignore[misc]
    """LGBMRegressor whose `n_estimators` is a ceiling found by early stopping."""
