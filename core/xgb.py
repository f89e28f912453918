"""The xgboost family: XGBoost's estimators stopped early (core.boosters), taking any labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost

from core.boosters import PATIENCE, EarlyStopped


class _Stopping(EarlyStopped):
    feature_types: Any

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:  # noqa: N803 (scikit-learn)
        """Fit; `feature_types` naming only the first columns (training/pipeline.py: the
        category codes, "c") is completed with numbers ("q") for the rest."""
        types, width = self.feature_types, np.shape(X)[1]
        if types is not None and len(types) < width:
            self.feature_types = [*types, *["q"] * (width - len(types))]
        return super().fit(X, y, sample_weight)

    def _codes(self, y: Any) -> Any:
        return y

    def _fit_all(self, x: Any, y: Any, weight: Any) -> Any:
        self.set_params(early_stopping_rounds=None)  # type: ignore[attr-defined]
        return super(EarlyStopped, self).fit(  # type: ignore[misc]
            x, self._codes(y), sample_weight=weight, verbose=False
        )

    def _stop_round(self, x: Any, y: Any, x_stop: Any, y_stop: Any, w: Any, w_stop: Any) -> int:
        self.set_params(early_stopping_rounds=PATIENCE)  # type: ignore[attr-defined]
        try:
            super(EarlyStopped, self).fit(  # type: ignore[misc]
                x,
                self._codes(y),
                sample_weight=w,
                eval_set=[(x_stop, self._codes(y_stop))],
                sample_weight_eval_set=None if w_stop is None else [w_stop],
                verbose=False,
            )
        finally:
            self.set_params(early_stopping_rounds=None)  # type: ignore[attr-defined]
        return max(1, int(getattr(self, "best_iteration", -1)) + 1)


class XGBoostClassifier(_Stopping, xgboost.XGBClassifier):
    """XGBClassifier whose `n_estimators` is a ceiling found by early stopping, taking labels of
    any type (`classes_` are the labels, sorted; XGBoost learns their positions)."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:  # noqa: N803 (scikit-learn)
        self._order = np.unique(np.asarray(y))
        self._labels: Any = None  # XGBoost checks the codes it is given against classes_
        super().fit(X, y, sample_weight)
        self._labels = self._order
        return self

    @property
    def classes_(self) -> Any:
        labels = getattr(self, "_labels", None)
        return np.arange(self.n_classes_) if labels is None else labels

    def _codes(self, y: Any) -> Any:
        return np.searchsorted(self._order, np.asarray(y))

    def predict(self, X: Any, **kwargs: Any) -> Any:  # noqa: N803 (scikit-learn)
        if kwargs.get("output_margin"):
            return super().predict(X, **kwargs)
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class XGBoostRegressor(_Stopping, xgboost.XGBRegressor):
    """XGBRegressor whose `n_estimators` is a ceiling found by early stopping."""
