"""Contributions add up to the model output; one-hot columns sum back to their feature."""

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import ElasticNet, LogisticRegression, PoissonRegressor, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core import ecosystem
from core.explain import Explainer, _source_map
from tests.conftest import require_module
from tests.data import classification_frame, regression_frame
from training.config import Preprocessing
from training.data import FeatureKinds
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
    # names with spaces (scikit-learn's breast cancer: "mean radius") are whole features
    spaced = _source_map(
        ["num__mean radius", "num__missingindicator_mean radius", "num__mean radius x2"],
        ["mean radius", "x2"],
    )
    assert spaced.tolist() == [[1, 0], [1, 0], [0.5, 0.5]]


def test_pca_step_falls_back_to_sampling() -> None:
    pipe, frame = fitted(SGDClassifier(loss="log_loss", random_state=0), "linear", pca=2)
    exp = Explainer(pipe, FEATURES, frame, task="classification", permutations=2).explain(
        frame[FEATURES].head(2)
    )
    assert exp.method == "sampling_shapley" and "PCA" in (exp.note or "")
    np.testing.assert_allclose(  # the sampled contributions still add up to the probability
        exp.base_values + exp.contributions.sum(axis=1),
        pipe.predict_proba(frame[FEATURES].head(2))[:, 1],
        atol=1e-9,
    )


# -- every family x every task, on scikit-learn's bundled data sets ------------------------------


def _bundled(task: str) -> tuple[pd.DataFrame, pd.Series]:
    """Binary: breast_cancer (int 0/1 labels); multi-class: wine (3 classes); regression:
    diabetes. Feature names made plain (no spaces)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    loader = {"binary": load_breast_cancer, "multiclass": load_wine, "regression": load_diabetes}
    bunch = loader[task](as_frame=True)
    x = bunch.data.rename(columns=lambda c: str(c).replace(" ", "_").replace("/", "_"))
    return x, bunch.target


def _explained_output(pipe, ex: Explainer, exp, x: pd.DataFrame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The model output the explanation must add up to, computed here from the model itself."""
    if exp.output == "value":
        return np.asarray(pipe.predict(x), dtype=float)
    cls = np.array([list(pipe.classes_).index(c) for c in exp.classes])
    rows = np.arange(len(x))
    if exp.method == "sampling_shapley":
        return np.asarray(pipe.predict_proba(x))[rows, cls]
    xt = ex.pre.transform(x)
    outs = []
    for m in ex.members:
        if ecosystem.is_boosted_trees(m):  # LightGBM, XGBoost: their margin
            raw = ecosystem.raw_output(m, xt)
        elif exp.output == "probability":
            raw = m.predict_proba(xt)
        else:
            raw = m.decision_function(xt)
        raw = np.asarray(raw, dtype=float)
        outs.append(raw if raw.ndim == 1 else raw[rows, cls])
    return np.mean(outs, axis=0)


FAMILY_METHOD = {
    "linear": "linear_exact",
    "tree": "tree_shap",
    "forest": "tree_shap",
    "hgb": "tree_shap",
    "svm": "sampling_shapley",
    "mlp": "sampling_shapley",
    "lightgbm": "tree_shap",  # the lightgbm and xgboost extras (issue 32)
    "xgboost": "tree_shap",
}
FAMILY_PARAMS = {
    "lightgbm": {"n_estimators": 20},
    "xgboost": {"n_estimators": 20},
    "forest": {"n_estimators": 15, "max_depth": 5},
    "hgb": {"max_iter": 20},
    "mlp": {"hidden_layer_sizes": (8,)},
    "tree": {"max_depth": 4},
}


CASES = [
    (family, task, calibrated)
    for family in FAMILY_METHOD
    for task in ("binary", "multiclass", "regression")
    for calibrated in (False, True)
    if not (calibrated and (task == "regression" or family == "svm"))  # svm: calibrated already
]


@pytest.mark.parametrize(("family", "task", "calibrated"), CASES)
def test_every_family_and_task_adds_up(family: str, task: str, calibrated: bool) -> None:
    from training.candidates import make_estimator

    if family in ("lightgbm", "xgboost"):
        require_module(family)
    if family in ("tree", "forest", "hgb", "lightgbm", "xgboost"):
        require_module("shap")  # skips, or fails when SERVEWATCH_REQUIRE_TOOLS is set
    x, y = _bundled(task)
    kind = "regression" if task == "regression" else "classification"
    est = make_estimator(family, kind, FAMILY_PARAMS.get(family, {}), seed=0)
    if calibrated:
        est = CalibratedClassifierCV(est, method="sigmoid", cv=3)
    kinds = FeatureKinds(numeric=list(x.columns), categorical=[], datetime=[])
    pipe = build_pipeline(kinds, est, family=family, prep=Preprocessing()).fit(x, y)
    ex = Explainer(pipe, list(x.columns), x, task=kind, permutations=2, seed=0)
    rows = x.sample(6, random_state=1)
    exp = ex.explain(rows)
    assert exp.method == FAMILY_METHOD[family], exp.note
    assert exp.contributions.shape == (6, x.shape[1])
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1),
        _explained_output(pipe, ex, exp, rows),
        rtol=1e-4,
        atol=1e-6,
    )
    if task == "multiclass":  # the predicted class of each row is the one explained
        assert exp.classes == list(pipe.predict(rows))
    elif task == "binary":
        assert exp.classes == [1] * 6
    else:
        assert exp.classes is None
    assert np.abs(exp.contributions).sum() > 0


@pytest.mark.parametrize("labels", ["int", "bool", "str"])
def test_binary_labels_of_any_type_are_explained_exactly(labels: str) -> None:
    x, y = _bundled("binary")
    y = {"int": y, "bool": y.astype(bool), "str": y.map({0: "malignant", 1: "benign"})}[labels]
    est = CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3)
    kinds = FeatureKinds(numeric=list(x.columns), categorical=[], datetime=[])
    pipe = build_pipeline(kinds, est, family="linear", prep=Preprocessing()).fit(x, y)
    exp = Explainer(pipe, list(x.columns), x, task="classification").explain(x.head(8))
    assert exp.method == "linear_exact" and exp.output == "log_odds"
    assert exp.classes == [pipe.classes_[1]] * 8
    raw = np.mean(
        [m.decision_function(pipe[:-1].transform(x.head(8))) for m in exp_members(pipe)], 0
    )
    np.testing.assert_allclose(exp.base_values + exp.contributions.sum(axis=1), raw, atol=1e-9)


def exp_members(pipe):  # type: ignore[no-untyped-def]
    return [c.estimator for c in pipe[-1].calibrated_classifiers_]


def test_multiclass_linear_explains_each_rows_predicted_class_exactly() -> None:
    x, y = _bundled("multiclass")
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))])
    pipe.fit(x, y)  # someone else's pipeline: its own step names, no ColumnTransformer
    exp = Explainer(pipe, list(x.columns), x, task="classification").explain(x)
    assert exp.method == "linear_exact" and exp.output == "raw_score"
    predicted = pipe.predict(x)
    assert exp.classes == list(predicted) and len(set(predicted)) == 3
    logits = pipe.decision_function(x)[np.arange(len(x)), predicted]
    np.testing.assert_allclose(exp.base_values + exp.contributions.sum(axis=1), logits, atol=1e-9)


def test_bare_estimator_is_explained_on_its_own_inputs() -> None:
    x, y = _bundled("regression")
    model = ElasticNet(alpha=0.01).fit(x, y)
    exp = Explainer(model, list(x.columns), x, task="regression").explain(x.head(5))
    assert exp.method == "linear_exact" and exp.output == "value"
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1), model.predict(x.head(5)), atol=1e-9
    )


def test_exact_method_that_does_not_add_up_is_replaced_by_sampling_up_front() -> None:
    """A Poisson GLM has coef_ and intercept_ but predicts exp(x.w + b): not additive."""
    x, y = _bundled("regression")
    pipe = Pipeline([("scale", StandardScaler()), ("glm", PoissonRegressor())]).fit(x, y)
    ex = Explainer(pipe, list(x.columns), x, task="regression", permutations=2)
    assert ex.method == "sampling_shapley"
    assert ex.note is not None and "does not reproduce" in ex.note
    exp = ex.explain(x.head(3))
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1), pipe.predict(x.head(3)), atol=1e-9
    )
