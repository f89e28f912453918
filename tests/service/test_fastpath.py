"""The numpy replays of the preprocessing and the estimator give exactly the pipeline's output,
or are not used."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import ElasticNet, LogisticRegression, SGDClassifier
from sklearn.svm import SVC

from core.registry import Manifest
from service.inference import fastpath
from service.inference.fastpath import FastEstimator, FastPreprocessor, parse_timestamp
from service.inference.model import EDGE_TIMESTAMPS, LoadedModel
from tests.data import classification_frame
from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline

KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["color", "group"], datetime=[])


def fitted(est, family: str, prep: Preprocessing | None = None, **kw):  # type: ignore[no-untyped-def]
    frame = classification_frame(300)
    pipe = build_pipeline(KINDS, est, family=family, prep=prep or Preprocessing(), **kw)
    return pipe.fit(frame[KINDS.all], frame["label"]), frame


def loaded(pipe: Any, frame: pd.DataFrame, kinds: FeatureKinds) -> LoadedModel:
    """A LoadedModel around a fitted pipeline, its manifest's schema read off the frame."""
    features: list[dict[str, Any]] = []
    for c in kinds.numeric:
        lo, hi = float(frame[c].min()), float(frame[c].max())
        features.append({"name": c, "kind": "numeric", "dtype": "float", "nullable": True})
        features[-1].update(min=lo, max=hi)
    for c in kinds.categorical:
        cats = sorted(frame[c].dropna().unique().tolist())
        features.append({"name": c, "kind": "categorical", "dtype": "str", "nullable": True})
        features[-1]["categories"] = cats
    for c in kinds.datetime:
        features.append({"name": c, "kind": "datetime", "dtype": "datetime", "nullable": True})
    manifest = Manifest.model_validate(
        {
            "name": "t",
            "version": 1,
            "created_at": "2026-01-01T00:00:00Z",
            "task": "classification",
            "target": "label",
            "classes": [str(c) for c in pipe.classes_],
            "features": features,
        }
    )
    return LoadedModel(manifest, pipe, Path("."))


def awkward_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
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
    cols: dict[str, list[Any]] = {"x1": [0.5] * 5, "color": ["red"] * 5, "when": when}
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
    hgb = HistGradientBoostingClassifier(max_iter=3).fit(x, y)
    assert FastEstimator.from_estimator(hgb, compile=False) is None  # compiled, not replayed
    compiled = FastEstimator.from_estimator(hgb)
    assert compiled is not None and compiled.kind == "onnx"
    assert FastEstimator.from_estimator(SGDClassifier(loss="hinge").fit(x, y)) is None
    svc = CalibratedClassifierCV(SVC(), ensemble=False).fit(x, y)
    assert FastEstimator.from_estimator(svc) is None


def test_a_replay_that_differs_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe, frame = fitted(
        CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3), "linear"
    )
    sample = frame[KINDS.all].head(50)

    def build() -> LoadedModel:
        return loaded(pipe, frame, KINDS)

    model = build()
    assert model.enable_fast_path(sample)
    assert model.serving.pre is not None and model.serving.estimator is not None
    cols = awkward_columns(frame)
    slow = pipe.predict_proba(model.frame(cols))
    np.testing.assert_allclose(model.estimate(cols, "predict_proba"), slow, rtol=0, atol=1e-12)

    real = FastEstimator.from_estimator
    monkeypatch.setattr(
        FastEstimator,
        "attempt",
        classmethod(
            lambda cls, est, **kw: (
                cls(lambda x: real(est).predict_proba(x) + 1e-6, None),  # type: ignore[union-attr]
                "none",
                "",
            )
        ),
    )
    model = build()
    model.enable_fast_path(sample)
    # the estimator is off by 1e-6: not used
    assert model.serving.pre is not None and model.serving.estimator is None
    np.testing.assert_allclose(model.estimate(cols, "predict_proba"), slow, rtol=0, atol=1e-12)


def dated_model(family: str = "linear") -> tuple[LoadedModel, Any, pd.DataFrame]:
    frame = classification_frame(200)
    est = (
        CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3)
        if family == "linear"
        else HistGradientBoostingClassifier(max_iter=5)
    )
    pipe = build_pipeline(DATED, est, family=family, prep=Preprocessing())
    pipe.fit(frame[DATED.all], frame["label"])
    return loaded(pipe, frame, DATED), pipe, frame


def test_one_parser_reads_edge_timestamps_alike_on_both_paths() -> None:
    """9999-12-31 was month 12 on the replay and missing (NaT) on the pipeline path."""
    model, pipe, frame = dated_model()
    assert model.enable_fast_path(frame[DATED.all].head(50))
    assert model.serving_path == "numpy"
    for value in [*EDGE_TIMESTAMPS, "2024-02-01T10:30:00"]:
        cols: dict[str, list[Any]] = {"x1": [0.5], "color": ["red"], "when": [value]}
        slow = pipe.predict_proba(model.frame(cols))
        np.testing.assert_allclose(model.estimate(cols, "predict_proba"), slow, atol=1e-12)
    # what the one parser says, for both: out of the datetime64[ns] range is missing
    assert parse_timestamp("9999-12-31T00:00:00") is None
    assert parse_timestamp("0001-01-01T00:00:00+01:00") is None  # overflowed the replay before
    assert parse_timestamp("2024-02-01T23:45:00+02:00") == parse_timestamp("2024-02-01T21:45Z")
    assert model.frame({"x1": [0.5], "color": ["red"], "when": ["9999-12-31"]})["when"].isna()[0]


def test_pipeline_path_never_mixes_formats_in_a_micro_batch() -> None:
    """pandas infers one format per column: the pipeline path blanked a second client's
    date-only or offset timestamp when it shared a micro-batch with another format."""
    model, pipe, _ = dated_model("hgb")  # boosting: the pipeline's own predict_proba
    when = ["2024-02-01T10:30:00", "2024-07-06T00:00:00+02:00", "2024-07-06", "2024-03-01 08:15"]
    cols: dict[str, list[Any]] = {"x1": [0.5] * 4, "color": ["red"] * 4, "when": when}
    together = model.frame(cols)["when"].tolist()
    alone = [model.frame({k: [v[i]] for k, v in cols.items()})["when"][0] for i in range(4)]
    assert together == alone and not any(pd.isna(t) for t in together)
    np.testing.assert_array_equal(
        pipe.predict_proba(model.frame(cols)),
        np.vstack(
            [
                pipe.predict_proba(model.frame({k: [v[i]] for k, v in cols.items()}))
                for i in range(4)
            ]
        ),
    )


def _no_clip(part: Any) -> None:
    part.lower = part.upper = None


def _zero_fill(part: Any) -> None:
    part.fill = np.zeros_like(part.fill)


def _unseen_as_first(part: Any) -> None:
    for codes in part.codes:
        codes[fastpath.UNSEEN] = 0


@pytest.mark.parametrize(
    ("part", "bug"),
    [("_Numeric", _no_clip), ("_Numeric", _zero_fill), ("_Categorical", _unseen_as_first)],
    ids=["no-clipping", "missing-as-zero", "unseen-as-first-category"],
)
def test_load_check_feeds_what_reference_rows_lack(
    monkeypatch: pytest.MonkeyPatch, part: str, bug: Any
) -> None:
    """A replay wrong only on missing values, unseen categories or values beyond the clipping
    bounds passed a check on clean reference rows; the generated rows catch it."""
    pipe, frame = fitted(
        CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3), "linear"
    )
    clip = pipe.steps[0][1].named_transformers_["num"].named_steps["clip"]
    inside = (frame[KINDS.numeric] > clip.lower_bounds_).all(axis=1) & (
        frame[KINDS.numeric] < clip.upper_bounds_
    ).all(axis=1)
    clean = frame[inside].head(50)  # no missing value, no unseen category, nothing clipped
    assert not clean[KINDS.all].isna().any().any()
    cls = getattr(fastpath, part)
    init = cls.__init__

    def broken_init(self: Any, *args: Any) -> None:
        init(self, *args)
        bug(self)

    monkeypatch.setattr(cls, "__init__", broken_init)
    model = loaded(pipe, frame, KINDS)
    model.enable_fast_path(clean)
    assert model.serving.pre is None
    assert model.serving_path == "mixed"  # the estimator's replay is right and still used


def _edit(pipe: Any, part: str, step: str, **params: Any) -> Any:
    target = pipe.steps[0][1].named_transformers_[part].named_steps[step]
    for k, v in params.items():
        setattr(target, k, v)
    return pipe


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: _edit(p, "num", "impute", missing_values=-1.0),
        lambda p: _edit(p, "num", "impute", strategy=np.nanmean),
        lambda p: _edit(
            p, "num", "impute", statistics_=np.array([np.nan, 1.0]), keep_empty_features=True
        ),
        lambda p: _edit(p, "cat", "impute", missing_values="?"),
        lambda p: _edit(p, "cat", "encode", handle_unknown="error"),
        lambda p: _edit(p, "num", "scale", clip=True),
    ],
    ids=[
        "missing-values--1",
        "callable-strategy",
        "kept-feature-without-fill",
        "cat-missing-?",
        "unknown-error",
        "minmax-clip",
    ],
)
def test_parameters_the_replay_does_not_implement_are_refused(edit: Any) -> None:
    """Checked on the fitted parameters themselves, not only by comparing outputs on rows that
    may never show the difference (a sample without -1 never shows missing_values=-1)."""
    pipe, _ = fitted(SGDClassifier(loss="log_loss", random_state=0), "linear", scaler="minmax")
    assert FastPreprocessor.from_pipeline(pipe) is not None
    assert FastPreprocessor.from_pipeline(edit(pipe)) is None


def test_a_moved_private_calibration_class_does_not_break_import() -> None:
    """service.inference.model imported scikit-learn's private _SigmoidCalibration unguarded."""
    code = (
        "import numpy as np\n"
        "import sklearn.calibration as c\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "x = np.random.default_rng(0).normal(size=(90, 3)); y = (x[:, 0] > 0).astype(int)\n"
        "sig = c.CalibratedClassifierCV(LogisticRegression(), cv=3).fit(x, y)\n"
        "iso = c.CalibratedClassifierCV(LogisticRegression(), method='isotonic', cv=3).fit(x, y)\n"
        "del c._SigmoidCalibration  # as if a release renamed it\n"
        "import service.inference.model\n"
        "from service.inference.fastpath import FastEstimator\n"
        "print(FastEstimator.from_estimator(sig) is None, "
        "FastEstimator.from_estimator(iso) is not None)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]


def test_serving_path_names_what_runs() -> None:
    pipe, frame = fitted(
        CalibratedClassifierCV(SGDClassifier(loss="log_loss", random_state=0), cv=3), "linear"
    )
    model = loaded(pipe, frame, KINDS)
    before = model.serving_path
    assert before == "sklearn"  # before the check
    model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving_path == "numpy"
    hgb, frame = fitted(HistGradientBoostingClassifier(max_iter=5), "hgb")
    model = loaded(hgb, frame, KINDS)
    model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving_path == "compiled"  # numpy preprocessing, the booster compiled
    model = loaded(hgb, frame, KINDS)
    model.enable_fast_path(frame[KINDS.all].head(50), compiled=False)
    assert model.serving_path == "mixed"  # numpy preprocessing, the booster's own predict
    pca, frame = fitted(HistGradientBoostingClassifier(max_iter=5), "hgb", pca=2)
    model = loaded(pca, frame, KINDS)
    model.enable_fast_path(frame[KINDS.all].head(50))
    assert model.serving_path == "mixed"  # scikit-learn's PCA, the booster compiled
    model = loaded(pca, frame, KINDS)
    model.enable_fast_path(frame[KINDS.all].head(50), compiled=False)
    assert model.serving_path == "sklearn"


def test_the_model_endpoint_and_model_info_show_the_serving_path(client: Any) -> None:
    served = client.app.state.sw.manager.get("demo").model
    body = client.get("/v1/models/demo").json()
    assert body["serving_path"] == served.serving_path
    assert body["serving_path"] in {"numpy", "compiled", "sklearn", "mixed"}
    metrics = client.get("/metrics").text
    info = [m for m in metrics.splitlines() if m.startswith("servewatch_model_info{")]
    want = ('model="demo"', 'version="1"', f'path="{served.serving_path}"')
    assert [m for m in info if all(w in m for w in want) and m.endswith(" 1.0")], info
    assert body["serving_parts"] == {
        part: {"path": p.runs, "reason": "none", "detail": ""} for part, p in served.plan.items()
    }
    parts = [m for m in metrics.splitlines() if m.startswith("servewatch_model_serving_path{")]
    for part, p in served.plan.items():
        want = ('model="demo"', 'version="1"', f'part="{part}"', f'path="{p.runs}"')
        assert [m for m in parts if all(w in m for w in want) and m.endswith(" 1.0")], parts


def test_a_part_off_its_fast_path_is_named_with_the_reason(
    settings: Any, monkeypatch: pytest.MonkeyPatch, registry_copy: Path
) -> None:
    """The issue's silent fallback made visible: a replay that differs at load shows on the
    model endpoint, in the metric the shipped rule watches, and in `servewatch models show`."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from servewatch.cli import app as cli
    from service.main import create_app

    real = fastpath._Categorical.transform
    monkeypatch.setattr(fastpath._Categorical, "transform", lambda *a: real(*a) + 1.0)
    with TestClient(create_app(settings)) as client:
        body = client.get("/v1/models/demo").json()
        metrics = client.get("/metrics").text
    pre = body["serving_parts"]["preprocessing"]
    assert body["serving_path"] in {"mixed", "sklearn"}
    assert (pre["path"], pre["reason"]) == ("sklearn", "differs")
    assert "differs from the pipeline" in pre["detail"]
    want = 'part="preprocessing",path="sklearn",reason="differs"'
    assert [m for m in metrics.splitlines() if want in m and m.endswith(" 1.0")], metrics
    shown = CliRunner().invoke(cli, ["models", "show", "demo:1", "--registry", str(registry_copy)])
    assert shown.exit_code == 0, shown.output
    serving = json.loads(shown.stdout)["serving"]
    assert serving["parts"]["preprocessing"]["reason"] == "differs"
    assert serving["path"] == body["serving_path"]
    plain = CliRunner().invoke(
        cli, ["models", "show", "demo:1", "--no-load", "--registry", str(registry_copy)]
    )
    assert "serving" not in json.loads(plain.stdout)
    (registry_copy / "demo/1/model.joblib").write_bytes(b"tampered")  # fails its hash at load
    broken = CliRunner().invoke(cli, ["models", "show", "demo:1", "--registry", str(registry_copy)])
    assert broken.exit_code == 0, broken.output  # the manifest is still shown
    assert "refused" in json.loads(broken.stdout)["serving"]["error"]
