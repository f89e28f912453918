"""Native categorical splits (HGB, LightGBM, XGBoost) served compiled, answering as the library."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from service.inference.compiled import CompiledTrees
from service.inference.model import LoadedModel
from service.inference.trees import Ensemble
from tests.conftest import require_module
from tests.service.test_fastpath_shapes import served
from training.candidates import categories_space, default_params, make_estimator, model_space
from training.config import Preprocessing, TrainConfig
from training.data import FeatureKinds
from training.pipeline import build_pipeline

lightgbm = require_module("lightgbm")
xgboost = require_module("xgboost")

LEVELS = 14
KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["city", "group"], datetime=[])


def _codes(n: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A code column of LEVELS categories (a tenth missing) and a number column; the target's
    per-category effects are not ordered by code, so only set splits group them."""
    rng = np.random.default_rng(seed)
    code = rng.integers(0, LEVELS, n).astype(float)
    effect = np.random.default_rng(99).permutation(LEVELS).astype(float) - LEVELS / 2
    score = effect[code.astype(int)] + rng.normal(size=n)
    code[rng.random(n) < 0.1] = np.nan
    return np.column_stack([rng.normal(size=n), code]), score


def _target(score: np.ndarray[Any, Any], task: str) -> np.ndarray[Any, Any]:
    if task == "regression":
        return score
    if task == "binary":
        return (score > 0).astype(int)
    return np.asarray(np.digitize(score, [-2.0, 2.0]))


def _library_model(lib: str, task: str) -> Any:
    """A model of `lib` splitting column 1 as categories (partition splits, not one-hot)."""
    reg = task == "regression"
    if lib == "hgb":
        cls_h = HistGradientBoostingRegressor if reg else HistGradientBoostingClassifier
        return cls_h(max_iter=20, categorical_features=[1], random_state=0)
    if lib == "lightgbm":
        cls_l = lightgbm.LGBMRegressor if reg else lightgbm.LGBMClassifier
        return cls_l(  # column 1 is named categorical when it is fitted
            n_estimators=20, verbose=-1, min_data_per_group=5, cat_smooth=1, max_cat_to_onehot=1
        )
    cls_x = xgboost.XGBRegressor if reg else xgboost.XGBClassifier
    return cls_x(
        n_estimators=20, max_depth=4, enable_categorical=True, feature_types=["q", "c"],
        max_cat_to_onehot=1,
    )  # fmt: skip


PROBES = [
    [0.0, np.nan],  # missing
    [0.0, LEVELS + 5.0],  # a category never seen
    [0.0, -1.0],  # negative: no category
    [0.0, -0.5],  # LightGBM: int() is 0; HGB, XGBoost: invalid
    [0.0, 2.7],  # LightGBM, XGBoost: category 2; HGB: not a category it knows
    [0.0, -0.0],
    [0.0, 2.0**31],  # past an int
    [0.0, 2.0**24],  # past XGBoost's categories
]
INFINITE = [[0.0, np.inf], [0.0, -np.inf]]


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("lib", ["hgb", "lightgbm", "xgboost"])
def test_categorical_splits_are_compiled_and_answer_as_the_library(lib: str, task: str) -> None:
    x, score = _codes(1500, 0)
    fit = {"categorical_feature": [1]} if lib == "lightgbm" else {}
    est = _library_model(lib, task).fit(x, _target(score, task), **fit)
    compiled = CompiledTrees.from_estimator(est)
    assert compiled is not None
    method = "predict" if task == "regression" else "predict_proba"
    if lib == "hgb":  # its encoder refuses an infinite category; so does the compiled model
        for row in INFINITE:
            for answer in (getattr(compiled, method), getattr(est, method)):
                with pytest.raises(ValueError, match="infinity"):
                    answer(np.array([row]))
    more = [] if lib == "hgb" else INFINITE
    probe = np.vstack([x[:300], PROBES, *more, _codes(300, 1)[0] * [1.0, 1.7]])
    got, want = getattr(compiled, method)(probe), getattr(est, method)(probe)
    if lib == "xgboost":  # float32 throughout, the same steps: equal to the bit
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def _frame(n: int, seed: int) -> pd.DataFrame:
    x, score = _codes(n, seed)
    rng = np.random.default_rng(seed)
    city = np.array([f"c{int(c):02d}" if c == c else None for c in x[:, 1]], dtype=object)
    return pd.DataFrame(
        {"x1": x[:, 0], "x2": rng.uniform(0, 10, n), "city": city,
         "group": rng.choice(["a", "b"], n), "score": score}
    )  # fmt: skip


LABELS = {
    "string": lambda y: np.where(y > 0, "yes", "no"),
    "integer": lambda y: np.where(y > 0, 7, 3),
}


def _served(pipe: Any, frame: pd.DataFrame, classes: list[Any] | None) -> LoadedModel:
    """`pipe` as the service loads it (test_fastpath_shapes.served: the schema read off `frame`)."""
    task = "regression" if classes is None else "classification"
    labels = pd.Series(classes if classes is not None else [], dtype=object)
    return served(pipe, frame[KINDS.all], labels, task, KINDS).model


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    rows = frame[KINDS.all].head(60).astype(object)
    cols = {c: [None if v != v else v for v in rows[c]] for c in KINDS.all}
    cols["city"][0] = "atlantis"  # unseen
    cols["city"][1] = None  # missing
    cols["group"][2] = "z"  # unseen
    cols["x1"][3] = None
    return cols


def _assert_served_as_pipeline(pipe: Any, frame: pd.DataFrame, classes: Any) -> None:
    model = _served(pipe, frame, None if classes is None else list(classes))
    assert model.serving_path == "compiled"
    cols = _columns(frame)
    out, x = model.predict_columns(cols), model.frame(cols)
    if classes is None:
        np.testing.assert_allclose(out.predictions, pipe.predict(x), rtol=1e-12, atol=1e-9)
        return
    want = np.round(np.asarray(pipe.predict_proba(x), dtype=np.float64), 6)
    got = [[p[str(c)] for c in classes] for p in out.probabilities or []]
    np.testing.assert_array_equal(got, want)


CASES = [
    ("regression", "float"),
    ("binary", "string"),
    ("binary", "integer"),
    ("multiclass", "integer"),
]


@pytest.mark.parametrize(("task", "labels"), CASES, ids=[f"{t}-{lab}" for t, lab in CASES])
@pytest.mark.parametrize("family", ["hgb", "lightgbm", "xgboost"])
def test_a_trained_pipeline_with_native_categories_is_served_compiled(
    family: str, task: str, labels: str
) -> None:
    """servewatch's own family pipelines (training/pipeline.py, categories="native"): the codes
    come first, the library splits them as categories, the service answers compiled and as the
    pipeline does, an unseen and a missing category included."""
    frame = _frame(1200, 0)
    score = frame["score"].to_numpy()
    y: Any = score if task == "regression" else _target(score, task)
    if task == "binary":
        y = LABELS[labels](score)
    clf = "regression" if task == "regression" else "classification"
    params = {"min_data_per_group": 5, "cat_smooth": 1.0} if family == "lightgbm" else {}
    est = make_estimator(family, clf, {"n_estimators": 30, **params} if family != "hgb" else
                         {"max_iter": 30}, 0)  # fmt: skip
    pipe = build_pipeline(KINDS, est, family=family, prep=Preprocessing(), categories="native")
    pipe.fit(frame[KINDS.all], y)
    model = pipe.named_steps["model"]
    assert _categorical_splits(model) > 0  # it did split the codes as categories
    _assert_served_as_pipeline(pipe, frame, None if clf == "regression" else model.classes_)


def _categorical_splits(est: Any) -> int:
    """Categorical splits in a fitted model, as its library records them."""
    if hasattr(est, "_predictors"):
        return sum(int(p.nodes["is_categorical"].sum()) for it in est._predictors for p in it)
    if hasattr(est, "booster_"):
        return sum(t.get("num_cat", 0) for t in est.booster_.dump_model()["tree_info"])
    trees = json.loads(est.get_booster().save_raw("json"))["learner"]["gradient_booster"]
    return sum(sum(t["split_type"]) for t in trees["model"]["trees"])


@pytest.mark.parametrize("lib", ["lightgbm", "xgboost"])
def test_an_imported_pipeline_with_native_categories_is_served_compiled(lib: str) -> None:
    """Someone else's Pipeline: an OrdinalEncoder, then the library told the code columns are
    categorical (LightGBM's categorical_feature, XGBoost's feature types)."""
    frame = _frame(1200, 2)
    y = np.where(frame["score"] > 0, 1, 0)
    encode = make_column_transformer(
        (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
         KINDS.categorical),
        remainder="passthrough",
    )  # fmt: skip
    if lib == "lightgbm":
        est: Any = lightgbm.LGBMClassifier(
            n_estimators=30, verbose=-1, min_data_per_group=5, cat_smooth=1
        )
        pipe = make_pipeline(encode, est)
        pipe.fit(frame[KINDS.all], y, lgbmclassifier__categorical_feature=[0, 1])
    else:
        est = xgboost.XGBClassifier(
            n_estimators=30, enable_categorical=True, feature_types=["c", "c", "q", "q"]
        )
        pipe = make_pipeline(encode, est).fit(frame[KINDS.all], y)
    assert _categorical_splits(est) > 0
    _assert_served_as_pipeline(pipe, frame, est.classes_)


def test_categories_a_library_recodes_from_a_data_frame_stay_on_the_library() -> None:
    """XGBoost fitted on a pandas category column re-codes its input's categories itself (as
    LightGBM's `pandas_categorical` and HGB's own encoder of strings do): refused, where the
    same model fitted on the codes is compiled."""
    x, score = _codes(600, 3)
    codes = np.nan_to_num(x[:, 1])
    frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(codes.astype(str))})
    est = xgboost.XGBRegressor(n_estimators=5, enable_categorical=True, max_cat_to_onehot=1)
    assert CompiledTrees.from_estimator(est.fit(frame, score)) is None
    est.set_params(feature_types=["q", "c"])
    assert CompiledTrees.from_estimator(est.fit(np.column_stack([x[:, 0], codes]), score))


def test_a_feature_read_two_ways_or_an_empty_set_is_refused() -> None:
    ens = Ensemble()
    ens.categorical(0, "lightgbm")
    with pytest.raises(TypeError):
        ens.categorical(0, "xgboost")
    one = np.array([1, -1, -1])
    with pytest.raises(TypeError):  # a set without categories is no split a library learns
        ens.add(one, np.array([2, -1, -1]), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3),
                0, {0: (np.array([]), True)})  # fmt: skip


def _space(family: str, **prep: Any) -> dict[str, Any]:
    config = TrainConfig.model_validate(
        {"name": "t", "data": "x.csv", "target": "y", "preprocessing": prep}
    )
    return {**categories_space(family, config, 2), **model_space(family, "classification")}


def test_the_search_chooses_between_native_and_ordinal_categories() -> None:
    """hgb, lightgbm and xgboost search native against ordinal splits; the untuned default is
    native for xgboost only; a configured mode is the only one; other families and one-hot
    encodings have no such choice."""
    for family in ("hgb", "lightgbm", "xgboost"):
        space = _space(family)
        assert space["pre_categories"].values == ("native", "ordinal")
        default = default_params(family, "classification", space)["pre_categories"]
        assert default == ("native" if family == "xgboost" else "ordinal")
        ordinal = _space(family, categorical_splits="ordinal")  # the space before native splits
        assert ordinal == model_space(family, "classification")
        fixed = _space(family, categorical_splits="native")
        native = default_params(family, "classification", fixed)
        assert native["pre_categories"] == "native"
        if family == "lightgbm":  # its own 100 rows a group forbid small groups
            assert (native["min_data_per_group"], native["cat_smooth"]) == (5, 1.0)
        assert "pre_categories" not in _space(family, encoding="onehot")
    assert "min_data_per_group" in _space("lightgbm")
    assert "pre_categories" not in _space("forest")
    config = TrainConfig.model_validate({"name": "t", "data": "x.csv", "target": "y"})
    assert categories_space("xgboost", config, 0) == {}  # no categorical column


def test_native_categories_are_left_out_under_a_pca_and_capped_for_hgb() -> None:
    frame = _frame(600, 4)
    frame["city"] = [f"c{i % 300}" for i in range(len(frame))]  # 300 levels: past HGB's 255
    y = frame["score"].to_numpy()
    est = make_estimator("hgb", "regression", {"max_iter": 5}, 0)
    pipe = build_pipeline(KINDS, est, family="hgb", prep=Preprocessing(), categories="native")
    pipe.fit(frame[KINDS.all], y)  # HGB refuses more than 255 categories: capped
    assert list(pipe.named_steps["model"].categorical_features) == [0, 1]
    pca = build_pipeline(
        KINDS, make_estimator("hgb", "regression", {"max_iter": 5}, 0), family="hgb",
        prep=Preprocessing(), categories="native", pca=2,
    )  # fmt: skip
    assert pca.named_steps["model"].categorical_features == "from_dtype"  # untouched
