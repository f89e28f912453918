"""What "missing" is, from the data reader to the encoder: one definition for both paths.

Training reads every gap in a text column as NaN (`training.data.as_text`), the value the
categorical imputer replaces. Versions trained before that, and pipelines fitted elsewhere on
None, learned None instead (scikit-learn's imputer does not treat None as NaN in an object
array, so the encoder learned None as a category). `none_columns` reads off a fitted pipeline
which columns it takes None in; `as_trained` hands a frame's gaps to a pipeline that way, and the
service does the same with a null (`service.inference.model.LoadedModel.frame`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, TargetEncoder


def is_missing(value: Any) -> bool:
    """None, NaN or pd.NA: a missing value in an object column."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


MISSING_KINDS: tuple[Any, ...] = (None, np.nan, pd.NA)
"""What a missing category can be in an object column. The service sends None (JSON null),
which reaches the pipeline as its column's `missing_token`; the replay answers each kind as the
fitted pipeline does."""
ENCODERS = (OneHotEncoder, OrdinalEncoder, TargetEncoder)


def identity(step: Any) -> bool:
    """None, 'passthrough', or the FunctionTransformer a fitted ColumnTransformer puts in place
    of 'passthrough' (no function, no validation)."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    return (
        isinstance(step, FunctionTransformer)
        and step.func is None
        and step.inverse_func is None
        and not step.validate
    )


def fitted_steps(trans: Any) -> list[Any]:
    """A part's fitted steps in order, identities left out."""
    steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
    return [s for s in steps if not identity(s)]


def none_columns(est: Any, columns: list[str]) -> set[str]:
    """The input columns in which the fitted `est` takes None as its missing value: an imputer
    with missing_values=None, or an encoder that learned None as a category (a version trained
    before training read missing text as NaN, or a pipeline fitted elsewhere on None). In every
    other column a missing value reaches the pipeline as NaN, as pandas reads one and as an
    imputer's default missing_values=np.nan expects it."""
    members = getattr(est, "estimators_", None)
    if type(est).__name__ in ("VotingClassifier", "VotingRegressor") and members:
        return set().union(*(none_columns(m, columns) for m in members))
    if isinstance(est, Pipeline):
        first = est.steps[0][1]
        if isinstance(first, ColumnTransformer):
            return none_columns(first, columns)
        columns = [str(c) for c in getattr(first, "feature_names_in_", columns)]
    if isinstance(est, ColumnTransformer):
        found: set[str] = set()
        for _, trans, cols in est.transformers_:
            if not isinstance(trans, str):
                found |= none_columns(trans, column_names(est, cols))
        return found
    found = set()
    for step in fitted_steps(est):  # imputers pass columns on; the first encoder ends it
        if isinstance(step, SimpleImputer) and step.missing_values is None:
            found |= set(columns)
        if isinstance(step, SimpleImputer) and hasattr(step, "statistics_"):
            columns = kept_columns(step, columns)
        categories = getattr(step, "categories_", None)
        if isinstance(step, ENCODERS) and categories is not None:
            pairs = zip(columns, categories, strict=False)
            found |= {c for c, cats in pairs if any(v is None for v in cats)}
        if not isinstance(step, SimpleImputer):
            break
    return found


def missing_token(none: set[str], column: str) -> Any:
    """What a missing value (JSON null) of category column `column` becomes for the pipeline:
    None where it was trained with None (`none_columns`), else NaN."""
    return None if column in none else np.nan


def kept_columns(imputer: SimpleImputer, columns: list[str]) -> list[str]:
    """The columns a fitted imputer passes on: those empty in training are dropped unless it
    keeps empty features."""
    if imputer.keep_empty_features:
        return columns
    return [c for c, v in zip(columns, imputer.statistics_, strict=True) if not is_missing(v)]


def column_names(pre: ColumnTransformer, cols: Any) -> list[str]:
    """A fitted ColumnTransformer part's input columns by name (given as names, positions, a
    mask or a slice)."""
    every = [str(c) for c in getattr(pre, "feature_names_in_", [])]
    picked = np.arange(len(every))[cols] if isinstance(cols, slice) else np.asarray(cols)
    if picked.dtype == bool:
        picked = np.flatnonzero(picked)
    if picked.dtype.kind in "iu":
        return [every[i] for i in picked]
    return [str(c) for c in picked]


def as_trained(x: pd.DataFrame, model: Any) -> pd.DataFrame:
    """`x` (gaps as NaN, as training reads them) with the gaps of the columns `model` was trained
    with as None (`none_columns`) turned into None: what its encoder knows them as."""
    none = [c for c in none_columns(model, [str(c) for c in x.columns]) if c in x.columns]
    none = [c for c in none if x[c].dtype == object and x[c].isna().any()]
    if not none:
        return x
    out = x.copy()
    for col in none:
        out[col] = pd.Series(
            [None if is_missing(v) else v for v in out[col]], index=out.index, dtype=object
        )
    return out
