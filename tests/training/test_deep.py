"""The deep family: a PyTorch MLP (embeddings, batch norm, dropout) searched, exported, served and
explained like every other family; skipped with a message where torch is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from core.registry import MODEL_FILE, Registry
from service.inference.model import LoadedModel
from tests.conftest import require_module
from training.config import TrainConfig
from training.demo import TARGET, load_flights
from training.train import run_training

require_module("torch")
require_module("skorch")

from core.deep import DeepClassifier, DeepRegressor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# capped by trials, not by a clock: the same seed trains the same model at any machine load
FAST = {"search": {"method": "random", "trials": 2},
        "split": {"cv_folds": 2}, "reference_rows": 100, "models": ["deep"]}  # fmt: skip


def _cancer() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    x, y = datasets.load_breast_cancer(return_X_y=True)
    return (x - x.mean(axis=0)) / x.std(axis=0), y


def test_same_seed_same_model_other_seed_other_model_and_it_learns() -> None:
    x, y = _cancer()
    a = DeepClassifier(max_epochs=15, random_state=3).fit(x, y)
    b = DeepClassifier(max_epochs=15, random_state=3).fit(x, y)
    c = DeepClassifier(max_epochs=15, random_state=4).fit(x, y)
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert not np.array_equal(a.predict_proba(x), c.predict_proba(x))
    assert a.score(x, y) > 0.9
    assert a.predict_proba(x[:1]).shape == (1, 2)  # one row: batch norm in eval mode


def test_the_network_has_dropout_batch_norm_and_an_embedding_per_category() -> None:
    from torch import nn

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 80, size=(600, 1)).astype(float)  # 80 levels: one-hot's cap is 30
    y = (codes[:, 0] % 3 == 0).astype(int)  # only an embedding per level can learn this
    x = np.column_stack([codes, rng.normal(size=(600, 2))])
    model = DeepClassifier(n_categorical=1, dropout=0.1, max_epochs=80, random_state=0).fit(x, y)
    layers = list(model.module_.modules())
    (emb,) = [m for m in layers if isinstance(m, nn.Embedding)]
    assert emb.num_embeddings == 81  # 80 levels + "unseen"
    assert any(isinstance(m, nn.BatchNorm1d) for m in layers)
    assert [m.p for m in layers if isinstance(m, nn.Dropout)] == [0.1, 0.1]
    assert model.score(x, y) > 0.9
    # unseen (-1) and codes the training rows never held are read as "unseen", never an error
    odd = np.array([[-1.0, 0.0, 0.0], [500.0, 0.0, 0.0]])
    assert np.allclose(model.predict_proba(odd)[0], model.predict_proba(odd)[1])


def test_a_regressor_learns_diabetes_on_the_target_scale() -> None:
    x, y = datasets.load_diabetes(return_X_y=True)
    model = DeepRegressor(max_epochs=60, random_state=0).fit(x / x.std(axis=0), y)
    pred = model.predict(x / x.std(axis=0))
    assert 50 < pred.mean() < 250  # the standardised target is scaled back
    assert model.score(x / x.std(axis=0), y) > 0.3


def _flights(tmp_path: Path) -> Path:
    frame = load_flights([1]).sample(1200, random_state=0)
    cols = ["carrier", "origin", "dest", "distance", "sched_dep_time", "temp", "humid", TARGET]
    path = tmp_path / "flights.csv"
    frame[cols].to_csv(path, index=False)
    return path


def test_trained_on_flights_it_embeds_categories_and_is_served_and_explained(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry")
    said: list[str] = []
    cfg = TrainConfig.model_validate(
        {**FAST, "name": "late", "data": str(_flights(tmp_path)), "target": TARGET, "seed": 7}
    )
    result = run_training(cfg, registry, progress=said.append)
    m = result.manifest
    assert m["model"]["family"] == "deep"
    assert {"hidden_units", "depth", "dropout", "weight_decay", "learning_rate"} <= set(
        m["model"]["params"]
    )
    assert m["explanations"]["shap"]["method"] == "sampling_shapley"
    model = LoadedModel.load(registry, "late", 1)
    deep = model.pipeline.named_steps["model"]
    deep = getattr(deep, "calibrated_classifiers_", [None])[0] or deep
    net = getattr(deep, "estimator", deep)
    assert net.n_categorical == 3  # carrier, origin, dest: their codes come first
    out = model.predict_columns(
        {"carrier": ["UA", "ZZ"], "origin": ["EWR", "JFK"], "dest": ["ORD", "NOPE"],
         "distance": [719.0, 100.0], "sched_dep_time": [1730.0, 600.0], "temp": [40.0, None],
         "humid": [70.0, 50.0]}
    )  # fmt: skip
    assert out.probabilities is not None
    assert all(abs(sum(p.values()) - 1) < 1e-6 for p in out.probabilities)
    # the same seed trains the same model
    again = run_training(cfg, Registry(tmp_path / "again"))
    assert again.manifest["objective"]["test_score"] == m["objective"]["test_score"]


@pytest.mark.parametrize(
    ("loader", "task"), [(datasets.load_iris, "classification"), (datasets.load_diabetes, None)]
)
def test_multi_class_and_regression_train_and_load(tmp_path: Path, loader, task) -> None:  # type: ignore[no-untyped-def]
    raw = loader(as_frame=True)
    frame = raw.frame
    if task:
        frame["target"] = raw.target.map(dict(enumerate(raw.target_names)))
    frame.to_csv(tmp_path / "d.csv", index=False)
    registry = Registry(tmp_path / "registry")
    cfg = TrainConfig.model_validate(
        {**FAST, "name": "d", "data": str(tmp_path / "d.csv"), "target": "target"}
    )
    m = run_training(cfg, registry).manifest
    assert m["model"]["family"] == "deep"
    if task:
        assert m["objective"]["test_score"] > 0.8  # accuracy
    else:  # RMSE well under the mean's
        assert m["objective"]["test_score"] < 0.9 * m["metrics"]["baseline"]["rmse"]
    rows = frame.drop(columns="target").head(3)
    out = LoadedModel.load(registry, "d", 1).predict_columns(rows.to_dict("list"))
    assert len(out.predictions) == 3


def test_without_torch_the_family_is_skipped_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.deep

    monkeypatch.setattr(core.deep, "missing_packages", lambda: ["torch", "skorch"])
    frame = datasets.load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, -1]]
    frame.to_csv(tmp_path / "c.csv", index=False)
    said: list[str] = []
    cfg = TrainConfig.model_validate(
        {**FAST, "models": ["linear", "deep"], "data": str(tmp_path / "c.csv"), "target": "target"}
    )
    m = run_training(cfg, Registry(tmp_path / "r"), progress=said.append).manifest
    assert m["model"]["family"] == "linear" and m["model"]["skipped_families"] == ["deep"]
    assert any("deep skipped" in s and "torch==2.13.0" in s for s in said), said


def test_the_service_starts_without_torch_and_a_deep_model_names_the_extra(tmp_path: Path) -> None:
    x, y = _cancer()
    import joblib

    path = tmp_path / MODEL_FILE
    joblib.dump(DeepClassifier(max_epochs=2).fit(x, y), path)
    script = textwrap.dedent(
        f"""
        import sys
        import servewatch.cli, service.main, service.inference.model  # the service's start-up
        assert "torch" not in sys.modules, "torch imported at start-up"
        sys.modules["torch"] = None  # as if not installed
        from core.ecosystem import MissingModelPackage, load_model
        try:
            load_model({str(path)!r})
        except MissingModelPackage as exc:
            print(exc)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "'torch'" in res.stdout and "servewatch[deep]" in res.stdout, res.stdout


def test_a_deep_pipeline_fitted_elsewhere_is_imported_and_answers(tmp_path: Path) -> None:
    import joblib
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from typer.testing import CliRunner

    from servewatch.cli import app

    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame.iloc[:, [0, 1, 2, 3, -1]].copy()
    frame["target"] = frame["target"].astype(bool)
    x, y = frame.drop(columns="target"), frame["target"]
    joblib.dump(make_pipeline(StandardScaler(), DeepClassifier(max_epochs=10)).fit(x, y),
                tmp_path / "p.joblib")  # fmt: skip
    frame.to_csv(tmp_path / "d.csv", index=False)
    res = CliRunner().invoke(app, ["models", "import", str(tmp_path / "p.joblib"), "--name",
                                   "imp", "--data", str(tmp_path / "d.csv"), "--target", "target",
                                   "--registry", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = LoadedModel.load(Registry(tmp_path / "r"), "imp", 1).predict_columns(
        x.head(2).to_dict("list")
    )
    assert set(map(bool, out.predictions)) <= {True, False} and pd.notna(out.predictions).all()
