"""The OpenAPI document: the routes' own, the request schemas, links and each model's example."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.protocols import oip
from service.protocols.deps import AppState
from service.protocols.schemas import FeedbackRequest, OipInferenceRequest, PredictRequest


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with a predict example built from each served model's schema."""
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["PredictRequest"] = PredictRequest.model_json_schema()
    feedback = FeedbackRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(feedback.pop("$defs", {}))
    schemas["FeedbackRequest"] = feedback
    oip_request = OipInferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(oip_request.pop("$defs", {}))
    schemas["OipInferenceRequest"] = oip_request
    _links(doc)
    state: AppState | None = getattr(app.state, "sw", None)
    if state is not None:
        _examples(doc, state)
    return doc


def _examples(doc: dict[str, Any], state: AppState) -> None:
    """Each served model's example instance, in /v1's and in /v2's request shape."""
    body = doc["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    body["content"]["application/json"]["examples"] = {
        name: {
            "summary": f"{name} v{slot.model.version}",
            "value": {"instances": [slot.model.example_instance()]},
        }
        for name, slot in sorted(state.manager.slots.items())
    }
    body = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
    body["content"]["application/json"]["examples"] = {
        name: {
            "summary": f"{name} v{slot.model.version}",
            "value": oip.example_request(
                slot.model.example_instance(), slot.model.manifest.features
            ),
        }
        for name, slot in sorted(state.manager.slots.items())
    }


def _links(doc: dict[str, Any]) -> None:
    """OpenAPI links for the workflow a client follows (and schemathesis' stateful run): a
    prediction's id and answer to its feedback, and the model's description."""
    paths = doc["paths"]
    predict = paths["/v1/models/{name}/predict"]["post"]
    feedback = paths["/v1/models/{name}/feedback"]["post"]
    model = paths["/v1/models/{name}"]["get"]
    name = {"name": "$request.path.name"}
    predict["responses"]["200"]["links"] = {
        "Feedback": {
            "operationId": feedback["operationId"],
            "parameters": name,
            "requestBody": {
                "labels": [
                    {
                        "prediction_id": "$response.body#/predictions/0/prediction_id",
                        "label": "$response.body#/predictions/0/prediction",
                    }
                ]
            },
            "description": "A ground-truth label for the first prediction (here: its answer).",
        },
        "Model": {"operationId": model["operationId"], "parameters": name},
    }
    feedback["responses"]["200"]["links"] = {
        "Model": {"operationId": model["operationId"], "parameters": name}
    }
