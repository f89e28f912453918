"""Tree models compiled for ONNX Runtime answer as scikit-learn does, or are not used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
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
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from core.registry import Manifest
from service.inference import compiled as compiled_module
from service.inference.compiled import CompiledTrees
from service.inference.equality import same_rows
from service.inference.fastpath import FastEstimator
from service.inference.model import LoadedModel
from tests.service.test_fastpath import KINDS, awkward_columns, fitted, loaded


def matrix(classes: int, missing: bool = False, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 5))
    score = x[:, 0] + 2 * x[:, 1] - x[:, 2] * x[:, 3]
    y: Any = (
        score if classes == 0 else np.digitize(score, np.quantile(score, [0.4, 0.7][: classes - 1]))
    )
    if missing:
        x[rng.random(x.shape) < 0.1] = np.nan
    return x, y


def probe_rows(x: Any) -> Any:
    """Training rows, rows exactly on every split threshold's float32 neighbours, missing
    values and values far outside the training range."""
    rng = np.random.default_rng(1)
    extra = rng.normal(size=(60, x.shape[1])) * 50
    extra[::7, 1] = np.nan
    return np.vstack([x[:200], extra, np.full((1, x.shape[1]), 1e30)])


CLASSIFIERS = [
    lambda: DecisionTreeClassifier(random_state=0),
    lambda: RandomForestClassifier(n_estimators=15, random_state=0),
    lambda: ExtraTreesClassifier(n_estimators=15, random_state=0),
    lambda: GradientBoostingClassifier(n_estimators=15, random_state=0),
    lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
    lambda: CalibratedClassifierCV(RandomForestClassifier(n_estimators=10, random_state=0), cv=3),
    lambda: CalibratedClassifierCV(
        HistGradientBoostingClassifier(max_iter=10), method="isotonic", cv=3
    ),
]
CLASSIFIER_IDS = ["tree", "forest", "extra", "gb", "hgb", "forest-sigmoid", "hgb-isotonic"]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("make", CLASSIFIERS, ids=CLASSIFIER_IDS)
def test_compiled_classifiers_answer_as_scikit_learn(make: Any, classes: int) -> None:
    x, y = matrix(classes)
    est = make().fit(x, y)
    fast = FastEstimator.from_estimator(est)
    assert fast is not None and fast.kind == "onnx" and fast.predict_proba is not None
    rows = probe_rows(np.nan_to_num(x))
    rows = rows[np.isfinite(rows).all(axis=1) & (np.abs(rows) < 1e30).all(axis=1)]
    want = est.predict_proba(rows)
    got = fast.predict_proba(rows)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(est.classes_[got.argmax(axis=1)], est.predict(rows))


@pytest.mark.parametrize(
    "make",
    [
        lambda: DecisionTreeRegressor(random_state=0),
        lambda: RandomForestRegressor(n_estimators=15, random_state=0),
        lambda: ExtraTreesRegressor(n_estimators=15, random_state=0),
        lambda: GradientBoostingRegressor(n_estimators=15, random_state=0),
        lambda: HistGradientBoostingRegressor(max_iter=15),
        lambda: HistGradientBoostingRegressor(max_iter=15, loss="absolute_error"),
    ],
    ids=["tree", "forest", "extra", "gb", "hgb", "hgb-absolute"],
)
def test_compiled_regressors_answer_as_scikit_learn(make: Any) -> None:
    x, y = matrix(0)
    est = make().fit(x, y)
    fast = FastEstimator.from_estimator(est)
    assert fast is not None and fast.kind == "onnx" and fast.predict is not None
    rows = probe_rows(np.nan_to_num(x))[:-1]
    rows = rows[np.isfinite(rows).all(axis=1)]
    np.testing.assert_allclose(fast.predict(rows), est.predict(rows), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    "est",
    [
        HistGradientBoostingClassifier(max_iter=15),
        HistGradientBoostingRegressor(max_iter=15),
        DecisionTreeClassifier(random_state=0),
        RandomForestClassifier(n_estimators=10, random_state=0),
    ],
    ids=["hgb", "hgb-reg", "tree", "forest"],
)
def test_missing_values_take_the_learned_side(est: Any) -> None:
    """Trees fitted with NaN send it where each split learned; the compiled walk does too."""
    classes = 0 if "Regressor" in type(est).__name__ else 2
    x, y = matrix(classes, missing=True)
    est.fit(x, y)
    compiled = CompiledTrees.from_estimator(est)
    assert compiled is not None
    rows = probe_rows(x)[:-1]
    if classes:
        np.testing.assert_allclose(
            compiled.predict_proba(rows), est.predict_proba(rows), atol=1e-12
        )
    else:
        np.testing.assert_allclose(compiled.predict(rows), est.predict(rows), rtol=1e-12)


def test_float32_overflow_is_refused_as_scikit_learn_refuses_it() -> None:
    """scikit-learn's trees read float32: 1e39 overflows and is refused, not answered."""
    x, y = matrix(2)
    est = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    compiled = CompiledTrees.from_estimator(est)
    assert compiled is not None
    big = x[:2].copy()
    big[0, 0] = 1e39
    with pytest.raises(ValueError):
        est.predict_proba(big)
    with pytest.raises(ValueError, match="float32"):
        compiled.predict_proba(big)
    with pytest.raises(ValueError, match="features"):
        compiled.predict_proba(x[:2, :3])  # the wrong width is refused, not misread


def test_values_just_beside_a_threshold_go_the_same_way() -> None:
    """The splits compare in float64 (HGB) or on float32-rounded inputs (trees), as
    scikit-learn does: rows one ulp either side of every threshold answer alike."""
    x, y = matrix(3)
    for est in (
        HistGradientBoostingClassifier(max_iter=10).fit(x, y),
        RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y),
    ):
        compiled = CompiledTrees.from_estimator(est)
        assert compiled is not None
        if isinstance(est, HistGradientBoostingClassifier):
            nodes = est._predictors[0][0].nodes
            splits = [
                (int(n["feature_idx"]), float(n["num_threshold"]))
                for n in nodes
                if not n["is_leaf"]
            ]
        else:
            tree = est.estimators_[0].tree_
            splits = [
                (int(f), float(t))
                for f, t in zip(tree.feature, tree.threshold, strict=True)
                if f >= 0
            ]
        rows = []
        for feat, thr in splits:
            for value in (np.nextafter(thr, -np.inf), thr, np.nextafter(thr, np.inf)):
                row = x[0].copy()
                row[feat] = value
                rows.append(row)
        probe = np.array(rows)
        np.testing.assert_allclose(
            compiled.predict_proba(probe), est.predict_proba(probe), atol=1e-12
        )


def test_what_is_not_compiled_says_none() -> None:
    x, y = matrix(2)
    assert CompiledTrees.from_estimator(LogisticRegression().fit(x, y)) is None
    exponential = GradientBoostingClassifier(n_estimators=3, loss="exponential").fit(x, y)
    assert CompiledTrees.from_estimator(exponential) is None  # another link
    custom_init = GradientBoostingClassifier(n_estimators=3, init=LogisticRegression()).fit(x, y)
    assert CompiledTrees.from_estimator(custom_init) is None
    dummy_init = GradientBoostingClassifier(n_estimators=3, init=DummyClassifier()).fit(x, y)
    assert CompiledTrees.from_estimator(dummy_init) is not None
    frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(np.where(x[:, 1] > 0, "u", "v"))})
    categorical = HistGradientBoostingClassifier(max_iter=3, categorical_features="from_dtype")
    assert CompiledTrees.from_estimator(categorical.fit(frame, y)) is None  # bitset splits
    poisson = HistGradientBoostingRegressor(max_iter=3, loss="poisson").fit(x, np.abs(y) + 1)
    assert CompiledTrees.from_estimator(poisson) is None  # exp link


def test_a_pipeline_serves_compiled_and_answers_as_the_pipeline() -> None:
    pipe, frame = fitted(RandomForestClassifier(n_estimators=20, random_state=0), "forest")
    model = loaded(pipe, frame, KINDS)
    assert model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving_path == "compiled"
    cols = awkward_columns(frame)
    out = model.predict_columns(cols)
    want = pipe.predict_proba(model.frame(cols))
    got = [[p[c] for c in model.classes or []] for p in out.probabilities or []]
    np.testing.assert_allclose(got, np.round(want, 6), atol=1e-12)
    assert [str(p) for p in out.predictions] == [str(c) for c in pipe.predict(model.frame(cols))]
    off = loaded(pipe, frame, KINDS)
    off.enable_fast_path(frame[KINDS.all].head(50), compiled=False)
    assert off.serving_path == "mixed"  # numpy preprocessing, scikit-learn's forest


def test_a_compiled_model_that_differs_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe, frame = fitted(HistGradientBoostingClassifier(max_iter=10), "hgb")
    real = CompiledTrees.predict_proba

    def off_by_a_little(self: CompiledTrees, x: Any) -> Any:
        return real(self, x) + 1e-7

    monkeypatch.setattr(CompiledTrees, "predict_proba", off_by_a_little)
    model = loaded(pipe, frame, KINDS)
    model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving.estimator is None and model.serving_path == "mixed"


def test_a_tie_broken_the_other_way_is_a_difference() -> None:
    """Values within the tolerance are not enough: the predicted class must match on every
    row (a forest's 0.5/0.5 vote rounded the other way would answer the other class)."""

    def sklearn_like(x: Any) -> Any:
        del x
        return np.array([[0.5, 0.5], [0.2, 0.8]])

    def flipped(x: Any) -> Any:
        del x
        return np.array([[0.5 - 1e-12, 0.5 + 1e-12], [0.2, 0.8]])

    x = np.zeros((2, 1))
    assert same_rows(sklearn_like, sklearn_like, x)
    assert not same_rows(flipped, sklearn_like, x)


def test_without_onnxruntime_trees_stay_on_scikit_learn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(compiled_module, "AVAILABLE", False)
    pipe, frame = fitted(RandomForestClassifier(n_estimators=5, random_state=0), "forest")
    model = loaded(pipe, frame, KINDS)
    with caplog.at_level("WARNING", logger="servewatch.model"):
        model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving_path == "mixed" and model.serving.estimator is None
    assert "onnxruntime is not installed" in caplog.text
    out = model.predict_columns(awkward_columns(frame))
    assert len(out.predictions) == 40


def test_a_bare_numeric_estimator_is_compiled_too() -> None:
    """Imported without preprocessing (fitted on a DataFrame of numbers): served compiled."""
    x, y = matrix(2)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(frame, y)
    manifest = Manifest.model_validate(
        {
            "name": "bare",
            "version": 1,
            "created_at": "2026-01-01T00:00:00Z",
            "task": "classification",
            "target": "y",
            "classes": ["0", "1"],
            "features": [
                {"name": c, "kind": "numeric", "dtype": "float", "nullable": True,
                 "min": float(frame[c].min()), "max": float(frame[c].max())}
                for c in reversed(frame.columns)  # the schema's order need not be the model's
            ],
        }
    )  # fmt: skip
    model = LoadedModel(manifest, est, Path("."))
    assert model.enable_fast_path(frame.head(50))
    assert model.serving_path == "compiled"
    cols = {c: frame[c].head(30).tolist() for c in frame.columns}
    got = model.predict_columns(cols).probabilities or []
    want = np.round(est.predict_proba(frame.head(30)), 6)
    np.testing.assert_allclose([[p["0"], p["1"]] for p in got], want, atol=1e-12)


def test_models_of_one_kind_share_one_session_and_kinds_do_not_mix() -> None:
    """A CalibratedClassifierCV's members are compiled into one session, answered in one call;
    a float32 reader (forest) and a float64 reader (HGB) cannot share one."""
    x, y = matrix(3)
    forests = [RandomForestClassifier(n_estimators=5, random_state=s).fit(x, y) for s in (0, 1)]
    both = CompiledTrees.from_estimators(forests)
    assert both is not None and len(both.members) == 2
    for est, got in zip(forests, both.responses(x[:50]), strict=True):
        np.testing.assert_allclose(got, est.predict_proba(x[:50]), atol=1e-12)
    hgb = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    assert CompiledTrees.from_estimators([forests[0], hgb]) is None


def test_onnxruntime_is_imported_only_when_a_tree_model_is_compiled() -> None:
    """Its import costs about 0.4 s of start-up: a service of linear models never pays it."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.tree import DecisionTreeClassifier\n"
        "import service.main\n"
        "from service.inference.fastpath import FastEstimator\n"
        "x = np.random.default_rng(0).normal(size=(60, 3)); y = (x[:, 0] > 0).astype(int)\n"
        "FastEstimator.from_estimator(LogisticRegression().fit(x, y))\n"
        "print('onnxruntime' in sys.modules)\n"
        "FastEstimator.from_estimator(DecisionTreeClassifier().fit(x, y))\n"
        "print('onnxruntime' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]


def test_the_load_check_asks_each_side_once_per_batch_or_row() -> None:
    """scikit-learn's answer on the check rows is most of a compiled load: each side answers
    each batch once; when the batch is refused, each row once (and a row refused by both is
    alike)."""
    calls = {"mine": 0, "theirs": 0}

    def counted(side: str, refuse_big: bool) -> Any:
        def answer(x: Any) -> Any:
            calls[side] += 1
            if refuse_big and (np.abs(x) > 1e300).any():
                raise ValueError("too large")
            return np.column_stack([1 - x[:, 0] / 10, x[:, 0] / 10])

        return answer

    x = np.array([[1.0], [2.0], [3.0]])
    assert same_rows(counted("mine", True), counted("theirs", True), x)
    assert calls == {"mine": 1, "theirs": 1}
    calls.update(mine=0, theirs=0)
    x[1, 0] = 1e308  # refused: row by row, the refused row alike on both sides
    assert same_rows(counted("mine", True), counted("theirs", True), x)
    assert calls == {"mine": 3, "theirs": 4}  # theirs: the batch, then each row
    assert not same_rows(counted("mine", False), counted("theirs", True), x)


def test_a_soft_voting_ensemble_serves_on_its_members_fast_paths() -> None:
    """Training's `ensemble` family: a Pipeline holding a soft VotingClassifier of pipelines.
    Each member gets its own fast path (numpy replay, compiled trees) and the weighted average
    answers as scikit-learn's ensemble, on awkward rows too, for two and three classes; hard
    voting stays scikit-learn's."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    from tests.data import classification_frame
    from training.config import Preprocessing
    from training.pipeline import build_pipeline

    frame = classification_frame(300)
    three = np.where(frame["x1"] < -0.5, "low", np.where(frame["x1"] < 0.5, "mid", "high"))
    for labels in (frame["label"], pd.Series(three)):
        prep = Preprocessing()
        sgd = SGDClassifier(loss="log_loss", random_state=0)
        rf = RandomForestClassifier(n_estimators=15, random_state=0)
        members = [
            ("linear", build_pipeline(KINDS, sgd, family="linear", prep=prep)),
            ("forest", build_pipeline(KINDS, rf, family="forest", prep=prep)),
        ]
        for voting, weights in (("soft", [2.0, 1.0]), ("hard", None)):
            pipe = Pipeline(
                [("model", VotingClassifier(members, voting=voting, weights=weights))]
            ).fit(frame[KINDS.all], labels)
            model = loaded(pipe, frame, KINDS)
            used = model.enable_fast_path(frame[KINDS.all].head(50))
            if voting == "hard":
                assert not used and model.serving_path == "sklearn"
                continue
            paths = {m.serving_path for m in model.serving.members}
            # the forest compiled; the linear member replayed (two classes) or, for three,
            # its preprocessing replayed and scikit-learn's multi-class SGD
            assert used and "compiled" in paths and paths <= {"numpy", "compiled", "mixed"}
            assert model.serving_path == ("compiled" if "mixed" not in paths else "mixed")
            cols = awkward_columns(frame)
            out = model.predict_columns(cols)
            want = pipe.predict_proba(model.frame(cols))
            got = [[p[c] for c in model.classes or []] for p in out.probabilities or []]
            np.testing.assert_allclose(got, np.round(want, 6), atol=1e-12)
            expected = [str(c) for c in pipe.predict(model.frame(cols))]
            assert [str(p) for p in out.predictions] == expected
            # the members answer, not scikit-learn's ensemble
            ensemble = pipe.steps[-1][1]
            ensemble.predict_proba = ensemble.predict = None
            again = model.predict_columns(cols)
            assert again.probabilities == out.probabilities


def test_dropped_members_and_their_weights_are_left_out_as_scikit_learn_leaves_them() -> None:
    from sklearn.ensemble import VotingClassifier, VotingRegressor
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    from tests.data import classification_frame
    from training.config import Preprocessing
    from training.pipeline import build_pipeline

    frame = classification_frame(300)
    prep = Preprocessing()
    members = [
        ("linear", build_pipeline(KINDS, SGDClassifier(loss="log_loss", random_state=0),
                                  family="linear", prep=prep)),
        ("gone", "drop"),
        ("forest", build_pipeline(KINDS, RandomForestClassifier(n_estimators=10, random_state=0),
                                  family="forest", prep=prep)),
    ]  # fmt: skip
    pipe = Pipeline([("model", VotingClassifier(members, voting="soft", weights=[2, 1, 5]))])
    pipe.fit(frame[KINDS.all], frame["label"])
    model = loaded(pipe, frame, KINDS)
    assert model.enable_fast_path(frame[KINDS.all].head(50)) and model.serving.weights == [2, 5]
    cols = awkward_columns(frame)
    got = [
        [p[c] for c in model.classes or []] for p in model.predict_columns(cols).probabilities or []
    ]
    np.testing.assert_allclose(got, np.round(pipe.predict_proba(model.frame(cols)), 6), atol=1e-12)
    assert VotingRegressor  # the regressor's weights are filtered by the same code


def test_an_ensemble_that_refuses_a_check_row_stays_on_scikit_learn_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A member without an imputer refuses the check rows' missing values: the ensemble keeps
    scikit-learn's path, and the log says why."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.data import classification_frame

    frame = classification_frame(300)
    numeric = ["x1", "x2"]
    kinds = type(KINDS)(numeric=numeric, categorical=[], datetime=[])
    x = frame[numeric].fillna(0.0)
    member = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    pipe = Pipeline([("model", VotingClassifier([("lr", member)], voting="soft"))])
    pipe.fit(x, frame["label"])
    model = loaded(pipe, x.assign(label=frame["label"]), kinds)
    with caplog.at_level("WARNING"):
        assert not model.enable_fast_path(x.head(50))
    assert model.serving_path == "sklearn" and not model.serving.members
    assert "stays on scikit-learn" in caplog.text


def test_an_ensemble_whose_average_differs_stays_on_scikit_learn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The load check compares the members' average with the ensemble's own answer."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline

    from service.inference import plan as plan_module
    from tests.data import classification_frame
    from training.config import Preprocessing
    from training.pipeline import build_pipeline

    frame = classification_frame(300)
    forest = build_pipeline(
        KINDS, RandomForestClassifier(n_estimators=10, random_state=0), family="forest",
        prep=Preprocessing(),
    )  # fmt: skip
    pipe = Pipeline([("model", VotingClassifier([("f", forest)], voting="soft"))])
    pipe.fit(frame[KINDS.all], frame["label"])
    real = plan_module.average
    monkeypatch.setattr(plan_module, "average", lambda *a: real(*a) * 0.999 + 0.0005)
    model = loaded(pipe, frame, KINDS)
    assert not model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving_path == "sklearn" and not model.serving.members
