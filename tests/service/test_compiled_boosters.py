"""Imported LightGBM and XGBoost pipelines served compiled, answering as their library does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.registry import Manifest
from service.inference import compiled_boosters
from service.inference.compiled import CompiledTrees
from service.inference.model import LoadedModel
from tests.conftest import require_module
from tests.data import classification_frame
from tests.service.test_fastpath import KINDS, awkward_columns
from training.config import Preprocessing
from training.pipeline import build_pipeline

lightgbm = require_module("lightgbm")
xgboost = require_module("xgboost")

LABELS = {
    "string": lambda y: y,
    "integer": lambda y: np.where(y == "yes", 7, 3),
    "boolean": lambda y: y == "yes",
}


def _target(frame: pd.DataFrame, task: str, labels: str) -> Any:
    if task == "regression":
        return frame["x1"] * 2.0 + frame["x2"].fillna(0) + (frame["color"] == "red") * 1.5
    if task == "multiclass":
        return np.digitize(frame["x1"] + 0.2 * frame["x2"].fillna(5), [0.5, 1.5])
    return LABELS[labels](frame["label"].to_numpy())


def _model(lib: str, task: str, **kw: Any) -> Any:
    if lib == "lightgbm":
        cls = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
        return cls(n_estimators=30, verbose=-1, random_state=0, **kw)
    cls = xgboost.XGBRegressor if task == "regression" else xgboost.XGBClassifier
    return cls(n_estimators=30, max_depth=4, random_state=0, **kw)


def _served(pipe: Any, frame: pd.DataFrame, task: str, labels: str) -> LoadedModel:
    """An imported pipeline as the service loads it, its schema read off the frame."""
    features: list[dict[str, Any]] = [
        {"name": c, "kind": "numeric", "dtype": "float", "nullable": True,
         "min": float(frame[c].min()), "max": float(frame[c].max())}
        for c in KINDS.numeric
    ] + [
        {"name": c, "kind": "categorical", "dtype": "str", "nullable": True,
         "categories": sorted(frame[c].dropna().unique().tolist())}
        for c in KINDS.categorical
    ]  # fmt: skip
    body: dict[str, Any] = {
        "name": "boosted",
        "version": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "task": "regression" if task == "regression" else "classification",
        "target": "y",
        "features": features,
    }
    if task != "regression":
        body["classes"] = [str(c) for c in pipe.classes_]
        body["label_type"] = "integer" if task == "multiclass" else labels
    model = LoadedModel(Manifest.model_validate(body), pipe, Path("."))
    model.enable_fast_path(frame[KINDS.all].head(100))
    return model


CASES = [
    ("binary", "string"),
    ("binary", "integer"),
    ("binary", "boolean"),
    ("multiclass", "integer"),
    ("regression", "float"),
]


@pytest.mark.parametrize(("task", "labels"), CASES, ids=[f"{t}-{lab}" for t, lab in CASES])
@pytest.mark.parametrize("lib", ["lightgbm", "xgboost"])
def test_an_imported_boosting_pipeline_is_served_compiled_and_exact(
    lib: str, task: str, labels: str
) -> None:
    frame = classification_frame(400)
    y = _target(frame, task, labels)
    if lib == "xgboost" and task == "binary":
        if labels != "integer":
            pytest.skip("XGBoost's classifier fits class indices 0..k-1 only (its classes_)")
        y = (frame["label"] == "yes").to_numpy().astype(int)
    pipe = build_pipeline(KINDS, _model(lib, task), family="hgb", prep=Preprocessing())
    pipe.fit(frame[KINDS.all], y)
    model = _served(pipe, frame, task, labels)
    assert model.serving_path == "compiled"
    cols = awkward_columns(frame)
    out = model.predict_columns(cols)
    x = model.frame(cols)
    if task == "regression":
        np.testing.assert_allclose(out.predictions, pipe.predict(x), rtol=1e-12, atol=1e-9)
        return
    want = np.round(pipe.predict_proba(x).astype(np.float64), 6)
    got = [[p[c] for c in model.classes or []] for p in out.probabilities or []]
    np.testing.assert_array_equal(got, want)  # bit for bit, after the service's rounding
    # the class the library predicts (XGBoost's own predict answers indices, not its classes_)
    classes = pipe.classes_[np.asarray(pipe.predict_proba(x)).argmax(axis=1)]
    assert [str(p) for p in out.predictions] == [str(c) for c in classes]


@pytest.mark.parametrize("lib", ["lightgbm", "xgboost"])
def test_missing_values_and_extremes_take_the_library_s_path(lib: str) -> None:
    """Fitted with NaN in every column: NaN goes where each split learned, values past float32
    go where the library sends them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 5))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    x[rng.random(x.shape) < 0.15] = np.nan
    est = _model(lib, "binary").fit(x, y)
    compiled = CompiledTrees.from_estimator(est)
    assert compiled is not None
    probe = np.vstack([x, rng.normal(size=(100, 5)) * 1e3, np.full((1, 5), np.nan)])
    probe[-2] = [1e300, -1e300, 0.0, -0.0, 5e-324]
    got, want = compiled.predict_proba(probe), est.predict_proba(probe)
    if lib == "xgboost":  # float32 throughout, the same steps: equal to the bit
        np.testing.assert_array_equal(got, want)
    else:  # float64; numpy's exp and the C library's may differ in the last bit
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("lib", ["lightgbm", "xgboost"])
def test_multiclass_and_regression_margins_are_the_library_s(lib: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4))
    score = x[:, 0] - x[:, 1] * x[:, 3]
    multi = _model(lib, "multiclass").fit(x, np.digitize(score, [-0.5, 0.5]))
    reg = _model(lib, "regression").fit(x, score)
    probe = np.vstack([x, rng.normal(size=(50, 4)) * 20])
    for est, method in ((multi, "predict_proba"), (reg, "predict")):
        compiled = CompiledTrees.from_estimator(est)
        assert compiled is not None
        got = getattr(compiled, method)(probe)
        np.testing.assert_allclose(got, getattr(est, method)(probe), rtol=1e-12, atol=1e-15)


def test_what_is_not_compiled_stays_on_the_library() -> None:
    """Splits that one comparison cannot express, and boosters without trees, are refused;
    the model is then served by its library and says so."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] > 0).astype(int)
    refused = [
        lightgbm.LGBMClassifier(n_estimators=5, verbose=-1, zero_as_missing=True).fit(x, y),
        lightgbm.LGBMClassifier(
            n_estimators=5, verbose=-1, objective="multiclassova", num_class=2
        ).fit(x, y),
        xgboost.XGBClassifier(n_estimators=5, booster="dart").fit(x, y),
        xgboost.XGBClassifier(n_estimators=5, booster="gblinear").fit(x, y),
        xgboost.XGBClassifier(n_estimators=5, missing=0.0).fit(x, y),
    ]
    for est in refused:
        assert CompiledTrees.from_estimator(est) is None, est
    frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(np.where(x[:, 1] > 0, "u", "v"))})
    cat = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1, min_data_per_group=5)
    by_category = (x[:, 1] > 0).astype(int)
    assert CompiledTrees.from_estimator(cat.fit(frame, by_category)) is None  # "==" splits
    assert compiled_boosters.builder(object()) is None


def test_a_boosting_model_that_answers_otherwise_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The load-time check compares with the library: a link off by one float32 step is a
    difference, and the pipeline serves as it is."""
    real = compiled_boosters._xgb_sigmoid

    def off(raw: Any) -> Any:
        return real(raw) * np.float32(1 + 2**-22)

    monkeypatch.setattr(compiled_boosters, "_xgb_sigmoid", off)
    frame = classification_frame(300)
    y = (frame["label"] == "yes").astype(int)
    pipe = build_pipeline(KINDS, _model("xgboost", "binary"), family="hgb", prep=Preprocessing())
    pipe.fit(frame[KINDS.all], y)
    model = _served(pipe, frame, "binary", "integer")
    assert model.serving.estimator is None and model.serving_path == "mixed"
    assert len(model.predict_columns(awkward_columns(frame)).predictions) == 40
