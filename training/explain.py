"""Feature contributions in the original feature space: exact where the model allows, sampled else.

- linear models: exact (coefficient x distance from the background mean, the linear SHAP value
  under feature independence), no extra package;
- tree models: exact TreeSHAP through the optional `shap` package (`servewatch[explain]`);
- anything else, or a tree model without `shap`, or a PCA step: sampling Shapley values on the raw
  features against background rows (antithetic to the background: contributions always add up to
  the model output minus the base value).

Contributions of one-hot, missing-indicator and datetime columns are summed back into the input
feature they came from; an interaction term is split between its two features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

TREES = (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
SHAP_MISSING = (
    "shap is not installed (pip install 'servewatch[explain]'): sampled instead of TreeSHAP"
)


@dataclass
class Explanation:
    method: str  # linear_exact | tree_shap | sampling_shapley
    output: str  # what base + contributions add up to: log_odds | probability | value
    features: list[str]
    base_values: np.ndarray[Any, Any]  # (n,)
    contributions: np.ndarray[Any, Any]  # (n, len(features))
    note: str | None = None

    def mean_abs(self) -> dict[str, float]:
        values = np.abs(self.contributions).mean(axis=0)
        return {f: float(v) for f, v in zip(self.features, values, strict=True)}


def _source_map(names: list[str], features: list[str]) -> np.ndarray[Any, Any]:
    """(transformed columns x input features) weights that sum contributions back to inputs."""
    by_length = sorted(features, key=len, reverse=True)
    out = np.zeros((len(names), len(features)))
    for i, name in enumerate(names):
        body = name.split("__", 1)[1] if "__" in name else name
        tokens = body.split(" ")  # PolynomialFeatures names interactions "a b"
        for token in tokens:
            token = token.removeprefix("missingindicator_")
            src = next((f for f in by_length if token == f or token.startswith(f + "_")), None)
            if src is None:
                raise ValueError(f"cannot map transformed column {name!r} to an input feature")
            out[i, features.index(src)] += 1.0 / len(tokens)
    return out


class Explainer:
    """Built once per model version; `explain(frame)` returns per-row contributions."""

    def __init__(
        self,
        pipeline: Pipeline,
        features: list[str],
        background: pd.DataFrame,
        *,
        task: str,
        max_background: int = 100,
        permutations: int = 8,
        seed: int = 0,
    ) -> None:
        self.pipeline = pipeline
        self.features = features
        self.task = task
        self.permutations = permutations
        self.rng = np.random.default_rng(seed)
        bg = background[features]
        if len(bg) > max_background:
            bg = bg.sample(max_background, random_state=seed)
        self.background = bg.reset_index(drop=True)
        est = pipeline.steps[-1][1]
        self.members = (
            [c.estimator for c in est.calibrated_classifiers_]
            if isinstance(est, CalibratedClassifierCV)
            else [est]
        )
        self.method = "sampling_shapley"
        self.note: str | None = None
        self._tree_explainers: list[Any] = []
        if "pca" in pipeline.named_steps:
            self.note = "a PCA step hides the input features: sampled Shapley values"
            return
        self.pre = Pipeline(pipeline.steps[:-1])
        try:
            names = [str(n) for n in self.pre.get_feature_names_out()]
            self.source = _source_map(names, features)
        except (ValueError, AttributeError) as exc:
            self.note = f"transformed columns cannot be mapped to inputs ({exc}): sampled"
            return
        if all(hasattr(m, "coef_") and hasattr(m, "intercept_") for m in self.members):
            self.method = "linear_exact"
            self.bg_mean = np.asarray(self.pre.transform(self.background), dtype=float).mean(axis=0)
        elif all(isinstance(m, TREES) for m in self.members):
            try:
                import shap  # heavy and optional: only here
            except ImportError:
                self.note = SHAP_MISSING
                return
            self._tree_explainers = [shap.TreeExplainer(m) for m in self.members]
            self.method = "tree_shap"

    # -- exact methods -----------------------------------------------------------------------
    def _linear(
        self, xt: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        contribs, bases = [], []
        for m in self.members:
            coef = np.ravel(m.coef_) if np.ndim(m.coef_) == 1 or m.coef_.shape[0] == 1 else None
            if coef is None:
                raise ValueError("multi-class linear models are explained by sampling")
            contribs.append((xt - self.bg_mean) * coef)
            bases.append(float(np.ravel(m.intercept_)[0]) + float(self.bg_mean @ coef))
        return np.mean(contribs, axis=0), np.full(len(xt), np.mean(bases))

    def _tree(self, xt: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        contribs, bases = [], []
        for ex in self._tree_explainers:
            values = np.asarray(ex.shap_values(xt, check_additivity=False))
            base = np.ravel(np.asarray(ex.expected_value, dtype=float))
            if values.ndim == 3:  # (n, columns, classes): explain the positive class
                values, base = values[:, :, -1], base[-1:]
            contribs.append(values)
            bases.append(float(base[-1]))
        return np.mean(contribs, axis=0), np.full(len(xt), np.mean(bases))

    def _output_space(self) -> str:
        if self.task == "regression":
            return "value"
        if self.method == "linear_exact":
            return "log_odds"
        if self.method == "tree_shap":
            gb = isinstance(self.members[0], HistGradientBoostingClassifier)
            return "log_odds" if gb else "probability"
        return "probability"

    # -- model-agnostic ----------------------------------------------------------------------
    def _f(self, frame: pd.DataFrame, classes: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
        if self.task == "regression":
            return np.asarray(self.pipeline.predict(frame), dtype=float)
        proba = np.asarray(self.pipeline.predict_proba(frame), dtype=float)
        picked: np.ndarray[Any, Any] = (
            proba[:, -1] if classes is None else proba[np.arange(len(frame)), classes]
        )
        return picked

    def _sampling(self, frame: pd.DataFrame) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        n, nf, k = len(frame), len(self.features), self.permutations
        target_cls = None
        if self.task == "classification" and len(self.pipeline.classes_) > 2:
            target_cls = np.asarray(self.pipeline.predict_proba(frame)).argmax(axis=1)
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
        return contribs, values[:, :, 0].mean(axis=1)

    def explain(
        self, frame: pd.DataFrame, transformed: np.ndarray[Any, Any] | None = None
    ) -> Explanation:
        """Contributions per row of `frame`. `transformed`, when given, is the preprocessing's
        output for these rows (the service's verified numpy replay), used instead of running the
        fitted preprocessing again."""
        frame = frame[self.features]
        if self.method == "sampling_shapley":
            contribs, base = self._sampling(frame)
            return Explanation(
                self.method, self._output_space(), self.features, base, contribs, self.note
            )
        source = self.pre.transform(frame) if transformed is None else transformed
        xt = np.asarray(source, dtype=float)
        contribs_t, base = self._linear(xt) if self.method == "linear_exact" else self._tree(xt)
        return Explanation(
            self.method,
            self._output_space(),
            self.features,
            base,
            contribs_t @ self.source,
            self.note,
        )


def global_summary(
    pipeline: Pipeline,
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
