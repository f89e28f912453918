"""Every model shape through the whole loop, over real HTTP.

{binary with string, integer and boolean labels, three classes, regression} x {trained here,
imported from a pipeline fitted elsewhere}: train or import -> serve (uvicorn) -> predict ->
feedback (good and bad labels) -> monitoring (a control that must stay quiet, then a shift and a
worsening that must alert) -> retraining gate. Data: scikit-learn's bundled data sets.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from typer.testing import CliRunner

from core import metrics as metric_contract
from core.registry import Registry
from monitoring.alerts import AlertRules
from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from predlog.store import PredictionStore
from servewatch.cli import app as cli
from servewatch.retrain import retrain
from tests.service.conftest import Server
from training.config import TrainConfig
from training.train import run_training

pytestmark = pytest.mark.slow

FAST = {"search": {"method": "random", "trials": 2, "budget_seconds": 20},
        "split": {"cv_folds": 3}, "reference_rows": 400, "calibration": "none"}  # fmt: skip
RULES = AlertRules(min_rows=80, min_labelled_rows=50, max_drop=0.15, drift_share=0.5)


@dataclass(frozen=True)
class Case:
    name: str
    frame: Callable[[], pd.DataFrame]  # features + "target", native label type
    label_type: str  # what answers and stored labels must be: str, int, bool or float
    origin: str  # trained | imported
    families: tuple[str, ...] = ("linear",)
    pipeline: Callable[[], Any] | None = None  # for imported cases


def cancer(labels: str) -> pd.DataFrame:
    """Breast cancer (569 rows), 6 of its features (with their spaces), labels typed as asked."""
    raw = datasets.load_breast_cancer(as_frame=True)
    cols = ["mean radius", "mean texture", "mean smoothness", "worst area", "worst concavity"]
    frame = raw.frame[cols].copy()
    y = raw.target
    frame["target"] = {
        "str": y.map({0: "malignant", 1: "benign"}),
        "int": y.astype(int),
        "bool": y.astype(bool),
    }[labels]
    return frame


def iris() -> pd.DataFrame:
    raw = datasets.load_iris(as_frame=True)
    frame = raw.frame.drop(columns="target").rename(columns=lambda c: c.replace(" (cm)", ""))
    frame["target"] = raw.target.map(dict(enumerate(raw.target_names)))
    return frame


def wine() -> pd.DataFrame:
    raw = datasets.load_wine(as_frame=True)
    frame = raw.frame[["alcohol", "malic_acid", "flavanoids", "color_intensity", "proline"]].copy()
    frame["target"] = raw.target.astype(int)
    return frame


def diabetes() -> pd.DataFrame:
    raw = datasets.load_diabetes(as_frame=True, scaled=False)
    return raw.frame.rename(columns={"target": "target"})


def scaled(model: Any) -> Callable[[], Any]:
    return lambda: make_pipeline(StandardScaler(), model)


CASES = [
    Case("bin-str-trained", lambda: cancer("str"), "str", "trained", ("linear", "tree")),
    Case("bin-int-trained", lambda: cancer("int"), "int", "trained", ("forest",)),
    Case("bin-bool-trained", lambda: cancer("bool"), "bool", "trained", ("hgb",)),
    Case("multi-trained", iris, "str", "trained", ("linear",)),
    Case("reg-trained", diabetes, "float", "trained", ("linear", "hgb")),
    # the lightgbm and xgboost families (their extras): binary with every label type,
    # multi-class, regression, compiled at serving
    Case("bin-str-lightgbm", lambda: cancer("str"), "str", "trained", ("lightgbm",)),
    Case("bin-int-xgboost", lambda: cancer("int"), "int", "trained", ("xgboost",)),
    Case("bin-bool-lightgbm", lambda: cancer("bool"), "bool", "trained", ("lightgbm",)),
    Case("bin-str-xgboost", lambda: cancer("str"), "str", "trained", ("xgboost",)),
    Case("multi-lightgbm", iris, "str", "trained", ("lightgbm",)),
    Case("multi-xgboost", wine, "int", "trained", ("xgboost",)),
    Case("reg-lightgbm", diabetes, "float", "trained", ("lightgbm",)),
    Case("reg-xgboost", diabetes, "float", "trained", ("xgboost",)),
    Case("bin-str-imported", lambda: cancer("str"), "str", "imported",
         pipeline=scaled(LogisticRegression(max_iter=500))),
    Case("bin-int-imported", lambda: cancer("int"), "int", "imported",
         pipeline=lambda: HistGradientBoostingClassifier(max_iter=50)),
    Case("bin-bool-imported", lambda: cancer("bool"), "bool", "imported",
         pipeline=scaled(CalibratedClassifierCV(SVC(random_state=0), ensemble=False))),
    Case("multi-imported", wine, "int", "imported",
         pipeline=lambda: Pipeline([("cols", ColumnTransformer(
             [("num", StandardScaler(), ["alcohol", "malic_acid", "flavanoids",
                                         "color_intensity", "proline"])])),
             ("model", LogisticRegression(max_iter=1000))])),
    Case("reg-imported", diabetes, "float", "imported",
         pipeline=lambda: RandomForestRegressor(n_estimators=40, random_state=0)),
    # the deep family (the deep extra) through the whole loop, retraining included; its
    # binary, regression and imported shapes: tests/training/test_deep.py
    Case("multi-deep", iris, "str", "trained", ("deep",)),
]  # fmt: skip
if importlib.util.find_spec("torch") is None:  # the deep extra is not installed here
    CASES = [c for c in CASES if "deep" not in c.name]
for _extra in ("lightgbm", "xgboost"):  # their extras not installed here
    if importlib.util.find_spec(_extra) is None:
        CASES = [c for c in CASES if _extra not in c.families]
PY_TYPE = {"str": str, "int": int, "bool": bool, "float": float}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every case trained or imported into one registry, served by one uvicorn process."""
    root = tmp_path_factory.mktemp("matrix")
    registry = Registry(root / "registry")
    for case in CASES:
        frame = case.frame()
        data = root / f"{case.name}.csv"
        frame.to_csv(data, index=False)
        if case.origin == "trained":
            config = TrainConfig.model_validate(
                {**FAST, "name": case.name, "data": str(data), "target": "target",
                 "models": list(case.families)}
            )  # fmt: skip
            run_training(config, registry)
        else:
            assert case.pipeline is not None
            x, y = frame.drop(columns="target"), frame["target"]
            pipe = case.pipeline().fit(x, y)
            path = root / f"{case.name}.joblib"
            joblib.dump(pipe, path)
            res = CliRunner().invoke(
                cli,
                ["models", "import", str(path), "--name", case.name, "--data", str(data),
                 "--target", "target", "--registry", str(registry.root)],
            )  # fmt: skip
            assert res.exit_code == 0, res.output
    db = f"sqlite:///{root}/log.db"
    server = Server(
        {
            "SERVEWATCH_REGISTRY": str(registry.root),
            "SERVEWATCH_DATABASE_URL": db,
            "SERVEWATCH_SPOOL_DIR": str(root / "spool"),
            "SERVEWATCH_RELOAD_INTERVAL_S": "0",
            "SERVEWATCH_LOG_FLUSH_MS": "20",
        }
    )
    try:
        yield {"root": root, "registry": registry, "db": db, "url": server.url}
    finally:
        server.stop()


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    x = frame.drop(columns="target")
    return [{k: (None if v != v else v) for k, v in row.items()} for row in x.to_dict("records")]


def predict(url: str, name: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rows = records(frame)
    for i in range(0, len(rows), 100):
        res = httpx.post(f"{url}/v1/models/{name}/predict", json={"instances": rows[i : i + 100]})
        assert res.status_code == 200, res.text
        out += res.json()["predictions"]
    return out


def send_labels(url: str, name: str, ids: list[str], labels: list[Any]) -> None:
    body = {
        "labels": [{"prediction_id": i, "label": lab} for i, lab in zip(ids, labels, strict=True)]
    }
    res = httpx.post(f"{url}/v1/models/{name}/feedback", json=body)
    assert res.status_code == 200, res.text
    assert res.json()["stored"] == len(ids)


def wait_logged(store: PredictionStore, model: str, ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(store.existing_ids(model, ids)) == len(ids):
            return
        time.sleep(0.1)
    raise AssertionError("answered predictions did not reach the log in 30 s")


def native(values: pd.Series) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in values]


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Every feature moved far out of its training range."""
    out = frame.copy()
    for col in out.columns.drop("target"):
        out[col] = out[col] * 3 + 10 * (out[col].std() or 1.0)
    return out


def worse_labels(case: Case, frame: pd.DataFrame, classes: list[Any]) -> list[Any]:
    """Labels the model gets wrong: the next class round the list, or the value far off."""
    if case.label_type == "float":
        return [float(v) + 4 * float(frame["target"].std()) for v in frame["target"]]
    nxt = {str(c): classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    return [nxt[str(v)] for v in native(frame["target"])]


def bad_labels(case: Case) -> list[Any]:
    """Labels that must be refused for this shape of model."""
    if case.label_type == "float":
        return ["abc", True, "inf"]
    out: list[Any] = ["maybe", 2.5]
    if case.label_type == "str":
        out += [True, 1.0]
    if case.label_type == "int":
        out += [True, 7]
    if case.label_type == "bool":
        out += [2, "yes"]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_whole_loop(world: dict[str, Any], case: Case, tmp_path: Path) -> None:
    url, registry = world["url"], world["registry"]
    manifest = registry.manifest(case.name, registry.resolve(case.name))
    regression = case.label_type == "float"
    assert manifest.task == ("regression" if regression else "classification")
    assert manifest.label_type == {"str": "string", "int": "integer", "bool": "boolean",
                                   "float": "float"}[case.label_type]  # fmt: skip
    frame = case.frame().sample(frac=1.0, random_state=1).reset_index(drop=True)
    frame = pd.concat([frame] * math.ceil(240 / len(frame)), ignore_index=True).head(240)
    store = PredictionStore(world["db"])
    if {"lightgbm", "xgboost"} & set(case.families):  # served compiled, explained by TreeSHAP
        detail = httpx.get(f"{url}/v1/models/{case.name}").json()
        assert detail["serving_path"] == "compiled", detail
        raw = registry.raw_manifest(case.name, registry.resolve(case.name))
        assert raw["model"]["family"] in case.families
        assert raw["explanations"]["shap"]["method"] == "tree_shap", raw["explanations"]["shap"]

    # predictions come back in the model's own label type
    control = predict(url, case.name, frame)
    assert {type(p["prediction"]) for p in control} == {PY_TYPE[case.label_type]}
    if not regression:
        assert {str(p["prediction"]) for p in control} <= {str(c) for c in manifest.classes or []}
        assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-3 for p in control)

    # bad labels: one 422 naming each item and its rule, nothing stored
    ids = [p["prediction_id"] for p in control]
    wrong = bad_labels(case)
    res = httpx.post(
        f"{url}/v1/models/{case.name}/feedback",
        json={"labels": [{"prediction_id": ids[0], "label": lab} for lab in wrong]},
    )
    assert res.status_code == 422, res.text
    details = res.json()["error"]["details"]
    assert [d["field"] for d in details] == [f"labels.{i}.label" for i in range(len(wrong))]
    assert {d["rule"] for d in details} <= {"not_a_class", "type", "finite"}

    # good labels (JSON numbers for an integer or float model, the classes as they are otherwise)
    send_labels(url, case.name, ids, native(frame["target"]))
    wait_logged(store, case.name, ids)
    msettings = MonitorSettings(
        registry=registry.root, database_url=world["db"], monitor_reports_dir=tmp_path / "reports"
    )

    def monitor() -> dict[str, Any]:
        return run_monitoring(
            settings=msettings, store=store, model=case.name, notifiers=[], rules=RULES
        )

    quiet = monitor()
    # the report's performance section: Evidently scored the same labelled rows the same way
    perf = Path(quiet["report_dir"]) / "evidently-performance.json"
    scored = {m["config"]["type"].rsplit(":", 1)[-1]: m["value"]
              for m in json.loads(perf.read_text())["metrics"]}  # fmt: skip
    ours = quiet["performance"]["realised"]
    if regression:
        assert scored["MAE"]["mean"] == pytest.approx(ours["mae"])
        assert scored["RMSE"] == pytest.approx(ours["rmse"])
    else:
        assert scored["Accuracy"] == pytest.approx(ours["accuracy"])
        assert scored["Precision"] == pytest.approx(ours["precision"])
    fired = {a["rule"] for a in quiet["alerts"]}
    assert not fired & {"dataset_drift", "realised_performance"}, quiet["alerts"]
    assert quiet["performance"]["realised_rows"] == len(frame)
    assert quiet["performance"]["unusable_labels"] == 0
    if regression:
        assert quiet["performance"]["estimated"] is None
        assert "regress" in quiet["performance"]["estimate_note"]
    else:
        assert quiet["performance"]["estimated"]["accuracy"] > 0.5

    # the world moves: inputs shift and the model's answers go wrong
    moved = shifted(frame)
    answered = predict(url, case.name, moved)
    ids = [p["prediction_id"] for p in answered]
    send_labels(url, case.name, ids, worse_labels(case, frame, list(manifest.classes or [])))
    wait_logged(store, case.name, ids)
    loud = monitor()
    fired = {a["rule"] for a in loud["alerts"]}
    assert {"dataset_drift", "realised_performance"} <= fired, loud["alerts"]
    metric = metric_contract.get(loud["metric"])
    realised = loud["performance"]["realised"][metric.name]
    assert metric.worse_by(quiet["performance"]["realised"][metric.name], realised) > 0

    # the retraining gate judges the challenger in the metric's own direction
    overrides = {**FAST, "models": ["deep" if "deep" in case.families else "linear"]}
    result = retrain(
        registry=registry,
        store=store,
        model=case.name,
        dry_run=True,
        min_rows=50,
        overrides=overrides,
    )
    gate = result.manifest["gate"]
    assert gate["metric"] == metric.name and set(gate["checks"]) == {
        "recent_window",
        "original_test",
    }
    for check in gate["checks"].values():
        assert check["worse_by"] == pytest.approx(
            metric.worse_by(check["champion"], check["challenger"])
        )
        assert check["passed"] == (check["worse_by"] <= gate["margin"])
    recent = gate["checks"]["recent_window"]
    assert np.isfinite(recent["champion"]) and recent["rows"] > 0
