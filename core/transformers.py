"""Custom scikit-learn transformers used inside the exported Pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class QuantileClipper(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clip each column to quantiles learnt on the training rows; missing values pass through.

    Parameters
    ----------
    lower, upper : float
        Quantiles (0..1) that bound each column.

    Attributes
    ----------
    lower_bounds_, upper_bounds_ : ndarray of shape (n_features,)
    """

    def __init__(self, lower: float = 0.005, upper: float = 0.995) -> None:
        self.lower = lower
        self.upper = upper

    def fit(self, X: Any, y: Any = None) -> QuantileClipper:  # noqa: ARG002
        arr = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        if not 0.0 <= self.lower < self.upper <= 1.0:
            raise ValueError(f"need 0 <= lower < upper <= 1, got {self.lower}, {self.upper}")
        if np.isnan(arr).all(axis=0).any():
            self.lower_bounds_ = np.full(arr.shape[1], -np.inf)
            self.upper_bounds_ = np.full(arr.shape[1], np.inf)
            ok = ~np.isnan(arr).all(axis=0)
            if ok.any():
                self.lower_bounds_[ok] = np.nanquantile(arr[:, ok], self.lower, axis=0)
                self.upper_bounds_[ok] = np.nanquantile(arr[:, ok], self.upper, axis=0)
        else:
            self.lower_bounds_ = np.nanquantile(arr, self.lower, axis=0)
            self.upper_bounds_ = np.nanquantile(arr, self.upper, axis=0)
        return self

    def transform(self, X: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self)
        arr = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        clipped: np.ndarray[Any, Any] = np.clip(arr, self.lower_bounds_, self.upper_bounds_)
        return clipped

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray[Any, Any]:
        check_is_fitted(self)
        if input_features is None:
            input_features = getattr(self, "feature_names_in_", None)
        if input_features is None:
            input_features = [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray(input_features, dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class DatetimeFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Turn timestamp columns into month, day of week and hour of day (unparseable -> NaN).

    Attributes
    ----------
    columns_ : list of str
        The input columns seen in fit.
    """

    PARTS = ("month", "dayofweek", "hour")

    def fit(self, X: Any, y: Any = None) -> DatetimeFeatures:  # noqa: ARG002
        frame = pd.DataFrame(X)
        self.columns_ = [str(c) for c in frame.columns]
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self)
        frame = pd.DataFrame(X)
        if frame.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} columns, got {frame.shape[1]}")
        out: list[pd.Series] = []
        for i in range(frame.shape[1]):
            ts = pd.to_datetime(frame.iloc[:, i], errors="coerce", utc=True)
            ts = ts.dt.tz_localize(None)
            out.extend([ts.dt.month, ts.dt.dayofweek, ts.dt.hour + ts.dt.minute / 60.0])
        return np.column_stack([s.to_numpy(dtype=float, na_value=np.nan) for s in out])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray[Any, Any]:  # noqa: ARG002
        check_is_fitted(self)
        return np.asarray([f"{c}_{p}" for c in self.columns_ for p in self.PARTS], dtype=object)
