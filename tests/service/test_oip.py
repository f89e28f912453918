"""The Open Inference Protocol (/v2) in process: answers equal /v1's, logged and counted alike;
every unhappy path a clear 400/422 naming the input and the rule; shadow and canary as /v1."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from predlog.store import PredictionStore
from service.main import create_app
from tests.service.conftest import example
from tests.service.test_staging import settings_for, with_staging  # noqa: F401

KINDS = {"x1": "FP64", "x2": "FP64", "color": "BYTES", "group": "BYTES", "when": "BYTES"}


def tensors(rows: list[dict[str, Any]], **datatypes: str) -> dict[str, Any]:
    """One input per feature, shape [n], as MLServer's pandas codec sends a frame."""
    return {
        "inputs": [
            {
                "name": k,
                "datatype": datatypes.get(k, dt),
                "shape": [len(rows)],
                "data": [r[k] for r in rows],
            }
            for k, dt in KINDS.items()
        ]
    }


def rows(n: int) -> list[dict[str, Any]]:
    colours = ["red", "green", "blue"]
    return [
        {**example(), "x1": -2 + 4 * i / n, "color": colours[i % 3], "x2": None if i == 1 else i}
        for i in range(n)
    ]


def output(body: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [o for o in body["outputs"] if o["name"] == name]
    return found


def test_infer_answers_as_v1_and_every_answer_is_logged(client: TestClient) -> None:
    batch = rows(7)
    v1 = client.post("/v1/models/demo/predict", json={"instances": batch}).json()
    res = client.post("/v2/models/demo/infer", json={"id": "req-1", **tensors(batch)})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("demo", "1", "req-1")
    pred = output(body, "predict")
    assert pred == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [7],
        "data": [p["prediction"] for p in v1["predictions"]],
    }
    proba = output(body, "predict_proba")
    classes = orjson.loads(proba["parameters"]["classes"])
    assert sorted(classes) == ["no", "yes"] and proba["shape"] == [7, 2]
    assert proba["data"] == [p["probabilities"][c] for p in v1["predictions"] for c in classes]
    ids = output(body, "prediction_id")["data"]
    assert len(set(ids)) == 7 and not set(ids) & {p["prediction_id"] for p in v1["predictions"]}
    # the ids join feedback like /v1's
    fb = client.post(
        "/v1/models/demo/feedback", json={"labels": [{"prediction_id": ids[0], "label": "yes"}]}
    )
    assert fb.json()["stored"] == 1
    store = PredictionStore(client.app.state.sw.settings.database_url)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = {r["id"]: r for r in store.read_window("demo")}
        if set(ids) <= logged.keys():
            break
        time.sleep(0.05)
    assert [orjson.loads(logged[i]["prediction"]) for i in ids] == pred["data"]
    inputs = [orjson.loads(logged[i]["inputs"]) for i in ids]
    assert inputs[1]["x2"] is None and inputs[2]["color"] == "blue"


def test_shapes_nested_data_and_requested_outputs(client: TestClient) -> None:
    batch = rows(3)
    flat = client.post("/v2/models/demo/infer", json=tensors(batch)).json()
    column = tensors(batch)
    for t in column["inputs"]:  # [n, 1] with nested rows, as a column vector
        t["shape"], t["data"] = [3, 1], [[v] for v in t["data"]]
    column["outputs"] = [{"name": "predict"}]
    nested = client.post("/v2/models/demo/infer", json=column).json()
    assert [o["name"] for o in nested["outputs"]] == ["predict"]
    assert nested["outputs"][0]["data"] == output(flat, "predict")["data"]
    assert "id" not in flat


def test_versioned_routes_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2/models/demo").json()
    assert meta["name"] == "demo" and meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == KINDS
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba", "prediction_id"]
    assert client.get("/v2/models/demo/versions/1").json() == meta
    assert client.get("/v2/models/demo/ready").json() == {"name": "demo", "ready": True}
    assert client.get("/v2/models/demo/versions/1/ready").status_code == 200
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "servewatch"
    ok = client.post("/v2/models/demo/versions/1/infer", json=tensors(rows(1)))
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
    for path in (
        "/v2/models/demo/versions/2",
        "/v2/models/demo/versions/x/ready",
        "/v2/models/nope",
        "/v2/models/nope/ready",
    ):
        res = client.get(path)
        assert res.status_code == 404 and set(res.json()) == {"error"}, path
    for path in ("/v2/models/nope/infer", "/v2/models/demo/versions/2/infer"):
        res = client.post(path, json=tensors(rows(1)))
        assert res.status_code == 404, path
        assert "not served" in res.json()["error"] or "no model named" in res.json()["error"]


def _with(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    for t in body["inputs"]:
        if t["name"] == name:
            t.update(changes)
    return body


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    body["inputs"] = [t for t in body["inputs"] if t["name"] != name]
    return body


BAD: list[tuple[str, Any, int, list[str]]] = [
    ("missing input", lambda: _without(tensors(rows(2)), "color"), 422, ["'color'", "[required]"]),
    (
        "unknown input",
        lambda: {"inputs": [*tensors(rows(1))["inputs"], {**tensors(rows(1))["inputs"][0],
                 "name": "colour"}]},
        422, ["'colour'", "[unknown]"],
    ),
    (
        "wrong datatype for the feature",
        lambda: _with(tensors(rows(2)), "x1", datatype="BYTES", data=["1", "2"]),
        422, ["'x1'", "[datatype]", "BYTES"],
    ),
    (
        "non-numeric in an FP64 tensor",
        lambda: _with(tensors(rows(2)), "x1", data=[0.5, "x"]),
        422, ["'x1'", "[type]", "element 1"],
    ),
    (
        "a bool in an FP64 tensor",
        lambda: _with(tensors(rows(2)), "x1", data=[0.5, True]),
        422, ["'x1'", "[type]"],
    ),
    (
        "null where the feature is not nullable",
        lambda: _with(tensors(rows(2)), "color", data=["red", None]),
        422, ["'color'", "[not_null]", "row 1"],
    ),
    (
        "a bad timestamp",
        lambda: _with(tensors(rows(1)), "when", data=["yesterday"]),
        422, ["'when'", "[type]", "ISO 8601"],
    ),
    (
        "a feature tensor of several columns",
        lambda: _with(tensors(rows(2)), "x1", shape=[2, 2], data=[[0.1, 0.2], [0.3, 0.4]]),
        422, ["'x1'", "[shape]"],
    ),
    (
        "a 2-D tensor while some features are not numeric",
        lambda: {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 5],
                             "data": [1, 2, 3, 4, 5]}]},
        422, ["'x'", "[datatype]", "'color' is categorical"],
    ),
    ("zero rows", lambda: tensors([]), 422, ["'instances'", "[min_items]"]),
    (
        "mismatched lengths",
        lambda: _with(tensors(rows(2)), "x1", shape=[3], data=[1, 2, 3]),
        400, ["same number of rows", "'x1' has 3", "'x2' has 2"],
    ),
    (
        "shape and data disagree",
        lambda: _with(tensors(rows(2)), "x1", data=[1.0]),
        400, ["'x1'", "shape [2] holds 2", "has 1"],
    ),
    ("unknown datatype", lambda: _with(tensors(rows(1)), "x1", datatype="FLOAT"), 400,
     ["'x1'", "'FLOAT'"]),
    ("no inputs", lambda: {"inputs": []}, 400, ["'inputs'"]),
    ("not an object", lambda: [1, 2], 400, ["object"]),
    ("shape not a list of counts", lambda: _with(tensors(rows(1)), "x1", shape=[-1]), 400,
     ["'x1'", "shape"]),
    ("no data", lambda: _with(tensors(rows(1)), "x1", data=None), 400, ["'x1'", "'data'"]),
    ("an unknown requested output", lambda: {**tensors(rows(1)), "outputs": [{"name": "p"}]},
     400, ["'p'", "predict_proba"]),
    ("duplicate inputs", lambda: {"inputs": tensors(rows(1))["inputs"] * 2}, 400,
     ["more than once"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_the_protocols_error_naming_input_and_rule(
    client: TestClient, case: str, body: Any, status: int, words: list[str]
) -> None:
    res = client.post("/v2/models/demo/infer", content=orjson.dumps(body()))
    assert res.status_code == status, (case, res.text)
    error = res.json()
    assert set(error) == {"error"} and isinstance(error["error"], str)
    for word in words:
        assert word in error["error"], (case, word, error["error"])


def test_malformed_json_and_oversized_bodies(client: TestClient) -> None:
    res = client.post("/v2/models/demo/infer", content=b"{not json")
    assert res.status_code == 400 and "malformed JSON" in res.json()["error"]
    res = client.post("/v2/models/demo/infer", content=b"{}" + b" " * 20_000_000)
    assert res.status_code == 413 and set(res.json()) == {"error"}
    res = client.post(
        "/v2/models/demo/infer",
        content=b"x",
        headers={"content-encoding": "gzip"},
    )
    assert res.status_code == 400 and "compressed" in res.json()["error"]


def _binary(batch: list[dict[str, Any]]) -> tuple[bytes, int]:
    """The batch in Triton's binary tensor extension, as tritonclient sends it by default."""
    header: dict[str, Any] = {"inputs": []}
    parts = []
    for name, dt in KINDS.items():
        values = [r[name] for r in batch]
        if dt == "FP64":
            raw = struct.pack(
                f"<{len(values)}d", *[float("nan") if v is None else v for v in values]
            )
        else:
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        parts.append(raw)
        header["inputs"].append(
            {"name": name, "datatype": dt, "shape": [len(values)],
             "parameters": {"binary_data_size": len(raw)}}
        )  # fmt: skip
    head = orjson.dumps(header)
    return head + b"".join(parts), len(head)


def test_binary_tensors_answer_as_json_tensors(client: TestClient) -> None:
    batch = rows(4)
    json_answer = client.post("/v2/models/demo/infer", json=tensors(batch)).json()
    body, head = _binary(batch)
    res = client.post(
        "/v2/models/demo/infer",
        content=body,
        headers={"inference-header-content-length": str(head),
                 "content-type": "application/octet-stream"},
    )  # fmt: skip
    assert res.status_code == 200, res.text
    assert (
        output(res.json(), "predict_proba")["data"] == output(json_answer, "predict_proba")["data"]
    )
    for header, words in ((str(head + 5000), "within the body"), ("x", "whole number")):
        bad = client.post(
            "/v2/models/demo/infer",
            content=body,
            headers={"inference-header-content-length": header},
        )
        assert bad.status_code == 400 and words in bad.json()["error"]
    cut = client.post(
        "/v2/models/demo/infer",
        content=body[:-3],
        headers={"inference-header-content-length": str(head)},
    )
    assert cut.status_code == 400 and "binary" in cut.json()["error"]


def _count(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_requests_and_validation_errors_are_counted_as_v1(client: TestClient) -> None:
    ok = {"model": "demo", "version": "1", "endpoint": "predict", "status": "200"}
    bad = {**ok, "status": "422"}
    before = (_count("servewatch_requests_total", **ok), _count("servewatch_requests_total", **bad))
    errors = {"model": "demo", "feature": "x1", "rule": "type"}
    errors_before = _count("servewatch_validation_errors_total", **errors)
    client.post("/v2/models/demo/infer", json=tensors(rows(1)))
    client.post("/v2/models/demo/infer", json=_with(tensors(rows(1)), "x1", data=["x"]))
    assert _count("servewatch_requests_total", **ok) == before[0] + 1
    assert _count("servewatch_requests_total", **bad) == before[1] + 1
    assert _count("servewatch_validation_errors_total", **errors) == errors_before + 1


def test_openapi_documents_the_v2_routes_with_an_example(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert path in doc["paths"], path
    post = doc["paths"]["/v2/models/{name}/infer"]["post"]
    content = post["requestBody"]["content"]["application/json"]
    assert content["schema"]["$ref"] == "#/components/schemas/OipInferenceRequest"
    assert "OipInferenceRequest" in doc["components"]["schemas"]
    example_body = content["examples"]["demo"]["value"]
    assert client.post("/v2/models/demo/infer", json=example_body).status_code == 200
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "OipError"
    )


def test_shadow_and_canary_work_through_v2(with_staging: Path, tmp_path: Path) -> None:  # noqa: F811
    batch = rows(1)
    settings = settings_for(with_staging, tmp_path / "canary", canary={"demo": 0.5})
    with TestClient(create_app(settings)) as c:
        versions = [
            c.post(
                "/v2/models/demo/infer", json=tensors(batch), headers={"x-request-key": f"u{i}"}
            ).json()["model_version"]
            for i in range(60)
        ]
        pinned = {
            c.post(
                "/v2/models/demo/versions/1/infer",
                json=tensors(batch),
                headers={"x-request-key": f"u{i}"},
            ).json()["model_version"]
            for i in range(30)
        }
    assert 10 <= versions.count("2") <= 50 and "1" in versions  # the canary takes its share
    assert pinned == {"1"}  # a version in the path is answered by that version only
    settings = settings_for(with_staging, tmp_path / "shadow", shadow=["demo"])
    with TestClient(create_app(settings)) as c:
        answer = c.post("/v2/models/demo/infer", json=tensors(rows(5))).json()
    assert answer["model_version"] == "1"
    logged = PredictionStore(settings.database_url).read_window("demo")
    shadows = [r for r in logged if r["shadow"]]
    assert len(shadows) == 5 and {r["version"] for r in shadows} == {2}
    assert {r["ref_id"] for r in shadows} == set(output(answer, "prediction_id")["data"])


def test_other_numeric_datatypes_and_the_common_path_agree_with_the_careful_one(
    client: TestClient,
) -> None:
    from service.protocols import oip

    batch = [{**r, "x2": i} for i, r in enumerate(rows(3))]
    as_v1 = [{**r, "x1": float(i % 2)} for i, r in enumerate(batch)]
    v1 = client.post("/v1/models/demo/predict", json={"instances": as_v1}).json()
    body = tensors(batch, x2="INT64")
    _with(body, "x1", datatype="BOOL", data=[bool(i % 2) for i in range(3)])
    res = client.post("/v2/models/demo/infer", json=body).json()
    assert output(res, "predict_proba")["data"] == [
        p["probabilities"][c] for p in v1["predictions"] for c in ["no", "yes"]
    ]
    validator = client.app.state.sw.manager.get("demo").model.validator  # type: ignore[attr-defined]
    for request in (tensors(batch), tensors(batch[:1]), tensors(batch, x2="FP32")):
        raw = orjson.dumps(request)
        common = oip._common_rows(request["inputs"], oip._accepts(validator))
        careful = oip.instances(oip.parse_request(raw, None), validator.features, validator.known)
        assert common is not None and common == careful
        assert oip.decode(raw, None, validator)[1] == careful


def test_the_common_path_leaves_every_unusual_request_to_the_careful_one(
    client: TestClient,
) -> None:
    """Anything but one flat [n] tensor per feature, of the datatypes and JSON types it takes, is
    not taken by the common path (it returns None), so the careful path answers it: the same
    rows, or the same 400/422 as without the common path."""
    from service.protocols import oip

    validator = client.app.state.sw.manager.get("demo").model.validator  # type: ignore[attr-defined]
    accepts = oip._accepts(validator)
    one, two = tensors(rows(1)), tensors(rows(2))
    unusual = {
        "shape [1.0]": _with(tensors(rows(1)), "x1", shape=[1.0]),
        "shape [true]": _with(tensors(rows(1)), "x1", shape=[True]),
        "shape [1, 1]": _with(tensors(rows(1)), "x1", shape=[1, 1], data=[[0.5]]),
        "parameters": _with(tensors(rows(1)), "x1", parameters={"content_type": "np"}),
        "a key missing": {"inputs": [{k: v for k, v in t.items() if k != "shape"}
                                     if t["name"] == "x1" else t for t in one["inputs"]]},
        "an input twice": {"inputs": [*two["inputs"][:-1], two["inputs"][0]]},
        "an input missing": {"inputs": two["inputs"][:-1]},
        "an unknown input": {"inputs": [*one["inputs"][:-1], {**one["inputs"][-1], "name": "w"}]},
        "lengths differ": _with(tensors(rows(2)), "x1", shape=[3], data=[1.0, 2.0, 3.0]),
        "a string in FP64": _with(tensors(rows(2)), "x1", data=[0.5, "1"]),
        "a bool in FP64 (one row)": _with(tensors(rows(1)), "x1", data=[True]),
        "BOOL (converted)": _with(tensors(rows(1)), "x1", datatype="BOOL", data=[True]),
        "no rows": tensors([]),
        "not objects": {"inputs": [[1, 2, 3, 4]] * 5},
        "a name not text": {"inputs": [{**t, "name": [t["name"]]} for t in one["inputs"]]},
    }  # fmt: skip
    for case, body in unusual.items():
        assert oip._common_rows(body["inputs"], accepts) is None, case
        raw = orjson.dumps(body)
        try:
            careful = oip.instances(
                oip.parse_request(raw, None), validator.features, validator.known
            )
        except (oip.Malformed, oip.Rejected) as exc:
            with pytest.raises(type(exc)) as same:
                oip.decode(raw, None, validator)
            assert str(same.value) == str(exc), case
        else:
            assert oip.decode(raw, None, validator)[1] == careful, case


def test_the_joined_answer_is_the_document_answer(client: TestClient) -> None:
    """Every output joined from the version's pieces is, value for value, what the document path
    writes (classifier probabilities, a regression's none, with and without a request id)."""
    from service.inference.model import Outputs
    from service.protocols import oip

    model = client.app.state.sw.manager.get("demo").model  # type: ignore[attr-defined]
    batch = rows(3)
    out = model.predict_columns({k: [r[k] for r in batch] for k in batch[0]})
    ids = ["a" * 32, "b" * 32, "c" * 32]
    for outputs in (out, Outputs([0.5, -1.25, 3.0], None)):
        for req_id in (None, 'an "id"'):
            joined = oip.render("demo", model, outputs, ids, req_id, None)
            document = oip._render("demo", model, outputs, ids, req_id, None)
            assert orjson.loads(joined) == orjson.loads(document)
            names = [o["name"] for o in orjson.loads(joined)["outputs"]]
            with_proba = outputs.probabilities is not None
            assert names == ["predict", *(["predict_proba"] if with_proba else []), "prediction_id"]
