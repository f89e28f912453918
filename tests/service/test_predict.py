import gc
import time
import weakref
from typing import Any

import joblib
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from predlog.store import PredictionStore
from service.config import Settings
from service.main import create_app
from tests.service.conftest import example


def test_predict_answers_like_the_model_in_process(client: TestClient, settings: Settings) -> None:
    inst = example(settings.registry)
    res = client.post("/v1/models/demo/predict", json={"instances": [inst, {**inst, "x1": -2}]})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "demo" and body["version"] == 1
    preds = body["predictions"]
    assert len({p["prediction_id"] for p in preds}) == 2
    model = joblib.load(settings.registry / "demo" / "1" / "model.joblib")
    frame = pd.DataFrame([inst, {**inst, "x1": -2}])
    frame["when"] = pd.to_datetime(frame["when"])
    expected = model.predict_proba(frame)
    for p, row in zip(preds, expected, strict=True):
        assert p["probabilities"]["yes"] == pytest.approx(row[1], abs=1e-6)
        assert p["prediction"] == ("yes" if row[1] > 0.5 else "no")
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_every_answered_prediction_is_in_the_log(settings: Settings) -> None:
    inst = example(settings.registry)
    answered = []
    with TestClient(create_app(settings)) as c:
        for n in (1, 5, 32):
            res = c.post("/v1/models/demo/predict", json={"instances": [inst] * n})
            answered += [p["prediction_id"] for p in res.json()["predictions"]]
    store = PredictionStore(settings.database_url)
    rows = store.read_window("demo")
    assert sorted(r["id"] for r in rows) == sorted(answered)
    assert all(r["version"] == 1 and r["latency_ms"] > 0 for r in rows)
    assert '"color":"red"' in rows[0]["inputs"]


def test_unknown_model_is_404_naming_the_models(client: TestClient) -> None:
    for res in (
        client.post("/v1/models/nope/predict", json={"instances": [{}]}),
        client.get("/v1/models/nope"),
    ):
        assert res.status_code == 404
        assert "no model named 'nope'" in res.json()["error"]["message"]
        assert "models: demo" in res.json()["error"]["message"]


def test_model_metadata_routes(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed == [
        {"name": "demo", "version": 1, "task": "classification", "aliases": {"production": 1}}
    ]
    detail = client.get("/v1/models/demo").json()
    assert {f["name"] for f in detail["features"]} == {"x1", "x2", "color", "group", "when"}
    assert "test" in detail["metrics"]


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/models/{name}/predict" in spec["paths"]
    assert "/v1/models/{name}/feedback" in spec["paths"]
    assert client.get("/docs").status_code == 200
    body = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    example = body["content"]["application/json"]["examples"]["demo"]["value"]
    assert set(example["instances"][0]) == {"x1", "x2", "color", "group", "when"}
    assert "PredictRequest" in spec["components"]["schemas"]
    # the example is a valid request
    assert client.post("/v1/models/demo/predict", json=example).status_code == 200


def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_crash(client: TestClient) -> None:
    """The body never arrives (the client disconnects): counted as 499, no 500, no traceback."""
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/models/demo/predict",
            "raw_path": b"/v1/models/demo/predict",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "app": client.app,
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await client.app(scope, receive, send)  # type: ignore[arg-type]

    assert client.portal is not None
    client.portal.call(call)
    assert sent[0]["status"] == 499
    metrics = client.get("/metrics").text
    assert 'endpoint="predict",model="demo",status="499"' in metrics


def test_the_heap_is_frozen_once_models_load_and_a_swapped_out_version_is_freed(
    client: TestClient, settings: Settings
) -> None:
    """Long-lived objects are hidden from the garbage collector (no 100 ms full collections
    under load): at start, and the new version after a hot swap; the old version is freed."""
    from core.registry import Registry
    from tests.service.test_swap import AUTH, add_version

    assert gc.get_freeze_count() > 10_000
    old = weakref.ref(client.app.state.sw.manager.slots["demo"].model)  # type: ignore[attr-defined]
    v2 = add_version(settings.registry)
    Registry(settings.registry).set_alias("demo", "production", v2)
    assert client.post("/v1/models/demo/reload", headers=AUTH).status_code == 200
    deadline = time.monotonic() + 10
    while old() is not None and time.monotonic() < deadline:
        client.get("/healthz")  # lets the retiring task run
        time.sleep(0.05)
    assert old() is None
    new = client.app.state.sw.manager.slots["demo"].model  # type: ignore[attr-defined]
    assert new.version == v2
    tracked = gc.get_objects()  # every object the collector still walks (frozen ones are not)
    assert not any(o is new.pipeline for o in tracked)


def test_openapi_documents_the_predict_path_parameter(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/v1/models/{name}/predict"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in params] == [("name", "path", True)]


def test_fastapi_opentelemetry_is_off_by_default_and_can_be_turned_on(settings: Settings) -> None:
    assert not settings.opentelemetry
    app = create_app(settings)
    assert app._telemetry["tracing"] is False and app._telemetry["metrics"] is False  # type: ignore[attr-defined]
    on = create_app(settings.model_copy(update={"opentelemetry": True}))
    assert on._telemetry["tracing"] is True  # type: ignore[attr-defined]
    with TestClient(on) as c:  # no OTel SDK configured here: it must still answer
        res = c.post("/v1/models/demo/predict", json={"instances": [example()]})
        assert res.status_code == 200, res.text
