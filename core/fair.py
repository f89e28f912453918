"""Fairness-mitigated classifiers the exported model holds (fairlearn inside, pickled whole).

They live in core/ because the service unpickles them and never imports training. Each predicts
deterministically (the class of highest probability), where fairlearn's own `predict` draws at
random: the same request always gets the same answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

Constraint = str  # demographic_parity | equalized_odds | true_positive_rate_parity
MISSING_GROUP = "__missing__"


def groups_of(values: Any) -> np.ndarray[Any, Any]:
    """Sensitive values as group names (text; missing is a group of its own)."""
    series = pd.Series(np.asarray(values, dtype=object).ravel())
    out: np.ndarray[Any, Any] = series.where(series.notna(), MISSING_GROUP).astype(str).to_numpy()
    return out


def _binary(y: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(classes, y as 0/1 with the last class positive); refuses anything but two classes."""
    classes = np.unique(np.asarray(y))
    if len(classes) != 2:
        raise ValueError(f"fairness mitigation needs two classes, got {len(classes)}")
    return classes, (np.asarray(y) == classes[1]).astype(int)


def _two_columns(positive: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    p = np.clip(np.asarray(positive, dtype=float), 0.0, 1.0)
    return np.column_stack([1.0 - p, p])


class ReductionClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """fairlearn's ExponentiatedGradient around `estimator` under `constraint` (in-processing):
    a weighted mixture of the estimator refitted on re-weighted rows. `fit` takes the sensitive
    attribute (`sensitive_features`); predictions do not need it."""

    def __init__(
        self,
        estimator: Any = None,
        constraint: Constraint = "demographic_parity",
        eps: float = 0.01,
        max_iter: int = 50,
    ) -> None:
        self.estimator = estimator
        self.constraint = constraint
        self.eps = eps
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any, *, sensitive_features: Any) -> ReductionClassifier:
        from fairlearn.reductions import (
            DemographicParity,
            EqualizedOdds,
            ExponentiatedGradient,
            TruePositiveRateParity,
        )

        moments = {
            "demographic_parity": DemographicParity,
            "equalized_odds": EqualizedOdds,
            "true_positive_rate_parity": TruePositiveRateParity,
        }
        x = validate_data(self, X, ensure_all_finite="allow-nan")
        self.classes_, y01 = _binary(y)
        self.reduction_ = ExponentiatedGradient(
            clone(self.estimator),
            constraints=moments[self.constraint](),
            eps=self.eps,
            max_iter=self.max_iter,
        )
        self.reduction_.fit(x, y01, sensitive_features=groups_of(sensitive_features))
        return self

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        check_is_fitted(self, "reduction_")
        x = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return _two_columns(np.asarray(self.reduction_._pmf_predict(x))[:, 1])

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        out: np.ndarray[Any, Any] = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return out


class ThresholdedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A fitted model with decision thresholds per group of column `sensitive` (fairlearn's
    ThresholdOptimizer, post-processing). Takes the model's whole input, which must hold the
    sensitive column; a group not seen in `fit` gets the model's own probabilities."""

    def __init__(
        self,
        estimator: Any = None,
        sensitive: str = "",
        constraint: Constraint = "demographic_parity",
    ) -> None:
        self.estimator = estimator
        self.sensitive = sensitive
        self.constraint = constraint

    def fit(self, X: pd.DataFrame, y: Any) -> ThresholdedClassifier:
        from fairlearn.postprocessing import ThresholdOptimizer

        self.classes_, y01 = _binary(y)
        if list(self.estimator.classes_) != list(self.classes_):
            raise ValueError("the estimator's classes differ from the labels'")
        groups = groups_of(X[self.sensitive])
        self.groups_ = sorted(set(groups))
        self.optimizer_ = ThresholdOptimizer(
            estimator=self.estimator,
            constraints=self.constraint,
            objective="balanced_accuracy_score",
            prefit=True,
            predict_method="predict_proba",
        )
        self.optimizer_.fit(X, y01, sensitive_features=groups)
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = len(X.columns)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray[Any, Any]:
        check_is_fitted(self, "optimizer_")
        groups = groups_of(X[self.sensitive])
        out: np.ndarray[Any, Any] = np.asarray(self.estimator.predict_proba(X), dtype=float)
        known = np.isin(groups, self.groups_)
        if known.any():
            pmf = self.optimizer_._pmf_predict(X[known], sensitive_features=groups[known])
            out[known] = _two_columns(np.asarray(pmf)[:, 1])
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray[Any, Any]:
        picked: np.ndarray[Any, Any] = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return picked


class AdversarialClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """fairlearn's AdversarialFairnessClassifier (PyTorch): a predictor network (core.deep_net,
    embeddings for the first `n_categorical` columns) trained against an adversary that tries to
    recover the sensitive attribute from its output. Only the predictor is kept after `fit`."""

    def __init__(
        self,
        n_categorical: int = 0,
        hidden_units: int = 32,
        depth: int = 1,
        constraint: Constraint = "demographic_parity",
        alpha: float = 1.0,
        learning_rate: float = 1e-3,
        epochs: int = 30,
        batch_size: int = 64,
        random_state: int = 0,
    ) -> None:
        self.n_categorical = n_categorical
        self.hidden_units = hidden_units
        self.depth = depth
        self.constraint = constraint
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X: Any, y: Any, *, sensitive_features: Any) -> AdversarialClassifier:
        from torch import nn

        from core.deep import torch_settings

        x = validate_data(self, X, dtype=np.float32)
        self.classes_, y01 = _binary(y)
        k = int(self.n_categorical)
        with torch_settings(1, deterministic=True) as torch:
            torch.manual_seed(self.random_state)
            self.predictor_ = self._train(x, y01, groups_of(sensitive_features), k, nn)
        return self

    def _train(self, x: Any, y01: Any, groups: Any, k: int, nn: Any) -> Any:
        """The predictor network, trained against the adversary (the caller seeds torch)."""
        from fairlearn.adversarial import AdversarialFairnessClassifier

        from core.deep_net import TabularNet

        cards = [int(max(x[:, j].max(), -1)) + 2 for j in range(k)]
        predictor = nn.Sequential(
            TabularNet(
                x.shape[1] - k,
                cards,
                1,
                hidden_units=self.hidden_units,
                depth=self.depth,
                dropout=0.0,
                batch_norm=False,
            ),
            nn.Sigmoid(),
        )
        adversarial = AdversarialFairnessClassifier(
            backend="torch",
            predictor_model=predictor,
            adversary_model=[8, "leaky_relu"],
            constraints=self.constraint,
            alpha=self.alpha,
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            batch_size=self.batch_size,
            shuffle=True,
            random_state=self.random_state,
        )
        adversarial.fit(x, y01, sensitive_features=groups)
        return predictor.eval()

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        from core.deep import float_rows, use_threads

        check_is_fitted(self, "predictor_")
        x = float_rows(self, X)
        torch = use_threads(1)
        with torch.no_grad():
            p = self.predictor_(torch.from_numpy(np.ascontiguousarray(x))).numpy()[:, 0]
        return _two_columns(p)

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        picked: np.ndarray[Any, Any] = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return picked
