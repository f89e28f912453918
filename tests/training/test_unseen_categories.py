"""A category unseen in training reaches the boosted families as missing (NaN), the others as -1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeRegressor

from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline

KINDS = FeatureKinds(numeric=["x"], categorical=["model"], datetime=[])


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(40.0), "model": ["a", "b", "c", "d"] * 10})


@pytest.mark.parametrize("family", ["hgb", "lightgbm", "xgboost"])
def test_boosted_families_code_an_unseen_category_as_missing(family: str) -> None:
    pipe = build_pipeline(KINDS, DecisionTreeRegressor(), family=family, prep=Preprocessing())
    pipe.fit(_frame(), np.arange(40.0))
    out = pipe[0].transform(pd.DataFrame({"x": [1.0], "model": ["never-seen"]}))
    names = list(pipe[0].get_feature_names_out())
    assert np.isnan(out[0, names.index("cat__model")])


@pytest.mark.parametrize("family", ["tree", "forest"])
def test_other_tree_families_keep_minus_one(family: str) -> None:
    pipe = build_pipeline(KINDS, DecisionTreeRegressor(), family=family, prep=Preprocessing())
    pipe.fit(_frame(), np.arange(40.0))
    out = pipe[0].transform(pd.DataFrame({"x": [1.0], "model": ["never-seen"]}))
    assert out[0, list(pipe[0].get_feature_names_out()).index("cat__model")] == -1


def test_under_pca_an_unseen_category_stays_minus_one_and_predicts() -> None:
    """PCA refuses NaN: a boosted family behind PCA keeps -1; an unseen category still answers."""
    pipe = build_pipeline(
        KINDS, DecisionTreeRegressor(), family="xgboost", prep=Preprocessing(), pca=1
    )
    pipe.fit(_frame(), np.arange(40.0))
    out = pipe.predict(pd.DataFrame({"x": [1.0], "model": ["never-seen"]}))
    assert np.isfinite(out).all()
