"""Trust model: signed manifests, personal data kept out of the log."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.registry import Registry, sign
from predlog.store import PredictionStore
from service.config import Settings
from service.inference.model import LoadedModel, ModelLoadError
from service.main import create_app
from tests.conftest import fast_config
from tests.data import classification_frame
from tests.service.conftest import example
from training.train import run_training

KEY = "signing-key-0123456789abcdef"


@pytest.fixture
def signed_registry(tmp_path: Path, clf_csv: Path) -> Path:
    root = tmp_path / "signed"
    cfg = fast_config(
        name="demo",
        data=str(clf_csv),
        target="label",
        models=["linear"],
        features={"datetime": ["when"]},
    )
    run_training(cfg, Registry(root, signing_key=KEY))
    return root


def test_signed_version_loads_only_with_the_right_key(signed_registry: Path) -> None:
    manifest = Registry(signed_registry).raw_manifest("demo", 1)
    assert manifest["signature"] == sign(manifest, KEY)
    LoadedModel.load(Registry(signed_registry, signing_key=KEY), "demo", 1)
    with pytest.raises(ModelLoadError, match="signature does not match"):
        LoadedModel.load(Registry(signed_registry, signing_key="another-key-0123456789"), "demo", 1)


def test_a_manifest_edited_after_signing_is_refused(signed_registry: Path) -> None:
    path = signed_registry / "demo" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["model.joblib"] = "0" * 64  # e.g. to slip in another pickle
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="signature does not match"):
        LoadedModel.load(Registry(signed_registry, signing_key=KEY), "demo", 1)


def test_unsigned_versions_are_refused_when_a_key_is_set(
    registry_copy: Path, tmp_path: Path
) -> None:
    settings = Settings(
        registry=registry_copy,
        database_url=f"sqlite:///{tmp_path}/l.db",
        spool_dir=tmp_path / "spool",
        signing_key=KEY,
        reload_interval_s=0,
    )
    with TestClient(create_app(settings)) as c:
        res = c.get("/readyz")
        assert res.status_code == 503
        assert any("not signed" in p for p in res.json()["problems"])
        assert c.post("/v1/models/demo/predict", json={"instances": [example()]}).status_code == 404


@pytest.mark.parametrize("key", [None, "pii-key-0123456789abcdef"])
def test_personal_data_is_hashed_or_dropped_before_the_log(tmp_path: Path, key: str | None) -> None:
    frame = classification_frame(300)
    frame["email"] = [f"person{i}@example.com" for i in range(len(frame))]
    frame.to_csv(tmp_path / "pii.csv", index=False)
    reg = tmp_path / "reg"
    cfg = fast_config(
        name="demo",
        data=str(tmp_path / "pii.csv"),
        target="label",
        models=["linear"],
        features={"datetime": ["when"], "personal": ["email"]},
    )
    m = run_training(cfg, Registry(reg)).manifest
    assert m["personal_data"] == ["email"]
    assert "email" not in {f["name"] for f in m["features"]}
    import pandas as pd

    assert "email" not in pd.read_parquet(reg / "demo" / "1" / "reference.parquet").columns
    settings = Settings(
        registry=reg,
        database_url=f"sqlite:///{tmp_path}/l.db",
        spool_dir=tmp_path / "spool",
        personal_data_key=key,
        reload_interval_s=0,
    )
    with TestClient(create_app(settings)) as c:
        res = c.post(
            "/v1/models/demo/predict",
            json={"instances": [{**example(), "email": "alice@example.com"}]},
        )
        assert res.status_code == 200, res.text
    (row,) = PredictionStore(settings.database_url).read_window("demo")
    assert "alice" not in row["inputs"]
    logged = json.loads(row["inputs"])
    if key is None:
        assert "email" not in logged
    else:
        assert logged["email"].startswith("hmac:") and len(logged["email"]) == 37


def test_shadow_rows_are_redacted_with_production_personal_columns_too(tmp_path: Path) -> None:
    """Production declares `email` personal; the staging version (shadowing it) was trained with
    `email` merely dropped. Its log rows must not carry the address either."""
    frame = classification_frame(300)
    frame["email"] = [f"person{i}@example.com" for i in range(len(frame))]
    frame.to_csv(tmp_path / "pii.csv", index=False)
    reg = Registry(tmp_path / "reg")
    common = {"name": "demo", "data": str(tmp_path / "pii.csv"), "target": "label",
              "models": ["linear"]}  # fmt: skip
    run_training(fast_config(**common, features={"datetime": ["when"], "personal": ["email"]}), reg)
    staged = run_training(
        fast_config(**common, features={"datetime": ["when"], "drop": ["email"]}),
        reg,
        promote="never",
    )
    reg.set_alias("demo", "staging", staged.version or 0)
    settings = Settings(
        registry=reg.root,
        database_url=f"sqlite:///{tmp_path}/l.db",
        spool_dir=tmp_path / "spool",
        reload_interval_s=0,
        shadow=["demo"],
    )
    with TestClient(create_app(settings)) as c:
        res = c.post(
            "/v1/models/demo/predict",
            json={"instances": [{**example(), "email": "alice@example.com"}]},
        )
        assert res.status_code == 200, res.text
    rows = PredictionStore(settings.database_url).read_window("demo")
    assert sorted(r["shadow"] for r in rows) == [False, True]
    assert all("alice" not in r["inputs"] for r in rows)


def test_imported_versions_declare_personal_data(tmp_path: Path) -> None:
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from typer.testing import CliRunner

    from servewatch.cli import app as cli

    frame = classification_frame(300)[["x1", "x2", "label"]].dropna().reset_index(drop=True)
    frame["email"] = [f"person{i}@example.com" for i in range(len(frame))]
    frame.to_csv(tmp_path / "sample.csv", index=False)
    pipe = Pipeline([("cols", ColumnTransformer([("num", "passthrough", ["x1", "x2"])])),
                     ("model", LogisticRegression())])  # fmt: skip
    pipe.fit(frame[["x1", "x2"]], frame["label"])
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    reg = tmp_path / "reg"
    args = ["models", "import", str(tmp_path / "pipe.joblib"), "--name", "demo", "--data",
            str(tmp_path / "sample.csv"), "--target", "label", "--registry", str(reg)]  # fmt: skip
    res = CliRunner().invoke(cli, [*args, "--personal-data", "email"])
    assert res.exit_code == 0, res.output
    manifest = Registry(reg).manifest("demo", 1)
    assert [f.name for f in manifest.features] == ["x1", "x2"]
    assert manifest.personal_data == ["email"]
    settings = Settings(
        registry=reg,
        database_url=f"sqlite:///{tmp_path}/l.db",
        spool_dir=tmp_path / "spool",
        reload_interval_s=0,
        personal_data_key="pii-key-0123456789abcdef",
    )
    with TestClient(create_app(settings)) as c:
        res = c.post(
            "/v1/models/demo/predict",
            json={"instances": [{"x1": 0.1, "x2": 2.0, "email": "alice@example.com"}]},
        )
        assert res.status_code == 200, res.text
    (row,) = PredictionStore(settings.database_url).read_window("demo")
    assert json.loads(row["inputs"])["email"].startswith("hmac:")
    refused = CliRunner().invoke(cli, [*args, "--personal-data", "x1"])
    assert refused.exit_code != 0 and "personal-data column(s) ['x1'] are features" in (
        refused.output
    )
