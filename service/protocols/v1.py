"""/v1's envelopes: `{"instances": [...]}` checked into instances and an answer as its reply; a
feedback body checked into (prediction id, label) items and the ids stored as its reply."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from service.dataplane import Answer, Instances, problem
from service.errors import MAX_PROBLEMS, InvalidInstances, InvalidRequest, schema_details
from service.protocols.schemas import FeedbackRequest, FeedbackResponse


def given(body: Any) -> list[Any] | None:
    """The body's instances list as sent (unchecked), or None."""
    found = body.get("instances") if isinstance(body, dict) else None
    return found if isinstance(found, list) else None


def instances(body: Any) -> Instances:
    """The instances of a /v1 body: `{"instances": [...]}` and no other field (422 otherwise);
    each instance is checked by the data plane against the answering version's schema."""
    rows = given(body)
    if rows is None:
        raise InvalidInstances(
            'body must be {"instances": [{feature: value, ...}, ...]}',
            [problem("instances", "required", "a list of instances is required")],
        )
    extra = sorted(k for k in body if k != "instances")
    if extra:
        raise InvalidInstances(
            f"unknown top-level field(s): {extra}",
            [problem(k, "unknown", "unknown field") for k in extra],
        )
    return rows


def reply(answer: Answer) -> bytes:
    """/v1's JSON reply: the model, its version and one item per row (its prediction id, the
    prediction, the class probabilities of a classifier, and an explanation's extras)."""
    out, ids, extras = answer.outputs, answer.ids, answer.extras
    preds = []
    for i in range(len(ids)):
        item: dict[str, Any] = {"prediction_id": ids[i], "prediction": out.predictions[i]}
        if out.probabilities is not None:
            item["probabilities"] = out.probabilities[i]
        if extras is not None:
            item.update(extras[i])
        preds.append(item)
    return orjson.dumps({"model": answer.name, "version": answer.version, "predictions": preds})


def feedback_items(body: Any) -> list[tuple[str, Any]]:
    """A feedback body's (prediction id, label) items; a 422 when it breaks the schema."""
    try:
        request = FeedbackRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            "the feedback body breaks the schema",
            schema_details(exc.errors()[:MAX_PROBLEMS]),
        ) from None
    return [(item.prediction_id, item.label) for item in request.labels]


def feedback_reply(stored: int, ids: list[str]) -> FeedbackResponse:
    """The feedback reply: the labels stored, and every id given as stored (a refused one is a
    422 for them all)."""
    return FeedbackResponse.model_validate(
        {
            "stored": stored,
            "unknown": 0,
            "items": [{"prediction_id": pid, "status": "stored"} for pid in ids],
        }
    )
