"""One request's failure never fails another: a value a model cannot read is refused in
validation, and any other error of a micro-batch's model call is narrowed down (the batch split
and called again) to the request, and the rows, it belongs to.

Over real HTTP (uvicorn), with concurrent requests on many connections, against a forest imported
with `servewatch models import`, one trained here (regression), and an imported pipeline whose
first step refuses some values (a ValueError, as scikit-learn refuses a value)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from core.registry import Registry
from servewatch.cli import app as cli
from tests.conftest import fast_config
from tests.data import regression_frame
from tests.service.conftest import Server
from training.train import run_training

HUGE = 1e39  # a float64, beyond float32's largest (3.4e38)


def refuse_huge(x: Any) -> Any:
    """A pipeline step that raises on a value over 1e6 (pickled by reference: the server
    imports this module)."""
    arr = np.asarray(x, dtype=float)
    if np.abs(arr).max(initial=0.0) > 1e6:
        raise ValueError("a value over 1e6 is not supported")
    return arr


def gated(x: Any) -> Any:
    """A pipeline step that waits, on a big batch (an explanation's: over 1,000 rows), until the
    file named by $ISOLATION_GATE exists: the test holds an explanation mid-computation."""
    if len(x) >= 1000:
        gate = Path(os.environ["ISOLATION_GATE"])
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return np.asarray(x, dtype=float)


def cancer() -> pd.DataFrame:
    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame[["mean radius", "mean texture", "worst area"]].copy()
    frame.columns = ["a", "b", "c"]
    frame["target"] = raw.target.astype(int)
    return frame


def imported(root: Path, registry: Path, name: str, model: Any) -> None:
    frame = cancer()
    path, data = root / f"{name}.joblib", root / f"{name}.csv"
    joblib.dump(model.fit(frame.drop(columns="target"), frame["target"]), path)
    frame.to_csv(data, index=False)
    res = CliRunner().invoke(
        cli,
        ["models", "import", str(path), "--name", name, "--data", str(data),
         "--target", "target", "--registry", str(registry)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("isolation")
    registry = root / "registry"
    imported(root, registry, "forest", RandomForestClassifier(n_estimators=10, random_state=0))
    refuser = make_pipeline(FunctionTransformer(refuse_huge), LogisticRegression())
    imported(root, registry, "refuser", refuser)
    slow = make_pipeline(FunctionTransformer(gated), KNeighborsClassifier())
    imported(root, registry, "gated", slow)
    reg = regression_frame(200)
    reg.to_csv(root / "reg.csv", index=False)
    run_training(
        fast_config(name="tforest", data=str(root / "reg.csv"), target="y", models=["forest"]),
        Registry(registry),
    )
    srv = Server(
        {
            "SERVEWATCH_REGISTRY": str(registry),
            "SERVEWATCH_DATABASE_URL": f"sqlite:///{root}/log.db",
            "SERVEWATCH_SPOOL_DIR": str(root / "spool"),
            "SERVEWATCH_RELOAD_INTERVAL_S": "0",
            "SERVEWATCH_BATCH_MAX_WAIT_MS": "5",  # requests gather into shared micro-batches
            "ISOLATION_GATE": str(root / "gate"),
        }
    )
    srv.gate = root / "gate"  # type: ignore[attr-defined]
    yield srv
    shutil.rmtree(root / "spool", ignore_errors=True)
    srv.stop()


def concurrently(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body POSTed at once over 16 connections."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            return await asyncio.gather(*[client.post(url, json=b) for b in bodies])

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("model", "good"),
    [
        ("forest", {"a": 14.0, "b": 19.0, "c": 700.0}),
        ("tforest", {"a": 0.1, "b": 5.0, "kind": "p"}),
    ],
)
def test_a_value_beyond_float32_is_a_422_naming_it_and_the_rest_are_answered(
    server: Server, model: str, good: dict[str, Any]
) -> None:
    """60 requests, every fifth with 1e39 in a numeric feature: each of those a 422 naming the
    feature and the rule, every other one its prediction (before: the batches they shared
    failed with 500, some connections reset)."""
    bad = "a"
    bodies = [{"instances": [{**good, bad: HUGE} if i % 5 == 0 else good]} for i in range(60)]
    got = concurrently(f"{server.url}/v1/models/{model}/predict", bodies)
    assert Counter(r.status_code for r in got) == {200: 48, 422: 12}
    for i, r in enumerate(got):
        if i % 5 == 0:
            (detail,) = r.json()["error"]["details"]
            assert (detail["feature"], detail["rule"]) == (bad, "float32_range")
            assert "float32" in detail["message"]
        else:
            assert r.json()["predictions"][0]["prediction"] is not None


def test_any_other_model_error_fails_only_its_own_request_and_rows(server: Server) -> None:
    """A model call that raises is split and retried: 12 of 60 concurrent requests carry a value
    the pipeline refuses; they get a 422 naming the instance and the rule, the 48 others their
    predictions. In a request of several rows only the refused row is named."""
    good = {"a": 14.0, "b": 19.0, "c": 700.0}
    bodies = [
        {"instances": [good, {**good, "b": 5e6}] if i % 5 == 0 else [good, good]} for i in range(60)
    ]
    got = concurrently(f"{server.url}/v1/models/refuser/predict", bodies)
    assert Counter(r.status_code for r in got) == {200: 48, 422: 12}
    for i, r in enumerate(got):
        if i % 5 == 0:
            error = r.json()["error"]
            assert [(d["instance"], d["rule"]) for d in error["details"]] == [(1, "model_refused")]
            assert "a value over 1e6 is not supported" in error["message"]
        else:
            assert len(r.json()["predictions"]) == 2
    # the Open Inference Protocol says the same, in its own shape
    v2 = httpx.post(
        f"{server.url}/v2/models/refuser/infer",
        json={
            "inputs": [
                {
                    "name": n,
                    "datatype": "FP64",
                    "shape": [2],
                    "data": [good[n], 5e6 if n == "b" else good[n]],
                }
                for n in good
            ]
        },
    )
    assert v2.status_code == 422 and "model_refused" in v2.json()["error"]


def test_predictions_are_answered_while_a_long_explanation_runs(server: Server) -> None:
    """An explanation (sampling Shapley, 40 rows: one call of 40 x 8 x 4 rows) is held inside
    the model's own code; meanwhile predictions of that model and of another are answered (before:
    explanations ran on the one model thread every model's predictions need)."""
    good = {"a": 14.0, "b": 19.0, "c": 700.0}
    done = threading.Event()
    result: list[httpx.Response] = []

    def explain() -> None:
        body = {"instances": [good] * 40}
        result.append(httpx.post(f"{server.url}/v1/models/gated/explain", json=body, timeout=120))
        done.set()

    thread = threading.Thread(target=explain)
    thread.start()
    try:
        time.sleep(0.5)  # let the explanation reach its big call (not a timing assertion)
        for model in ("forest", "gated"):
            r = httpx.post(
                f"{server.url}/v1/models/{model}/predict", json={"instances": [good]}, timeout=30
            )
            assert r.status_code == 200, r.text
        assert not done.is_set()  # the explanation still waits at the gate
    finally:
        server.gate.touch()  # type: ignore[attr-defined]
        thread.join(120)
    assert result[0].status_code == 200, result[0].text
    explanation = result[0].json()["predictions"][0]["explanation"]
    assert explanation["method"] == "sampling_shapley"
