"""Contributions add up to the model output; one-hot columns sum back to their feature."""

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import ElasticNet, SGDClassifier
from sklearn.neural_network import MLPClassifier

from tests.conftest import require_module
from tests.data import classification_frame, regression_frame
from training.config import Preprocessing
from training.data import FeatureKinds
from training.explain import Explainer, _source_map
from training.pipeline import build_pipeline

KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["color", "group"], datetime=["when"])
FEATURES = KINDS.all


def fitted(est, family: str, **kw):  # type: ignore[no-untyped-def]
    frame = classification_frame(400)
    pipe = build_pipeline(KINDS, est, family=family, prep=Preprocessing(), **kw)
    return pipe.fit(frame[FEATURES], frame["label"]), frame


def test_linear_is_exact_and_one_hot_columns_sum_back() -> None:
    pipe, frame = fitted(
        CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3), "linear"
    )
    ex = Explainer(pipe, FEATURES, frame, task="classification")
    exp = ex.explain(frame[FEATURES].head(20))
    assert exp.method == "linear_exact" and exp.output == "log_odds"
    xt = ex.pre.transform(frame[FEATURES].head(20))
    raw = np.mean([m.decision_function(xt) for m in ex.members], axis=0)
    np.testing.assert_allclose(exp.base_values + exp.contributions.sum(axis=1), raw, atol=1e-9)
    # one-hot aggregation: the colour contribution is the sum over its one-hot columns
    names = list(ex.pre.get_feature_names_out())
    color_cols = [i for i, n in enumerate(names) if n.startswith("cat__color_")]
    coef = np.mean([m.coef_.ravel() for m in ex.members], axis=0)
    manual = ((xt - ex.bg_mean)[:, color_cols] * coef[color_cols]).sum(axis=1)
    np.testing.assert_allclose(exp.contributions[:, FEATURES.index("color")], manual, atol=1e-9)


def test_regression_linear_adds_up_to_the_prediction() -> None:
    frame = regression_frame()
    kinds = FeatureKinds(numeric=["a", "b"], categorical=["kind"], datetime=[])
    pipe = build_pipeline(kinds, ElasticNet(alpha=0.01), family="linear", prep=Preprocessing())
    pipe.fit(frame[kinds.all], frame["y"])
    exp = Explainer(pipe, kinds.all, frame, task="regression").explain(frame[kinds.all].head(10))
    assert exp.output == "value"
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1),
        pipe.predict(frame[kinds.all].head(10)),
        atol=1e-9,
    )


@pytest.mark.parametrize(
    ("est", "space"),
    [
        (HistGradientBoostingClassifier(max_iter=30, random_state=0), "log_odds"),
        (RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0), "probability"),
    ],
)
def test_tree_shap_is_exact(est, space: str) -> None:  # type: ignore[no-untyped-def]
    require_module("shap")  # skips, or fails when SERVEWATCH_REQUIRE_TOOLS is set
    pipe, frame = fitted(est, "hgb")
    ex = Explainer(pipe, FEATURES, frame, task="classification")
    x = frame[FEATURES].head(15)
    exp = ex.explain(x)
    assert exp.method == "tree_shap" and exp.output == space
    xt = ex.pre.transform(x)
    model = ex.members[0]
    target = model.decision_function(xt) if space == "log_odds" else model.predict_proba(xt)[:, 1]
    np.testing.assert_allclose(exp.base_values + exp.contributions.sum(axis=1), target, atol=1e-6)


def test_other_models_fall_back_to_sampling_and_still_add_up() -> None:
    pipe, frame = fitted(
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0), "mlp"
    )
    ex = Explainer(pipe, FEATURES, frame, task="classification", permutations=4)
    x = frame[FEATURES].head(5)
    exp = ex.explain(x)
    assert exp.method == "sampling_shapley" and exp.output == "probability"
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1), pipe.predict_proba(x)[:, 1], atol=1e-9
    )


def test_a_tree_model_without_shap_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap -> ImportError
    pipe, frame = fitted(HistGradientBoostingClassifier(max_iter=10, random_state=0), "hgb")
    exp = Explainer(pipe, FEATURES, frame, task="classification", permutations=2).explain(
        frame[FEATURES].head(3)
    )
    assert exp.method == "sampling_shapley"
    assert exp.note is not None and "servewatch[explain]" in exp.note


def test_interaction_terms_are_split_between_their_features() -> None:
    weights = _source_map(
        ["num__x1", "num__x1 x2", "num__missingindicator_x2", "cat__color_red"],
        ["x1", "x2", "color"],
    )
    assert weights.tolist() == [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="cannot map"):
        _source_map(["num__zzz"], ["x1"])


def test_pca_step_falls_back_to_sampling() -> None:
    pipe, frame = fitted(SGDClassifier(loss="log_loss", random_state=0), "linear", pca=2)
    exp = Explainer(pipe, FEATURES, frame, task="classification", permutations=2).explain(
        frame[FEATURES].head(2)
    )
    assert exp.method == "sampling_shapley" and "PCA" in (exp.note or "")
    assert isinstance(pd.DataFrame(exp.contributions), pd.DataFrame)
