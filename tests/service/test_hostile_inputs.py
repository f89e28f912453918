"""Hostile bodies, headers and paths get a 4xx naming the rule, never a 5xx (each case was a
500 or a 503 before its fix), and every route a request can make expensive has a bound."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from predlog.store import PredictionStore
from service.config import Settings
from service.inference.model import redact
from service.main import create_app
from tests.service.conftest import example


def nested(depth: int, leaf: Any = 1.0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_json(template: Any, depth: int = 1000) -> bytes:
    """`template` as JSON with its "DEEP" string replaced by a list nested `depth` levels (too
    deep for the json module to write)."""
    return json.dumps(template).replace('"DEEP"', "[" * depth + "1.0" + "]" * depth).encode()


def test_unicode_digits_in_a_version_or_a_header_are_refused_not_crashed(
    client: TestClient,
) -> None:
    """ "²".isdigit() is true and int("²") raises: the /v2 version path and the binary header."""
    for path in ("/v2/models/demo/versions/%C2%B2/ready", "/v2/models/demo/versions/%C2%B2"):
        res = client.get(path)
        assert res.status_code == 404, (path, res.text)
        assert "whole numbers" in res.json()["error"]
    body = {"inputs": [{"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.5]}]}
    for value in ("²".encode("latin-1"), "٣".encode(), " 1²".encode("latin-1")):
        res = client.post(
            "/v2/models/demo/infer",
            content=json.dumps(body).encode(),
            headers={"inference-header-content-length": value},  # type: ignore[dict-item]
        )
        assert res.status_code == 400, (value, res.text)
        assert "Inference-Header-Content-Length" in res.json()["error"]
    res = client.post(
        "/v1/models/demo/predict",
        content=json.dumps({"instances": [example()]}).encode(),
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 200


def test_thousands_of_digits_in_a_version_or_a_header_are_refused_not_crashed(
    client: TestClient,
) -> None:
    """int() raises on more than 4,300 digits: a version path or a header of 5,000 digits."""
    digits = "1" * 5000
    for path in (f"/v2/models/demo/versions/{digits}/ready", f"/v2/models/demo/versions/{digits}"):
        res = client.get(path)
        assert res.status_code == 404, res.text[:200]
        assert "whole numbers" in res.json()["error"]
    body = {"inputs": [{"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.5]}]}
    res = client.post(
        "/v2/models/demo/infer",
        content=json.dumps(body).encode(),
        headers={"inference-header-content-length": digits},
    )
    assert res.status_code == 400, res.text[:200]
    assert "Inference-Header-Content-Length" in res.json()["error"]


def test_json_nested_a_thousand_levels_deep_is_a_4xx_on_both_protocols(client: TestClient) -> None:
    """RecursionError in oip._flatten (tensor data) and in the message's repr of a value."""
    json_type = {"content-type": "application/json"}

    def post(path: str, template: Any) -> Any:
        return client.post(path, content=deep_json(template), headers=json_type)

    res = post(
        "/v2/models/demo/infer",
        {"inputs": [{"name": "x1", "datatype": "FP64", "shape": [1], "data": "DEEP"}]},
    )
    assert res.status_code == 400 and "nested" in res.json()["error"]
    res = post("/v1/models/demo/predict", {"instances": [{**example(), "x1": "DEEP"}]})
    assert res.status_code == 422
    (detail,) = res.json()["error"]["details"]
    assert (detail["feature"], detail["rule"]) == ("x1", "type")
    for template in ({"instances": [{**example(), "color": "DEEP"}]}, {"instances": ["DEEP"]}):
        assert post("/v1/models/demo/predict", template).status_code == 422
        assert post("/v1/models/demo/explain", template).status_code == 422


def test_a_deeply_nested_personal_value_is_hashed_without_recursion() -> None:
    """str() of a value nested 1,000 deep raises RecursionError; redact still hashes it, the
    same value to the same hash, a different one to another."""
    key = "pii-key-0123456789abcdef"
    one = redact({"x": 1, "email": {"a": nested(1000, "alice")}}, {"email"}, key)
    again = redact({"x": 1, "email": {"a": nested(1000, "alice")}}, {"email"}, key)
    other = redact({"x": 1, "email": {"a": nested(1000, "bob")}}, {"email"}, key)
    assert one["email"].startswith("hmac:") and one == again and one != other
    flat = redact({"email": "alice@example.com"}, {"email"}, key)
    assert flat["email"] == redact({"email": "alice@example.com"}, {"email"}, key)["email"]


def test_a_category_sent_as_a_number_is_logged_as_the_model_read_it(settings: Settings) -> None:
    """`1.0` for a category reaches the model as "1": the log (and so monitoring) says "1",
    not "1.0"; a number sent as text is logged as the number."""
    with TestClient(create_app(settings)) as c:
        res = c.post(
            "/v1/models/demo/predict",
            json={"instances": [{**example(), "color": 1.0, "x1": "0.25"}]},
        )
        assert res.status_code == 200, res.text
    (row,) = PredictionStore(settings.database_url).read_window("demo")
    logged = json.loads(row["inputs"])
    assert logged["color"] == "1" and logged["x1"] == 0.25


def test_explain_has_a_row_limit_of_its_own(settings: Settings) -> None:
    limited = settings.model_copy(update={"explain_max_instances": 2})
    with TestClient(create_app(limited)) as c:
        res = c.post("/v1/models/demo/explain", json={"instances": [example()] * 3})
        assert res.status_code == 422
        error = res.json()["error"]
        assert "the limit is 2" in error["message"]
        assert error["details"][0]["rule"] == "explain_max_instances"
        ok = c.post("/v1/models/demo/explain", json={"instances": [example()] * 2})
        assert ok.status_code == 200, ok.text
        # predictions keep their own, larger limit
        assert c.post("/v1/models/demo/predict", json={"instances": [example()] * 3}).is_success


def test_a_nul_in_a_feedback_id_is_a_422_on_postgresql(pg_url: str, settings: Settings) -> None:
    """PostgreSQL refuses NUL in text: the id used to reach the store (503, store_down)."""

    def store_down() -> float:
        labels = {"model": "demo", "result": "store_down"}
        return REGISTRY.get_sample_value("servewatch_feedback_total", labels) or 0.0

    on_pg = settings.model_copy(update={"database_url": pg_url})
    before = store_down()
    with TestClient(create_app(on_pg)) as c:
        res = c.post(
            "/v1/models/demo/feedback",
            json={"labels": [{"prediction_id": "0190\x00abc", "label": "yes"}]},
        )
        assert res.status_code == 422, res.text
        (detail,) = res.json()["error"]["details"]
        assert (detail["field"], detail["rule"]) == ("labels.0.prediction_id", "id_format")
    assert store_down() == before


def test_duplicate_input_names_are_named_once_among_thousands(client: TestClient) -> None:
    """The duplicate check is one pass over the inputs (it was names.count per name)."""
    inputs = [{"name": f"f{i}", "datatype": "FP64", "shape": [1], "data": [0]} for i in range(9000)]
    inputs += [inputs[5], inputs[7]]
    res = client.post("/v2/models/demo/infer", json={"inputs": inputs})
    assert res.status_code == 400
    assert "['f5', 'f7'] appear more than once" in res.json()["error"]


def test_a_shape_of_thousands_of_dimensions_is_refused_before_its_product(
    client: TestClient,
) -> None:
    """The element count of a shape was its product: 20,000 dimensions of 10**18 made a number
    of 360,000 digits, minutes of CPU on the event loop. At most 32 dimensions."""
    shape = "[" + ",".join(["1000000000000000000"] * 2000) + "]"
    body = '{"inputs": [{"name": "x1", "datatype": "FP64", "shape": SHAPE, "data": [[0.5]]}]}'
    res = client.post(
        "/v2/models/demo/infer",
        content=body.replace("SHAPE", shape).encode(),
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 400
    assert "at most 32 dimensions" in res.json()["error"]
