"""The data plane answers decoded instances with an `Answer` and knows no protocol's envelope:
/v1's envelope and reply live in service/protocols/v1.py, /v2's in v2.py and oip.py."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.dataplane import Answer, DataPlane, count_invalid
from service.errors import InvalidInstances, InvalidRequest
from service.protocols import v1
from tests.service.conftest import example

ROOT = Path(__file__).resolve().parents[2]


def errors_counted(**labels: str) -> float:
    return REGISTRY.get_sample_value("servewatch_validation_errors_total", labels) or 0.0


def test_the_data_plane_answers_instances_and_each_protocol_renders_the_answer(
    client: TestClient,
) -> None:
    plane: DataPlane = client.app.state.sw.plane  # type: ignore[attr-defined]
    inst = example()

    async def ask() -> Answer:
        with plane.call("predict", "demo") as call:
            return await plane.predict(call, [inst, inst], None)

    assert client.portal is not None
    answer = client.portal.call(ask)
    assert isinstance(answer, Answer)
    assert (answer.name, answer.version, len(answer.ids)) == ("demo", 1, 2)
    reply = orjson.loads(v1.reply(answer))
    assert reply["model"] == "demo" and reply["version"] == 1
    assert [p["prediction_id"] for p in reply["predictions"]] == answer.ids
    assert "explanation" not in reply["predictions"][0]


def test_a_feedback_body_is_decoded_by_the_v1_protocol() -> None:
    assert v1.feedback_items({"labels": [{"prediction_id": "a1", "label": 1}]}) == [("a1", 1)]
    with pytest.raises(InvalidRequest) as caught:
        v1.feedback_items({"labels": []})
    assert caught.value.details and caught.value.details[0]["field"] == "labels"
    reply = v1.feedback_reply(1, ["a1", "a1"])
    assert (reply.stored, [i.prediction_id for i in reply.items]) == (1, ["a1", "a1"])


def test_the_v1_envelope_is_checked_by_the_v1_protocol() -> None:
    with pytest.raises(InvalidInstances) as caught:
        v1.instances({"instances": [{}], "extra": 1})
    assert caught.value.details == [
        {"instance": None, "feature": "extra", "rule": "unknown", "message": "unknown field"}
    ]
    with pytest.raises(InvalidInstances, match="body must be"):
        v1.instances([{"x1": 1}])
    assert v1.instances({"instances": []}) == []  # emptiness is the data plane's rule


def test_the_validation_error_label_is_chosen_in_one_place() -> None:
    known = {"x1", "color"}
    before = {
        f: errors_counted(model="m-label", feature=f, rule=r)
        for f, r in (("_unknown", "unknown"), ("_unknown", "shape"), ("_instance", "type"))
    }
    before["x1"] = errors_counted(model="m-label", feature="x1", rule="type")
    count_invalid(
        "m-label", known, [("zz", "unknown"), ("matrix", "shape"), ("", "type"), ("x1", "type")]
    )
    assert errors_counted(model="m-label", feature="_unknown", rule="unknown") == (
        before["_unknown"] + 1
    )
    assert errors_counted(model="m-label", feature="_unknown", rule="shape") == 1
    assert errors_counted(model="m-label", feature="_instance", rule="type") == 1
    assert errors_counted(model="m-label", feature="x1", rule="type") == before["x1"] + 1


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_data_plane_imports_no_protocol_and_writes_no_reply() -> None:
    source = ROOT / "service" / "dataplane.py"
    imports = imported_modules(source)
    assert "orjson" not in imports  # the replies are the protocols' to write
    assert not {m for m in imports if m.startswith(("service.protocols", "fastapi.routing"))}
    text = source.read_text()
    assert '{"instances"' not in text and "render=" not in text
