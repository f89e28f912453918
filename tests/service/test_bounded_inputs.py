"""What a client sends cannot grow the service: metric label values, feedback bodies, labels."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.config import Settings
from service.main import create_app
from tests.service.conftest import example


def series(name: str, model: str) -> set[tuple[str, str]]:
    out = set()
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == name and s.labels.get("model") == model:
                out.add((s.labels["feature"], s.labels["rule"]))
    return out


def test_unknown_fields_count_under_one_label_value(client: TestClient) -> None:
    before = series("servewatch_validation_errors_total", "demo")
    for i in range(200):
        inst = {**example(), f"field_{i}": 1}
        assert client.post("/v1/models/demo/predict", json={"instances": [inst]}).status_code == 422
    new = series("servewatch_validation_errors_total", "demo") - before
    assert new <= {("_unknown", "unknown")}
    assert ("_unknown", "unknown") in series("servewatch_validation_errors_total", "demo")


def test_a_huge_feedback_body_is_refused_while_it_streams(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 4096})
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"labels": ['
        for _ in range(10_000):  # 400 kB if read whole
            sent += 1
            yield b'{"prediction_id": "a", "label": "yes"},'
        yield b"]}"

    with TestClient(create_app(small)) as c:
        res = c.post(
            "/v1/models/demo/feedback",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert res.status_code == 413, res.text
        assert "over the limit of 4096 bytes" in res.json()["error"]["message"]
        declared = c.post(
            "/v1/models/demo/feedback",
            content=b"{}",
            headers={"content-type": "application/json", "content-length": "5000000"},
        )
        assert declared.status_code == 413


def test_ids_and_labels_have_length_limits(client: TestClient) -> None:
    res = client.post(
        "/v1/models/demo/feedback",
        json={"labels": [{"prediction_id": "a" * 33, "label": "yes"}]},
    )
    assert res.status_code == 422 and res.json()["error"]["details"][0]["field"] == (
        "labels.0.prediction_id"
    )
    res = client.post(
        "/v1/models/demo/feedback",
        json={"labels": [{"prediction_id": "a" * 32, "label": "y" * 1000}]},
    )
    assert res.status_code == 422
    (detail,) = res.json()["error"]["details"]
    assert detail["field"] == "labels.0.label" and detail["rule"] == "max_length"


def test_a_label_that_is_no_class_is_refused_by_name(client: TestClient) -> None:
    res = client.post(
        "/v1/models/demo/feedback",
        json={"labels": [{"prediction_id": "a" * 32, "label": "yes"},
                         {"prediction_id": "b" * 32, "label": "maybe"},
                         {"prediction_id": "c" * 32, "label": True}]},
    )  # fmt: skip
    assert res.status_code == 422
    details = res.json()["error"]["details"]
    assert [(d["field"], d["rule"]) for d in details] == [
        ("labels.1.label", "not_a_class"),
        ("labels.2.label", "not_a_class"),
    ]
    assert "'maybe' is not one of the model's classes" in details[0]["message"]
