"""build_pipeline(): preprocessing, feature engineering and one estimator in one Pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from core.transformers import DatetimeFeatures, QuantileClipper
from training.config import Preprocessing
from training.data import FeatureKinds

MISSING_CATEGORY = "__missing__"
TREE_FAMILIES = {"tree", "forest", "hgb", "lightgbm", "xgboost"}
"""Families fed unscaled numbers and ordinal category codes."""
NATIVE_CATEGORIES = {"hgb", "lightgbm", "xgboost"}
"""Families that may split the code columns as categories (`categories="native"`: a set of
categories goes one way, HistGradientBoosting's `categorical_features`, LightGBM's
`categorical_feature`, XGBoost's "c" feature type) instead of as numbers; served compiled
(service/inference/trees.py). The code columns then come first."""
HGB_MAX_CATEGORIES = 255
"""Levels HistGradientBoosting's native categories take (its `max_bins`): rarer levels beyond
share the infrequent code."""
ORDINAL_MAX_CATEGORIES = 500
"""Levels an ordinal encoding keeps (tree families, LightGBM, XGBoost, the deep family's
embeddings): one code column whatever their number, so not one-hot's `max_categories` (a
column per level); rarer levels beyond it share the infrequent code."""
UNSEEN_AS_MISSING = {"hgb", "lightgbm", "xgboost"}
"""Families whose ordinal code for a category unseen in training is NaN, not -1: the trees' own
missing-value branch takes it (HistGradientBoosting: the child with more training rows; XGBoost
trained without NaN: the right, upper-codes side; LightGBM reads NaN as 0, as good as -1) instead
of every split's lower side, with the alphabetically first levels. On planes (bench.quality, 1-2%
of test rows with an unseen aircraft model) XGBoost's RMSE fell from 19.4 to 10.5 over three
seeds. Not under PCA, which refuses NaN; the deep family reads -1 as its unseen embedding."""


def _scaler(name: str) -> Any:
    return {
        "standard": StandardScaler(),
        "robust": RobustScaler(),
        "minmax": MinMaxScaler(),
        "none": "passthrough",
    }[name]


def build_preprocessor(
    kinds: FeatureKinds,
    *,
    family: str,
    prep: Preprocessing,
    scaler: str = "standard",
    interactions: bool = False,
    unseen_missing: bool = False,
    native: bool = False,
) -> ColumnTransformer:
    """Impute (with indicators), clip, scale and encode; unseen categories never fail (with
    `unseen_missing`, an ordinal encoding codes them NaN, else -1). `native`: the ordinal codes
    come first, for a model that splits them as categories."""
    numeric_steps: list[tuple[str, Any]] = []
    if prep.clip_quantiles is not None:
        lo, hi = prep.clip_quantiles
        numeric_steps.append(("clip", QuantileClipper(lower=lo, upper=hi)))
    numeric_steps.append(("impute", SimpleImputer(strategy="median", add_indicator=True)))
    if family not in TREE_FAMILIES:
        numeric_steps.append(("scale", _scaler(scaler)))
        if interactions:
            numeric_steps.append(
                (
                    "interact",
                    PolynomialFeatures(degree=2, interaction_only=True, include_bias=False),
                )
            )
    encoding = prep.encoding
    if encoding == "auto":
        encoding = "ordinal" if family in TREE_FAMILIES | {"deep"} else "onehot"
    encoder: Any
    if encoding == "onehot":
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            max_categories=prep.max_categories,
            sparse_output=False,
        )
    else:
        levels = max(ORDINAL_MAX_CATEGORIES, prep.max_categories)
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan if unseen_missing else -1,
            max_categories=min(levels, HGB_MAX_CATEGORIES)
            if native and family == "hgb"
            else levels,
        )
    transformers: list[tuple[str, Any, list[str]]] = []
    if kinds.numeric:
        transformers.append(("num", Pipeline(numeric_steps), kinds.numeric))
    if kinds.categorical:
        cat = Pipeline(
            [
                # native: a column empty in training stays (a code column each, as declared)
                (
                    "impute",
                    SimpleImputer(
                        strategy="constant",
                        fill_value=MISSING_CATEGORY,
                        keep_empty_features=native,
                    ),
                ),
                ("encode", encoder),
            ]
        )
        # the deep family and native categories read the category codes from the first columns
        transformers.insert(
            0 if family == "deep" or native else len(transformers), ("cat", cat, kinds.categorical)
        )
    if kinds.datetime:
        dt_steps: list[tuple[str, Any]] = [
            ("parts", DatetimeFeatures()),
            ("impute", SimpleImputer(strategy="median")),
        ]
        if family not in TREE_FAMILIES:
            dt_steps.append(("scale", _scaler(scaler)))
        transformers.append(("dt", Pipeline(dt_steps), kinds.datetime))
    return ColumnTransformer(transformers, sparse_threshold=0.0, remainder="drop")


def _native_categories(estimator: Any, family: str, n: int) -> None:
    """Declare the first `n` columns (the category codes) categorical to the family's library."""
    inner = getattr(estimator, "estimator", estimator)  # inside CalibratedClassifierCV
    first = list(range(n))
    if family == "hgb":
        inner.set_params(categorical_features=first)
    elif family == "lightgbm":
        inner.set_params(categorical_feature=first)
    else:  # core.xgb completes the types of the other columns ("q") when it is fitted
        inner.set_params(enable_categorical=True, feature_types=["c"] * n)


def build_pipeline(
    kinds: FeatureKinds,
    estimator: Any,
    *,
    family: str,
    prep: Preprocessing,
    scaler: str = "standard",
    interactions: bool = False,
    pca: int | None = None,
    categories: str = "ordinal",
) -> Pipeline:
    """The exported object: raw feature columns in, predictions out. `categories="native"`:
    a family of NATIVE_CATEGORIES splits the category codes as categories (not under a PCA, nor
    with a one-hot `encoding`)."""
    native = (
        categories == "native"
        and family in NATIVE_CATEGORIES
        and bool(kinds.categorical)
        and prep.encoding != "onehot"
        and not pca
    )
    steps: list[tuple[str, Any]] = [
        (
            "preprocess",
            build_preprocessor(
                kinds,
                family=family,
                prep=prep,
                scaler=scaler,
                interactions=interactions,
                unseen_missing=family in UNSEEN_AS_MISSING and not pca,
                native=native,
            ),
        )
    ]
    if pca:
        steps.append(("pca", PCA(n_components=pca)))
    if family == "deep":
        ordinal = prep.encoding != "onehot" and not interactions and not pca
        inner = getattr(estimator, "estimator", estimator)  # inside CalibratedClassifierCV
        inner.set_params(n_categorical=len(kinds.categorical) if ordinal else 0)
    if native:
        _native_categories(estimator, family, len(kinds.categorical))
    steps.append(("model", estimator))
    return Pipeline(steps)
