"""Every kind of bad request gets the documented 4xx naming the problem, never a 500."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.config import Settings
from service.main import create_app

GOOD = {"x1": 0.5, "x2": 3.0, "color": "red", "group": "a", "when": "2024-02-01T10:00:00"}


def problems(res: Any) -> set[tuple[Any, str, str]]:
    return {(d["instance"], d["feature"], d["rule"]) for d in res.json()["error"]["details"]}


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({k: v for k, v in GOOD.items() if k != "x1"}, (0, "x1", "required")),
        ({**GOOD, "colour": "red"}, (0, "colour", "unknown")),
        ({**GOOD, "x1": "abc"}, (0, "x1", "type")),
        ({**GOOD, "x1": True}, (0, "x1", "type")),
        ({**GOOD, "x1": [1]}, (0, "x1", "type")),
        ({**GOOD, "x1": None}, (0, "x1", "not_null")),
        ({**GOOD, "color": {"a": 1}}, (0, "color", "type")),
        ({**GOOD, "color": "x" * 1001}, (0, "color", "max_length")),
        ({**GOOD, "when": "yesterday"}, (0, "when", "type")),
        ("not an object", (0, "", "type")),
    ],
)
def test_bad_instance_gets_422_naming_instance_feature_and_rule(
    client: TestClient, instance: Any, expected: tuple[Any, str, str]
) -> None:
    res = client.post(
        "/v1/models/demo/predict",
        json={"instances": [GOOD, instance]}
        if instance != "not an object"
        else {"instances": [instance]},
    )
    assert res.status_code == 422, res.text
    got = problems(res)
    inst, feat, rule = expected
    assert (inst + (1 if instance != "not an object" else 0), feat, rule) in got


def test_coercions_that_are_accepted(client: TestClient) -> None:
    res = client.post(
        "/v1/models/demo/predict",
        json={"instances": [{**GOOD, "x1": "0.5", "x2": None, "color": 7}]},
    )
    assert res.status_code == 200, res.text  # numeric string, nullable x2, number as category
    huge = (
        b'{"instances": [{"x1": 123456789012345678901234567890, "x2": 1, "color": "red", '
        b'"group": "a", "when": "2024-01-01"}]}'
    )
    res = client.post(
        "/v1/models/demo/predict", content=huge, headers={"content-type": "application/json"}
    )
    assert res.status_code == 200, res.text  # a huge number is a number: out of range, counted


@pytest.mark.parametrize(
    ("content", "ctype", "status", "fragment"),
    [
        (b'{"instances": [', "application/json", 400, "malformed JSON"),
        (b"", "application/json", 400, "empty body"),
        (b'{"instances": []}', "text/plain", 400, "content-type must be application/json"),
        (b'{"instances": [{"x1": NaN}]}', "application/json", 400, "malformed JSON"),
        (b'{"instances": [{"x1": 1e999}]}', "application/json", 400, "malformed JSON"),
        (b'{"instances": []}', "application/json", 422, "instances is empty"),
        (b'{"rows": []}', "application/json", 422, "body must be"),
        (b"[1, 2]", "application/json", 422, "body must be"),
        (b'{"instances": [], "extra": 1}', "application/json", 422, "unknown top-level"),
    ],
)
def test_malformed_bodies(
    client: TestClient, content: bytes, ctype: str, status: int, fragment: str
) -> None:
    res = client.post("/v1/models/demo/predict", content=content, headers={"content-type": ctype})
    assert res.status_code == status, res.text
    assert fragment in res.json()["error"]["message"]


def test_limits_on_instances_and_bytes(settings: Settings) -> None:
    small = settings.model_copy(update={"max_instances": 3, "max_body_bytes": 2048})
    with TestClient(create_app(small)) as c:
        assert c.post("/v1/models/demo/predict", json={"instances": [GOOD] * 3}).status_code == 200
        over = c.post("/v1/models/demo/predict", json={"instances": [GOOD] * 4})
        assert over.status_code == 413 and "limit is 3" in over.json()["error"]["message"]
        big = c.post("/v1/models/demo/predict", json={"instances": [{**GOOD, "color": "y" * 3000}]})
        assert big.status_code == 413 and "2048 bytes" in big.json()["error"]["message"]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_out_of_range_and_unseen_values_are_accepted_and_counted(client: TestClient) -> None:
    oor = value("servewatch_out_of_range_values_total", model="demo", feature="x1")
    unseen = value("servewatch_unseen_categories_total", model="demo", feature="color")
    res = client.post(
        "/v1/models/demo/predict", json={"instances": [{**GOOD, "x1": 1e6, "color": "purple"}] * 2}
    )
    assert res.status_code == 200
    assert value("servewatch_out_of_range_values_total", model="demo", feature="x1") == oor + 2
    assert value("servewatch_unseen_categories_total", model="demo", feature="color") == unseen + 2
    assert "servewatch_unseen_categories_total" in client.get("/metrics").text


def test_validation_errors_are_counted_by_feature_and_rule(client: TestClient) -> None:
    before = value("servewatch_validation_errors_total", model="demo", feature="x1", rule="type")
    client.post("/v1/models/demo/predict", json={"instances": [{**GOOD, "x1": "abc"}]})
    after = value("servewatch_validation_errors_total", model="demo", feature="x1", rule="type")
    assert after == before + 1


def test_no_stack_trace_on_an_internal_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.inference.model import LoadedModel

    def boom(_self: LoadedModel, _columns: dict[str, list[Any]]) -> Any:
        raise RuntimeError("/secret/path exploded")

    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        monkeypatch.setattr(LoadedModel, "predict_columns", boom)
        res = c.post("/v1/models/demo/predict", json={"instances": [GOOD]})
    assert res.status_code == 500
    assert "secret" not in res.text and "Traceback" not in res.text


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b'{"instances": [{"x1": Infinity}]}', 400, "malformed JSON"),
        (b'{"instances": [{"x1": -Infinity}]}', 400, "malformed JSON"),
        (b'{"instances": [{"x1": ' + b"[" * 2000 + b"]" * 2000 + b"}]}", 400, "malformed JSON"),
        (b'{"instances": [{"x1": ' + b"[" * 100 + b"]" * 100 + b"}]}", 422, "problem"),
        (b'\xff\xfe{"instances": []}', 400, "malformed JSON"),
    ],
)
def test_hostile_bodies(client: TestClient, content: bytes, status: int, fragment: str) -> None:
    res = client.post(
        "/v1/models/demo/predict", content=content, headers={"content-type": "application/json"}
    )
    assert res.status_code == status, res.text
    assert fragment in res.json()["error"]["message"]


def test_unicode_categories_and_duplicated_keys(client: TestClient) -> None:
    res = client.post(
        "/v1/models/demo/predict", json={"instances": [{**GOOD, "color": "röd ✓ 红色 \u0000"}]}
    )
    assert res.status_code == 200  # an unseen category, accepted and counted
    dup = (
        b'{"instances": [{"x1": 1, "x1": "abc", "x2": 1, "color": "red", "group": "a", '
        b'"when": "2024-01-01"}]}'
    )
    res = client.post(
        "/v1/models/demo/predict", content=dup, headers={"content-type": "application/json"}
    )
    # JSON with a repeated key: the last value wins (as in every mainstream parser) and is checked
    assert res.status_code == 422 and problems(res) == {(0, "x1", "type")}


def test_batch_at_the_instance_limit_passes_and_one_more_is_refused(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_instances": 50})
    with TestClient(create_app(limited)) as c:
        assert c.post("/v1/models/demo/predict", json={"instances": [GOOD] * 50}).status_code == 200
        res = c.post("/v1/models/demo/predict", json={"instances": [GOOD] * 51})
        assert res.status_code == 413 and "51 instances" in res.json()["error"]["message"]
