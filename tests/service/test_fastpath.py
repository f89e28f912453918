"""The numpy replays of the preprocessing and the estimator give exactly the pipeline's output,
or are not used."""

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import ElasticNet, LogisticRegression, SGDClassifier
from sklearn.svm import SVC

from service.fastpath import FastEstimator, FastPreprocessor
from service.model import LoadedModel
from tests.data import classification_frame
from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline

KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["color", "group"], datetime=[])


def fitted(est, family: str, prep: Preprocessing | None = None, **kw):  # type: ignore[no-untyped-def]
    frame = classification_frame(300)
    pipe = build_pipeline(KINDS, est, family=family, prep=prep or Preprocessing(), **kw)
    return pipe.fit(frame[KINDS.all], frame["label"]), frame


def awkward_columns(frame):  # type: ignore[no-untyped-def]
    rows = frame[KINDS.all].head(40).astype(object)
    cols = {c: [None if v != v else v for v in rows[c]] for c in KINDS.all}
    cols["color"][0] = "purple"  # unseen
    cols["color"][1] = None  # missing category
    cols["x1"][2] = None  # missing number
    cols["x2"][3] = 1e9  # beyond the clipping bounds
    return cols


@pytest.mark.parametrize("scaler", ["standard", "robust", "minmax", "none"])
@pytest.mark.parametrize("clip", [(0.01, 0.99), None])
def test_linear_one_hot_replay_is_exact(scaler: str, clip: tuple[float, float] | None) -> None:
    pipe, frame = fitted(
        SGDClassifier(loss="log_loss", random_state=0),
        "linear",
        Preprocessing(clip_quantiles=clip, max_categories=2),
        scaler=scaler,
    )
    fast = FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    cols = awkward_columns(frame)
    import pandas as pd

    expected = pipe.steps[0][1].transform(pd.DataFrame(cols).astype({"x1": float, "x2": float}))
    np.testing.assert_allclose(fast.transform(cols), expected, rtol=0, atol=1e-12)


def test_tree_ordinal_replay_is_exact() -> None:
    pipe, frame = fitted(HistGradientBoostingClassifier(max_iter=5), "hgb")
    fast = FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    cols = awkward_columns(frame)
    import pandas as pd

    expected = pipe.steps[0][1].transform(pd.DataFrame(cols).astype({"x1": float, "x2": float}))
    np.testing.assert_allclose(fast.transform(cols), expected, rtol=0, atol=1e-12)


def test_unsupported_preprocessing_keeps_the_pipeline() -> None:
    with_interactions, _ = fitted(SGDClassifier(random_state=0), "linear", interactions=True)
    assert FastPreprocessor.from_pipeline(with_interactions) is None
    with_pca, _ = fitted(SGDClassifier(random_state=0), "linear", pca=2)
    assert FastPreprocessor.from_pipeline(with_pca) is None


DATED = FeatureKinds(numeric=["x1"], categorical=["color"], datetime=["when"])


@pytest.mark.parametrize("family", ["linear", "hgb"])  # scaled, and not scaled (trees)
def test_timestamp_replay_is_exact(family: str) -> None:
    frame = classification_frame(200)
    est = SGDClassifier(random_state=0) if family == "linear" else HistGradientBoostingClassifier()
    pipe = build_pipeline(DATED, est, family=family, prep=Preprocessing())
    pipe.fit(frame[DATED.all], frame["label"])
    fast = FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    when = [
        "2024-02-01T10:30:00",
        "2024-02-01T23:45:00+02:00",  # an offset: converted to UTC, as pandas does
        "2024-03-31T22:00:00Z",
        None,  # missing: imputed with the fitted median
        "2024-07-06",
    ]
    cols = {"x1": [0.5] * 5, "color": ["red"] * 5, "when": when}
    import pandas as pd

    for i, _ in enumerate(when):  # one row at a time: pandas infers a format per column
        one = {k: [v[i]] for k, v in cols.items()}
        frame_one = pd.DataFrame(one).astype({"x1": float})
        expected = pipe.steps[0][1].transform(frame_one)
        np.testing.assert_allclose(fast.transform(one), expected, rtol=0, atol=1e-12)
    # A micro-batch mixes clients: each row's answer must not depend on the others' formats.
    np.testing.assert_allclose(
        fast.transform(cols),
        np.vstack([fast.transform({k: [v[i]] for k, v in cols.items()}) for i in range(5)]),
        rtol=0,
        atol=0,
    )


def linear_matrix(n: int = 300, classes: int = 2, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=n)).round().astype(int) % classes
    return x, y


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGDClassifier(loss="log_loss", random_state=0),
        lambda: LogisticRegression(),
        lambda: CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3),
        lambda: CalibratedClassifierCV(LogisticRegression(), method="isotonic", cv=3),
        lambda: CalibratedClassifierCV(SGDClassifier(loss="hinge", random_state=0), cv=3),
    ],
    ids=["sgd", "logistic", "calibrated-sigmoid", "calibrated-isotonic", "calibrated-hinge"],
)
@pytest.mark.parametrize("classes", [2, 3])
def test_linear_estimator_replay_is_exact(make, classes: int) -> None:  # type: ignore[no-untyped-def]
    x, y = linear_matrix(classes=classes)
    est = make().fit(x, y)
    fast = FastEstimator.from_estimator(est)
    if classes == 3 and isinstance(est, SGDClassifier):
        assert fast is None  # one-vs-rest normalisation is left to scikit-learn
        return
    assert fast is not None and fast.predict_proba is not None
    far = np.vstack([x[:50], x[:5] * 1e3])  # scores far outside the calibration range too
    np.testing.assert_allclose(fast.predict_proba(far), est.predict_proba(far), rtol=0, atol=1e-12)


def test_linear_regressor_replay_is_exact() -> None:
    x, y = linear_matrix()
    est = ElasticNet(alpha=0.01).fit(x, y.astype(float))
    fast = FastEstimator.from_estimator(est)
    assert fast is not None and fast.predict is not None and fast.predict_proba is None
    np.testing.assert_allclose(fast.predict(x), est.predict(x), rtol=0, atol=1e-12)


def test_other_estimators_are_not_replayed() -> None:
    x, y = linear_matrix()
    assert (
        FastEstimator.from_estimator(HistGradientBoostingClassifier(max_iter=3).fit(x, y)) is None
    )
    assert FastEstimator.from_estimator(SGDClassifier(loss="hinge").fit(x, y)) is None
    svc = CalibratedClassifierCV(SVC(), ensemble=False).fit(x, y)
    assert FastEstimator.from_estimator(svc) is None


def test_a_replay_that_differs_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe, frame = fitted(
        CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3), "linear"
    )
    sample = frame[KINDS.all].head(50)

    def build() -> LoadedModel:
        m = LoadedModel.__new__(LoadedModel)
        m.pipeline = pipe
        m.name, m.version = "t", 1
        m.classes = [str(c) for c in pipe.classes_]
        m._columns = KINDS.all
        m._numeric_set = set(KINDS.numeric)
        m._datetime_set = set()
        m._fast, m._fast_est = None, None
        m.example_instance = lambda: {"x1": 0.0, "x2": 1.0, "color": "red", "group": "a"}  # type: ignore[method-assign]
        return m

    model = build()
    assert model.enable_fast_path(sample)
    assert model._fast is not None and model._fast_est is not None
    cols = awkward_columns(frame)
    slow = pipe.predict_proba(model.frame(cols))
    np.testing.assert_allclose(model._estimate(cols, "predict_proba"), slow, rtol=0, atol=1e-12)

    real = FastEstimator.from_estimator
    monkeypatch.setattr(
        FastEstimator,
        "from_estimator",
        classmethod(lambda cls, est: cls(lambda x: real(est).predict_proba(x) + 1e-6, None)),  # type: ignore[union-attr]
    )
    model = build()
    model.enable_fast_path(sample)
    assert model._fast is not None and model._fast_est is None  # off by 1e-6: not used
    np.testing.assert_allclose(model._estimate(cols, "predict_proba"), slow, rtol=0, atol=1e-12)
