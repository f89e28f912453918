"""The predict and infer routes served in front of FastAPI (service/protocols/hotpath.py) answer
as FastAPI's routes: the same statuses, headers and error bodies for every kind of bad request,
the same predictions, metrics and log rows; other routes and methods still reach FastAPI."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.protocols.hotpath import HotPath
from tests.service.conftest import example
from tests.service.test_oip import BAD, _binary, rows, tensors

JSON = {"content-type": "application/json"}

CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("good", "demo", orjson.dumps({"instances": [example()] * 3}), JSON),
    ("unknown model", "nope", orjson.dumps({"instances": [example()]}), JSON),
    ("content type", "demo", b'{"instances": []}', {"content-type": "text/plain"}),
    ("no content type", "demo", b'{"instances": []}', {}),
    ("empty body", "demo", b"", JSON),
    ("malformed JSON", "demo", b'{"instances": [', JSON),
    ("not an object", "demo", b"[1, 2]", JSON),
    ("empty instances", "demo", b'{"instances": []}', JSON),
    ("unknown top-level field", "demo", orjson.dumps({"instances": [example()], "x": 1}), JSON),
    ("wrong type", "demo", orjson.dumps({"instances": [{**example(), "x1": "high"}]}), JSON),
    ("missing feature", "demo", orjson.dumps({"instances": [{"x1": 1.0}]}), JSON),
    ("too large", "demo", b'{"instances": [' + b"1," * 40_000 + b"1]}", JSON),
    ("declared too large", "demo", b"{}", {**JSON, "content-length": "9" * 30}),
]  # fmt: skip


@pytest.fixture
def both(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    settings = settings.model_copy(update={"max_body_bytes": 50_000})
    fast = create_app(settings)
    slow = create_app(settings)
    slow.hot_path = False
    with TestClient(fast) as a, TestClient(slow) as b:
        yield a, b


def _answer(response: Any) -> tuple[int, Any]:
    body = response.json()
    if response.status_code == 200:
        for p in body["predictions"]:
            p.pop("prediction_id")
    return response.status_code, body


def _same_answer(
    both: tuple[TestClient, TestClient],
    path: str,
    body: bytes,
    headers: dict[str, str],
    read: Callable[[Any], Any],
) -> None:
    """The hot path's client and FastAPI's answer one POST alike, as `read` sees the answer."""
    got = [read(c.post(path, content=body, headers=headers)) for c in both]
    assert got[0] == got[1]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hot_path_answers_as_fastapi_route(
    both: tuple[TestClient, TestClient], case: tuple[str, str, bytes, dict[str, str]]
) -> None:
    _, name, body, headers = case
    _same_answer(both, f"/v1/models/{name}/predict", body, headers, _answer)
    fast, slow = both
    assert isinstance(fast.app.middleware_stack, HotPath)  # type: ignore[attr-defined]
    assert not isinstance(slow.app.middleware_stack, HotPath)  # type: ignore[attr-defined]


def test_hot_path_errors_name_the_field_and_rule(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    r = fast.post("/v1/models/demo/predict", json={"instances": [{**example(), "x1": "high"}]})
    assert r.status_code == 422
    (detail,) = r.json()["error"]["details"]
    assert (detail["feature"], detail["rule"]) == ("x1", "type")


def _counted(client: TestClient) -> dict[str, float]:
    """servewatch_requests_total of demo's predict route by status (process-wide counters)."""
    out: dict[str, float] = {}
    for m in re.finditer(
        r"servewatch_requests_total\{([^}]*)\} (\S+)", client.get("/metrics").text
    ):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if (labels["model"], labels["endpoint"]) == ("demo", "predict"):
            out[labels["status"]] = out.get(labels["status"], 0.0) + float(m.group(2))
    return out


def test_hot_path_counts_and_logs_as_fastapi_route(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    before = _counted(fast)
    ok = fast.post("/v1/models/demo/predict", json={"instances": [example()] * 2})
    bad = fast.post("/v1/models/demo/predict", content=b"{", headers=JSON)
    assert (ok.status_code, bad.status_code) == (200, 400)
    after = _counted(fast)
    grown = {k: after[k] - before.get(k, 0.0) for k in after}
    assert {k: v for k, v in grown.items() if v} == {"200": 1.0, "400": 1.0}
    store = fast.app.state.sw.store  # type: ignore[attr-defined]
    ids = {p["prediction_id"] for p in ok.json()["predictions"]}
    deadline = time.monotonic() + 10
    while store.existing_ids("demo", list(ids)) != ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.existing_ids("demo", list(ids)) == ids


def test_other_routes_and_methods_reach_fastapi(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    assert fast.get("/v1/models/demo/predict").status_code == 405
    assert fast.get("/v1/models/demo").status_code == 200
    # a trailing slash is FastAPI's redirect, not the hot path's answer (review finding: the
    # client followed the redirect, so the check could not fail)
    moved = fast.post("/v1/models/demo/predict/", json={"instances": []}, follow_redirects=False)
    assert moved.status_code == 307
    assert moved.headers["location"].endswith("/v1/models/demo/predict")


def _raw(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body bytes (prediction ids blanked: each request gets its own) and headers."""
    body = re.sub(rb'"[0-9a-v]{26,}"', b'"ID"', response.content)
    return response.status_code, body, list(response.headers.items())


V2_CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("good", "/v2/models/demo/infer", orjson.dumps(tensors(rows(3))), JSON),
    ("good with id and outputs", "/v2/models/demo/infer",
     orjson.dumps({"id": "r1", **tensors(rows(2)), "outputs": [{"name": "predict"}]}), {}),
    ("versioned", "/v2/models/demo/versions/1/infer", orjson.dumps(tensors(rows(1))), JSON),
    ("binary tensors", "/v2/models/demo/infer", _binary(rows(2))[0],
     {"inference-header-content-length": str(_binary(rows(2))[1])}),
    ("bad binary header", "/v2/models/demo/infer", _binary(rows(2))[0],
     {"inference-header-content-length": "x"}),
    ("unknown model", "/v2/models/nope/infer", orjson.dumps(tensors(rows(1))), JSON),
    ("other version", "/v2/models/demo/versions/2/infer", orjson.dumps(tensors(rows(1))), JSON),
    ("version not a number", "/v2/models/demo/versions/x/infer", b"{}", JSON),
    ("compressed", "/v2/models/demo/infer", b"x", {"content-encoding": "gzip"}),
    ("malformed JSON", "/v2/models/demo/infer", b"{not json", JSON),
    ("empty body", "/v2/models/demo/infer", b"", JSON),
    ("too large", "/v2/models/demo/infer", b"{}" + b" " * 60_000, JSON),
    ("declared too large", "/v2/models/demo/infer", b"{}", {"content-length": "9" * 30}),
    *[(case, "/v2/models/demo/infer", orjson.dumps(body()), JSON)
      for case, body, _, _ in BAD],
]  # fmt: skip


@pytest.mark.parametrize("case", V2_CASES, ids=[c[0] for c in V2_CASES])
def test_hot_path_infer_answers_as_fastapi_route(
    both: tuple[TestClient, TestClient], case: tuple[str, str, bytes, dict[str, str]]
) -> None:
    _, path, body, headers = case
    _same_answer(both, path, body, headers, _raw)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hot_path_predict_bytes_and_headers_as_fastapi_route(
    both: tuple[TestClient, TestClient], case: tuple[str, str, bytes, dict[str, str]]
) -> None:
    _, name, body, headers = case
    _same_answer(both, f"/v1/models/{name}/predict", body, headers, _raw)


def _no_framework(client: TestClient) -> list[str]:
    """FastAPI's stack behind the client's HotPath replaced by one that records each path it
    is handed and answers 418."""
    hot = client.app.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(hot, HotPath)
    reached: list[str] = []

    async def stack(scope: Any, _receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    hot.stack = stack
    return reached


def test_both_prediction_routes_bypass_fastapi(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    reached = _no_framework(fast)
    for path, body in (
        ("/v1/models/demo/predict", {"instances": [example()]}),
        ("/v2/models/demo/infer", tensors(rows(1))),
        ("/v2/models/demo/versions/1/infer", tensors(rows(1))),
        ("/v2/models/nope/infer", tensors(rows(1))),
    ):
        assert fast.post(path, json=body).status_code in (200, 404), path
    assert reached == []
    # near misses are FastAPI's: other methods, extra or empty segments
    for method, path in (
        ("GET", "/v2/models/demo/infer"),
        ("POST", "/v2/models//infer"),
        ("POST", "/v2/models/demo/version/1/infer"),
        ("POST", "/v2/models/demo/versions//infer"),
        ("POST", "/v2/models/a/b/versions/1/infer"),
        ("POST", "/v2/models/demo/infer/"),
    ):
        assert fast.request(method, path, json={}).status_code == 418, (method, path)
    assert len(reached) == 6


def test_hot_routes_skip_fastapis_entry_unless_under_a_root_path(
    both: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _ = both
    app = fast.app
    checked: list[str] = []
    telemetry = app._native_telemetry  # type: ignore[attr-defined]
    enabled = telemetry.enabled

    def counted() -> bool:
        checked.append("x")
        return bool(enabled())

    monkeypatch.setattr(telemetry, "enabled", counted)
    assert fast.post("/v1/models/demo/predict", json={"instances": [example()]}).status_code == 200
    assert fast.post("/v2/models/demo/infer", json=tensors(rows(1))).status_code == 200
    assert checked == []  # FastAPI.__call__ (its telemetry check) not run for the hot routes
    assert fast.get("/v1/models/demo").status_code == 200
    assert checked == ["x"]  # every other route still goes through it
    reached = _no_framework(fast)
    monkeypatch.setattr(app, "root_path", "/api")
    assert fast.post("/v1/models/demo/predict", json={"instances": [example()]}).status_code == 418
    assert reached == ["/v1/models/demo/predict"]


def _by_class(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    found = re.findall(r"servewatch_predictions_total\{([^}]*)\} (\S+)", text)
    out: dict[str, float] = {}
    for labels, value in found:
        got = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if got["model"] == "demo":
            out[got["class"]] = out.get(got["class"], 0.0) + float(value)
    return out


@pytest.mark.parametrize("n", [1, 3])
def test_predictions_are_counted_by_class(both: tuple[TestClient, TestClient], n: int) -> None:
    fast, _ = both
    before = _by_class(fast)
    batch = rows(n)
    for row in batch:  # single rows, then the same rows in one request
        fast.post("/v1/models/demo/predict", json={"instances": [row]})
    answer = fast.post("/v1/models/demo/predict", json={"instances": batch}).json()
    after = _by_class(fast)
    grown = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    want: dict[str, float] = {}
    for p in answer["predictions"]:
        want[str(p["prediction"])] = want.get(str(p["prediction"]), 0.0) + 2
    assert grown == want
