"""/v2 spoken by the ecosystem's own clients against a running `servewatch serve` (uvicorn):
Triton's tritonclient[http] and KServe's InferenceRESTClient, answers compared with /v1's.

One server holds every shape: binary with string (trained: categories, a timestamp, missing
values), integer and boolean labels (imported), three classes (imported), regression (trained,
with a category; and imported). Both clients come from the dev extra (installed with the pins).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from core.registry import Registry
from predlog.store import PredictionStore
from servewatch.cli import app as cli
from tests.conftest import fast_config, require_module
from tests.data import classification_frame, regression_frame
from tests.service.conftest import Server
from training.train import run_training

pytestmark = pytest.mark.slow

httpclient = require_module("tritonclient.http")
triton_utils = require_module("tritonclient.utils")
kserve = require_module("kserve")


def cancer(labels: str) -> pd.DataFrame:
    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame[["mean radius", "mean texture", "mean smoothness", "worst area"]].copy()
    frame["target"] = raw.target.astype(bool) if labels == "bool" else raw.target.astype(int)
    return frame


def iris() -> pd.DataFrame:
    raw = datasets.load_iris(as_frame=True)
    frame = raw.frame.drop(columns="target").rename(columns=lambda c: c.replace(" (cm)", ""))
    frame["target"] = raw.target.map(dict(enumerate(raw.target_names)))
    return frame


def diabetes() -> pd.DataFrame:
    return datasets.load_diabetes(as_frame=True, scaled=False).frame


@dataclass(frozen=True)
class Shape:
    name: str
    numeric_only: bool  # all features numeric: a single 2-D FP64 tensor works too
    expect: str  # the `predict` output's datatype


SHAPES = [
    Shape("bin-str-trained", False, "BYTES"),
    Shape("reg-trained", False, "FP64"),
    Shape("bin-int-imported", True, "INT64"),
    Shape("bin-bool-imported", True, "BOOL"),
    Shape("multi-str-imported", True, "BYTES"),
    Shape("reg-imported", True, "FP64"),
]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, trained_registry: Path
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("oip")
    shutil.copytree(trained_registry, root / "registry")
    registry = Registry(root / "registry")
    frames: dict[str, pd.DataFrame] = {}
    # demo (binary, string labels, categories, a timestamp, missing x2) is served as bin-str
    demo = classification_frame(60, seed=3).drop(columns="label")
    demo["when"] = demo["when"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    frames["bin-str-trained"] = demo
    reg = regression_frame(200)
    reg_csv = root / "reg.csv"
    reg.to_csv(reg_csv, index=False)
    run_training(
        fast_config(name="reg-trained", data=str(reg_csv), target="y", models=["linear"]),
        registry,
    )
    frames["reg-trained"] = reg.drop(columns="y").head(40)
    imported = {
        "bin-int-imported": (cancer("int"), make_pipeline(StandardScaler(), LogisticRegression())),
        "bin-bool-imported": (cancer("bool"), HistGradientBoostingClassifier(max_iter=30)),
        "multi-str-imported": (iris(), make_pipeline(StandardScaler(), LogisticRegression())),
        "reg-imported": (diabetes(), RandomForestRegressor(n_estimators=20, random_state=0)),
    }
    for name, (frame, model) in imported.items():
        x, y = frame.drop(columns="target"), frame["target"]
        path, data = root / f"{name}.joblib", root / f"{name}.csv"
        joblib.dump(model.fit(x, y), path)
        frame.to_csv(data, index=False)
        res = CliRunner().invoke(
            cli,
            ["models", "import", str(path), "--name", name, "--data", str(data),
             "--target", "target", "--registry", str(registry.root)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        frames[name] = x.sample(40, random_state=1)
    db = f"sqlite:///{root}/log.db"
    server = Server(
        {
            "SERVEWATCH_REGISTRY": str(registry.root),
            "SERVEWATCH_MODELS": ",".join(["demo", *[s.name for s in SHAPES[1:]]]),
            "SERVEWATCH_DATABASE_URL": db,
            "SERVEWATCH_SPOOL_DIR": str(root / "spool"),
            "SERVEWATCH_RELOAD_INTERVAL_S": "0",
            "SERVEWATCH_LOG_FLUSH_MS": "20",
        }
    )
    try:
        yield {"url": server.url, "frames": frames, "db": db}
    finally:
        server.stop()


def served(name: str) -> str:
    return "demo" if name == "bin-str-trained" else name


def v1(url: str, name: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = [{k: (None if v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
    res = httpx.post(f"{url}/v1/models/{name}/predict", json={"instances": rows}, timeout=30)
    assert res.status_code == 200, res.text
    preds: list[dict[str, Any]] = res.json()["predictions"]
    return preds


def triton_inputs(frame: pd.DataFrame, binary: bool) -> list[Any]:
    """One InferInput per column: FP64 for numbers, BYTES for text."""
    out = []
    for col in frame.columns:
        values = frame[col].to_numpy()
        if frame[col].dtype == object:
            values = np.array([str(v).encode() for v in values], dtype=np.object_)
        else:
            values = values.astype(np.float64)
        tensor = httpclient.InferInput(
            col, [len(frame)], triton_utils.np_to_triton_dtype(values.dtype)
        )
        tensor.set_data_from_numpy(values, binary_data=binary)
        out.append(tensor)
    return out


def texts(array: Any) -> list[Any]:
    """An output's values as Python values (BYTES arrive as str or bytes)."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]


def same_answers(
    result: Any, expected: list[dict[str, Any]], shape: Shape, classes: list[str] | None
) -> None:
    pred = result.as_numpy("predict")
    got = texts(pred)
    want = [p["prediction"] for p in expected]
    if shape.expect == "FP64":
        assert np.allclose(got, want, rtol=1e-9), shape.name
    else:
        assert got == want, shape.name
    if classes is not None:
        proba = result.as_numpy("predict_proba")
        want_p = [[p["probabilities"][c] for c in classes] for p in expected]
        assert np.allclose(proba, want_p, rtol=1e-9), shape.name


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_tritonclient_answers_as_v1(world: dict[str, Any], shape: Shape) -> None:
    url, name = world["url"], served(shape.name)
    frame = world["frames"][shape.name]
    expected = v1(url, name, frame)
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
        assert not client.is_model_ready(name, "7")
        meta = client.get_model_metadata(name)
        assert [i["name"] for i in meta["inputs"]] == list(frame.columns)
        outputs = {o["name"]: o for o in meta["outputs"]}
        assert outputs["predict"]["datatype"] == shape.expect
        classes = None
        if "predict_proba" in outputs:
            classes = json.loads(outputs["predict_proba"]["parameters"]["classes"])
        # binary tensors (tritonclient's default), and JSON tensors where JSON can carry them
        result = client.infer(name, triton_inputs(frame, binary=True))
        same_answers(result, expected, shape, classes)
        ids = texts(result.as_numpy("prediction_id"))
        assert len(set(ids)) == len(frame)
        complete = frame.dropna()
        result = client.infer(
            name,
            triton_inputs(complete, binary=False),
            model_version="1",
            outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)],
        )
        assert result.as_numpy("prediction_id") is None
        keep = [i for i, ok in enumerate(frame.notna().all(axis=1)) if ok]
        same_answers(result, [expected[i] for i in keep], shape, None)
        if shape.numeric_only:  # the whole frame as one [n, features] tensor
            matrix = frame.to_numpy(dtype=np.float64)
            tensor = httpclient.InferInput("input-0", list(matrix.shape), "FP64")
            tensor.set_data_from_numpy(matrix)
            same_answers(client.infer(name, [tensor]), expected, shape, classes)
    finally:
        client.close()
    # the answers were logged, and their ids take feedback
    store = PredictionStore(world["db"])
    for _ in range(200):
        logged = {r["id"] for r in store.read_window(name)}
        if set(ids) <= logged:
            break
        time.sleep(0.05)
    assert set(ids) <= logged
    fb = httpx.post(
        f"{url}/v1/models/{name}/feedback",
        json={"labels": [{"prediction_id": ids[0], "label": expected[0]["prediction"]}]},
    )
    assert fb.status_code == 200 and fb.json()["stored"] == 1


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_kserve_rest_client_answers_as_v1(world: dict[str, Any], shape: Shape) -> None:
    url, name = world["url"], served(shape.name)
    frame = world["frames"][shape.name].dropna()
    expected = v1(url, name, frame)
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> tuple[Any, bool, bool, bool]:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            inputs = []
            for col in frame.columns:
                if frame[col].dtype == object:
                    tensor = InferInput(col, [len(frame)], "BYTES", [str(v) for v in frame[col]])
                else:
                    values = frame[col].to_numpy(dtype=np.float64)
                    tensor = InferInput(col, [len(frame)], "FP64")
                    tensor.set_data_from_numpy(values, binary_data=False)
                inputs.append(tensor)
            request = InferRequest(model_name=name, infer_inputs=inputs, request_id="k-1")
            response = await client.infer(url, request, model_name=name)
            return (
                response,
                await client.is_server_live(url),
                await client.is_server_ready(url),
                await client.is_model_ready(url, name),
            )
        finally:
            await client.close()

    response, live, ready, model_ready = asyncio.run(run())
    assert live and ready and model_ready
    assert response.id == "k-1" and response.model_name == name
    by_name = {o.name: o for o in response.outputs}
    got = texts(by_name["predict"].as_numpy())
    want = [p["prediction"] for p in expected]
    assert np.allclose(got, want) if shape.expect == "FP64" else got == want
    if "predict_proba" in by_name:
        classes = json.loads(by_name["predict_proba"].parameters["classes"])
        want_p = [[p["probabilities"][c] for c in classes] for p in expected]
        assert np.allclose(by_name["predict_proba"].as_numpy(), want_p, rtol=1e-9)
    ids = texts(by_name["prediction_id"].as_numpy())
    assert len(set(ids)) == len(frame)


def test_clients_see_the_protocols_errors(world: dict[str, Any]) -> None:
    """Unhappy paths through tritonclient: status and a message naming the input and rule."""
    url = world["url"]
    frame = world["frames"]["bin-str-trained"].dropna().head(3)
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    exc_type = triton_utils.InferenceServerException

    def error(name: str, inputs: list[Any], version: str = "") -> tuple[str, str]:
        with pytest.raises(exc_type) as caught:
            client.infer(name, inputs, model_version=version)
        return str(caught.value.status()), str(caught.value.message())

    try:
        good = triton_inputs(frame, binary=True)
        status, msg = error("demo", good[1:])  # x1 left out
        assert status == "422" and "'x1' [required]" in msg
        wrong = [t for t in good if t.name() != "color"]
        colour = httpclient.InferInput("color", [3], "FP64")
        colour.set_data_from_numpy(np.array([1.0, 2.0, 3.0]))
        status, msg = error("demo", [*wrong, colour])
        assert status == "422" and "'color' [datatype]" in msg
        wide = httpclient.InferInput("x1", [3, 2], "FP64")
        wide.set_data_from_numpy(np.ones((3, 2)))
        status, msg = error("demo", [wide, *good[1:]])
        assert status == "422" and "'x1' [shape]" in msg
        short = httpclient.InferInput("x1", [2], "FP64")
        short.set_data_from_numpy(np.ones(2))
        status, msg = error("demo", [short, *good[1:]])
        assert status == "400" and "same number of rows" in msg
        status, msg = error("nope", good)
        assert status == "404" and "'nope'" in msg
        status, msg = error("demo", good, version="9")
        assert status == "404" and "version 9" in msg
    finally:
        client.close()
    # a non-numeric value in an FP64 tensor (no numpy client can build one: raw JSON)
    body = {
        "inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": ["abc"]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [1.0]},
            {"name": "color", "datatype": "BYTES", "shape": [1], "data": ["red"]},
            {"name": "group", "datatype": "BYTES", "shape": [1], "data": ["a"]},
            {"name": "when", "datatype": "BYTES", "shape": [1], "data": ["2024-01-01"]},
        ]
    }
    res = httpx.post(f"{url}/v2/models/demo/infer", json=body)
    assert res.status_code == 422 and res.json() == {
        "error": "1 problem(s): input 'x1' [type]: FP64 element 0 is 'abc', not a number"
    }
