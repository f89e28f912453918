"""Feature contributions in the original feature space: exact where the model allows, sampled else.

- linear models: exact (coefficient x distance from the background mean, the linear SHAP value
  under feature independence), no extra package; multi-class: the explained class's coefficients;
- tree models (scikit-learn's, LightGBM, XGBoost): exact TreeSHAP through the optional `shap`
  package (`servewatch[explain]`);
- anything else, a tree model without `shap`, a PCA step, columns that cannot be mapped back to
  the inputs, or an exact method that does not reproduce the model's own output on background
  rows: sampling Shapley values on the raw features against background rows (antithetic to the
  background: contributions always add up to the model output minus the base value).

The model is a fitted Pipeline (ours or anyone's) or a bare estimator. Classification explains the
positive class (binary) or the predicted class of each row (multi-class). Contributions of one-hot,
missing-indicator and datetime columns are summed back into the input feature they came from; an
interaction term is split between its two features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from core import ecosystem

PROBABILITY_TREES = (
    DecisionTreeClassifier,
    RandomForestClassifier,
    ExtraTreesClassifier,
)  # TreeSHAP explains their predict_proba
TREES = (
    *PROBABILITY_TREES,
    DecisionTreeRegressor,
    RandomForestRegressor,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
)
SHAP_MISSING = (
    "shap is not installed (pip install 'servewatch[explain]'): sampled instead of TreeSHAP"
)
CHECK_ROWS = 20  # background rows an exact method must reproduce the model's output on


@dataclass
class Explanation:
    method: str  # linear_exact | tree_shap | sampling_shapley
    output: str  # what base + contributions add up to: log_odds | probability | raw_score | value
    features: list[str]
    base_values: np.ndarray[Any, Any]  # (n,)
    contributions: np.ndarray[Any, Any]  # (n, len(features))
    note: str | None = None
    classes: list[Any] | None = None  # classification: the class explained, per row

    def mean_abs(self) -> dict[str, float]:
        values = np.abs(self.contributions).mean(axis=0)
        return {f: float(v) for f, v in zip(self.features, values, strict=True)}


def _source_map(names: list[str], features: list[str]) -> np.ndarray[Any, Any]:
    """(transformed columns x input features) weights that sum contributions back to inputs."""
    by_length = sorted(features, key=len, reverse=True)
    out = np.zeros((len(names), len(features)))
    for i, name in enumerate(names):
        if name in features:  # passed through under its own name (any transformer)
            out[i, features.index(name)] = 1.0
            continue
        body = name.split("__", 1)[1] if "__" in name else name
        # PolynomialFeatures names interactions "a b"; a feature's own name may hold spaces
        tokens = [body] if _source(body, by_length) else _terms(body, by_length)
        for token in tokens:
            src = _source(token, by_length)
            if src is None:
                raise ValueError(f"cannot map transformed column {name!r} to an input feature")
            out[i, features.index(src)] += 1.0 / len(tokens)
    return out


def _terms(body: str, by_length: list[str]) -> list[str]:
    """An interaction's terms ("a b", "mean radius x2"): input names matched from the left,
    longest first; split on every space when they do not match."""
    terms: list[str] = []
    rest = body
    while rest:
        plain = rest.removeprefix("missingindicator_")
        name = next((f for f in by_length if plain == f or plain.startswith(f + " ")), None)
        if name is None:
            return body.split(" ")
        end = len(rest) - len(plain) + len(name)
        terms.append(rest[:end])
        rest = rest[end + 1 :]
    return terms


def _source(token: str, by_length: list[str]) -> str | None:
    """The input feature (longest names first) a transformed column's name comes from."""
    token = token.removeprefix("missingindicator_")
    return next((f for f in by_length if token == f or token.startswith(f + "_")), None)


def split_model(model: Any) -> tuple[Pipeline | None, Any]:
    """(preprocessing, final estimator): a Pipeline's steps before the last and its last step;
    (None, model) for a bare estimator."""
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        return Pipeline(model.steps[:-1]), model.steps[-1][1]
    if isinstance(model, Pipeline):
        return None, model.steps[-1][1]
    return None, model


def _is_logistic(est: Any) -> bool:
    if isinstance(est, LogisticRegression | LogisticRegressionCV):
        return True
    return isinstance(est, SGDClassifier) and est.loss == "log_loss"


def _raw(est: Any, x: Any, task: str) -> np.ndarray[Any, Any]:
    """The output an exact method explains: prediction, decision function or margin (one column
    per class for multi-class), or predict_proba for single trees and forests."""
    if ecosystem.is_lightgbm(est) or ecosystem.is_xgboost(est):
        return np.asarray(ecosystem.raw_output(est, x), dtype=float)
    if task == "regression":
        return np.asarray(est.predict(x), dtype=float)
    if isinstance(est, PROBABILITY_TREES):
        return np.asarray(est.predict_proba(x), dtype=float)
    return np.asarray(est.decision_function(x), dtype=float)


def _pick(values: np.ndarray[Any, Any], cls: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    """Per row, the explained class's entry of the last (class) axis: the row's predicted class
    (multi-class) or the positive class (binary)."""
    if values.ndim == 1 or cls is None:
        return values if values.ndim == 1 else values[..., -1]
    index = cls.reshape(-1, *([1] * (values.ndim - 1)))
    return np.take_along_axis(values, index, axis=-1)[..., 0]


class Explainer:
    """Built once per model version; `explain(frame)` returns per-row contributions."""

    def __init__(
        self,
        pipeline: Any,
        features: list[str],
        background: pd.DataFrame,
        *,
        task: str,
        max_background: int = 100,
        permutations: int = 8,
        seed: int = 0,
    ) -> None:
        self.pipeline = pipeline  # a fitted Pipeline or a bare estimator
        self.features = features
        self.task = task
        self.permutations = permutations
        self.rng = np.random.default_rng(seed)
        bg = background[features]
        if len(bg) > max_background:
            bg = bg.sample(max_background, random_state=seed)
        self.background = bg.reset_index(drop=True)
        self.pre, self.final = split_model(pipeline)
        self.members = (
            [c.estimator for c in self.final.calibrated_classifiers_]
            if isinstance(self.final, CalibratedClassifierCV)
            else [self.final]
        )
        self.classes: list[Any] | None = (
            list(pipeline.classes_) if task == "classification" else None
        )
        self.multi = self.classes is not None and len(self.classes) > 2
        self.method = "sampling_shapley"
        self._tree_explainers: list[Any] = []
        self.note: str | None = self._choose_exact()

    # -- choosing the method -----------------------------------------------------------------
    def _choose_exact(self) -> str | None:
        """Set an exact method when the model allows one and it reproduces the model's own
        output on background rows; else stay with sampling. Returns the note (why sampled)."""
        steps = self.pre.steps if self.pre is not None else []
        if any(name == "pca" or isinstance(step, PCA) for name, step in steps):
            return "a PCA step hides the input features: sampled Shapley values"
        try:
            if self.pre is None:
                numeric = all(
                    pd.api.types.is_numeric_dtype(self.background[f]) for f in self.features
                )
                if not numeric:
                    return None  # a bare estimator on non-numeric inputs: only sampling applies
                names = self.features
            else:
                names = [str(n) for n in self.pre.get_feature_names_out()]
            self.source = _source_map(names, self.features)
        except Exception as exc:  # any transformer may lack names or name columns its own way
            return f"transformed columns cannot be mapped to inputs ({exc}): sampled"
        if self.classes is not None:
            for m in self.members:
                own = getattr(m, "classes_", None)
                if own is None or [str(c) for c in own] != [str(c) for c in self.classes]:
                    return "the model's members do not all know every class: sampled"
        if all(self._linear_ready(m) for m in self.members):
            method = "linear_exact"
        elif all(isinstance(m, TREES) or ecosystem.is_boosted_trees(m) for m in self.members):
            try:
                import shap  # heavy and optional: only here
            except ImportError:
                return SHAP_MISSING
            try:
                self._tree_explainers = [shap.TreeExplainer(m) for m in self.members]
            except Exception as exc:  # a model shap does not support
                return f"TreeSHAP does not support this model ({type(exc).__name__}): sampled"
            method = "tree_shap"
        else:
            return None
        self.method = method
        try:
            self.bg_mean = np.asarray(self._input(self.background), dtype=float).mean(axis=0)
            problem = self._check(self.background.head(CHECK_ROWS))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            self.method, self._tree_explainers = "sampling_shapley", []
            return f"{method} does not reproduce the model's output ({problem}): sampled"
        return None

    def _linear_ready(self, m: Any) -> bool:
        coef, intercept = getattr(m, "coef_", None), getattr(m, "intercept_", None)
        if coef is None or intercept is None:
            return False
        rows = 1 if np.ndim(coef) == 1 else np.shape(coef)[0]
        wanted = len(self.classes) if self.multi and self.classes is not None else 1
        return bool(rows == wanted and np.size(intercept) == wanted)

    def _check(self, rows: pd.DataFrame) -> str | None:
        """None when base + contributions equal the members' mean raw output on `rows`."""
        xin = self._input(rows)
        cls = self._classes_of(xin)
        _, base, contribs = self._exact(xin, cls)
        expected = np.mean([_pick(_raw(m, xin, self.task), cls) for m in self.members], axis=0)
        got = base + contribs.sum(axis=1)
        err = np.abs(got - expected)
        if np.all(err <= 1e-6 + 1e-4 * np.maximum(1.0, np.abs(expected))):
            return None
        return f"off by up to {float(err.max()):.3g}"

    # -- exact methods -----------------------------------------------------------------------
    def _input(self, frame: pd.DataFrame) -> Any:
        """What the final estimator takes: the preprocessing's output, or the frame itself."""
        return frame if self.pre is None else self.pre.transform(frame)

    def _classes_of(self, xin: Any) -> np.ndarray[Any, Any] | None:
        """Multi-class: the predicted class index per row (from the final estimator's own
        probabilities, calibrated when it is). Binary and regression: None."""
        if not self.multi:
            return None
        scores = (
            self.final.predict_proba(xin)
            if hasattr(self.final, "predict_proba")
            else self.final.decision_function(xin)
        )
        return np.asarray(np.asarray(scores).argmax(axis=1))

    def _exact(
        self, xin: Any, cls: np.ndarray[Any, Any] | None
    ) -> tuple[str, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(output space, base values, contributions per transformed column)."""
        xt = np.asarray(xin, dtype=float)
        contribs, bases = [], []
        if self.method == "linear_exact":
            for m in self.members:
                coef = np.atleast_2d(np.asarray(m.coef_, dtype=float))
                intercept = np.ravel(np.asarray(m.intercept_, dtype=float))
                idx = np.zeros(len(xt), dtype=int) if cls is None else cls
                w = coef[idx]  # (n, columns): each row's explained class
                contribs.append((xt - self.bg_mean) * w)
                bases.append(intercept[idx] + w @ self.bg_mean)
        else:
            for ex in self._tree_explainers:
                values = np.asarray(ex.shap_values(xin, check_additivity=False), dtype=float)
                base = np.atleast_1d(np.asarray(ex.expected_value, dtype=float))
                contribs.append(_pick(values, cls) if values.ndim == 3 else values)
                bases.append(np.broadcast_to(base[-1] if cls is None else base[cls], (len(xt),)))
        return self._exact_output(), np.mean(bases, axis=0), np.mean(contribs, axis=0)

    def _exact_output(self) -> str:
        m = self.members[0]
        if self.task == "regression":
            return "value"
        if self.method == "tree_shap" and isinstance(m, PROBABILITY_TREES):
            return "probability"
        if self.multi:
            return "raw_score"
        if self.method == "linear_exact":
            return "log_odds" if _is_logistic(m) else "raw_score"
        return "log_odds"  # gradient boosting with a logistic loss

    # -- model-agnostic ----------------------------------------------------------------------
    def _f(self, frame: pd.DataFrame, classes: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if self.task == "regression":
            return np.asarray(self.pipeline.predict(frame), dtype=float)
        scores = np.asarray(self._scores(frame), dtype=float)
        if scores.ndim == 1:  # a binary decision function
            return scores
        picked: np.ndarray[Any, Any] = (
            scores[:, -1] if classes is None else scores[np.arange(len(frame)), classes]
        )
        return picked

    def _scores(self, frame: pd.DataFrame) -> Any:
        if hasattr(self.pipeline, "predict_proba"):
            return self.pipeline.predict_proba(frame)
        return self.pipeline.decision_function(frame)

    def _sampling(
        self, frame: pd.DataFrame
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        """(contributions, base values, explained class index per row or None)."""
        n, nf, k = len(frame), len(self.features), self.permutations
        target_cls = None
        if self.multi:
            target_cls = np.asarray(self._scores(frame)).argmax(axis=1)
        rows, orders = [], []
        for i in range(n):
            x = frame.iloc[i]
            for _ in range(k):
                z = self.background.iloc[int(self.rng.integers(len(self.background)))].copy()
                order = self.rng.permutation(nf)
                orders.append(order)
                rows.append(z.copy())
                for j in order:
                    z[self.features[j]] = x[self.features[j]]
                    rows.append(z.copy())
        big = pd.DataFrame(rows, columns=self.features).reset_index(drop=True)
        for col in self.features:
            if pd.api.types.is_numeric_dtype(frame[col]):
                big[col] = pd.to_numeric(big[col], errors="coerce")
            elif pd.api.types.is_datetime64_any_dtype(frame[col]):
                big[col] = pd.to_datetime(big[col], errors="coerce")
        cls = None if target_cls is None else np.repeat(target_cls, k * (nf + 1))
        values = self._f(big, cls).reshape(n, k, nf + 1)
        contribs = np.zeros((n, nf))
        for i in range(n):
            for p in range(k):
                deltas = np.diff(values[i, p])
                contribs[i, orders[i * k + p]] += deltas / k
        return contribs, values[:, :, 0].mean(axis=1), target_cls

    def _sampling_output(self) -> str:
        if self.task == "regression":
            return "value"
        return "probability" if hasattr(self.pipeline, "predict_proba") else "raw_score"

    def _row_classes(self, cls: np.ndarray[Any, Any] | None, n: int) -> list[Any] | None:
        if self.classes is None:
            return None
        if cls is None:
            return [self.classes[-1]] * n
        return [self.classes[int(i)] for i in cls]

    def explain(
        self, frame: pd.DataFrame, transformed: np.ndarray[Any, Any] | None = None
    ) -> Explanation:
        """Contributions per row of `frame`. `transformed`, when given, is the preprocessing's
        output for these rows (the service's verified numpy replay), used instead of running the
        fitted preprocessing again."""
        frame = frame[self.features]
        if self.method == "sampling_shapley":
            contribs, base, sampled_cls = self._sampling(frame)
            return Explanation(
                self.method,
                self._sampling_output(),
                self.features,
                base,
                contribs,
                self.note,
                self._row_classes(sampled_cls, len(frame)),
            )
        xin = self._input(frame) if transformed is None or self.pre is None else transformed
        cls = self._classes_of(xin)
        output, base, contribs_t = self._exact(xin, cls)
        return Explanation(
            self.method,
            output,
            self.features,
            base,
            contribs_t @ self.source,
            self.note,
            self._row_classes(cls, len(frame)),
        )


def global_summary(
    pipeline: Any,
    x: pd.DataFrame,
    background: pd.DataFrame,
    *,
    task: str,
    seed: int,
    max_rows: int = 300,
) -> tuple[dict[str, Any], Explanation]:
    """Mean |contribution| per input feature over (a sample of) `x`, for the model card."""
    if len(x) > max_rows:
        x = x.sample(max_rows, random_state=seed)
    explainer = Explainer(pipeline, list(x.columns), background, task=task, seed=seed)
    exp = explainer.explain(x)
    ranked = dict(sorted(exp.mean_abs().items(), key=lambda kv: -kv[1]))
    return {
        "method": exp.method,
        "output": exp.output,
        "rows": len(x),
        "note": exp.note,
        "mean_abs_contribution": ranked,
    }, exp
