"""Request and response bodies, as documented in OpenAPI (parsing itself is done with orjson)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Properties received on /predict (the instances are checked against the model's own schema).


class PredictRequest(BaseModel):
    instances: list[dict[str, Any]] = Field(min_length=1)


# Properties returned by /predict; prediction_id joins later feedback to this prediction.


class Prediction(BaseModel):
    prediction_id: str
    prediction: Any
    probabilities: dict[str, float] | None = None


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


class Explanation(BaseModel):
    method: str  # linear_exact | tree_shap | sampling_shapley
    output: str  # what base_value + contributions add up to: log_odds | probability | value
    base_value: float
    contributions: dict[str, float]
    note: str | None = None


class ExplainedPrediction(Prediction):
    explanation: Explanation


class ExplainResponse(BaseModel):
    model: str
    version: int
    predictions: list[ExplainedPrediction]


class Label(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=32)
    label: bool | int | float | str = Field(
        description='One of the model\'s classes (in its label type, or coerced: 1 or "1" '
        'for an integer class, "true" for a boolean one), or a finite number for regression.'
    )


class FeedbackRequest(BaseModel):
    labels: list[Label] = Field(min_length=1, max_length=10_000)


class FeedbackItem(BaseModel):
    prediction_id: str
    status: str  # "stored" (a refused id makes the whole request a 422)


class FeedbackResponse(BaseModel):
    stored: int
    unknown: int
    items: list[FeedbackItem]


class ModelSummary(BaseModel):
    name: str
    version: int
    task: str
    aliases: dict[str, int]


class ModelDetail(ModelSummary):
    target: str
    classes: list[Any] | None
    features: list[dict[str, Any]]
    metrics: dict[str, Any]
    created_at: str


class ReloadResponse(BaseModel):
    model: str
    previous_version: int | None
    version: int


class Health(BaseModel):
    status: str
    models: dict[str, int] = {}
    problems: list[str] = []


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# OpenAPI fragments the routes attach (the hot routes parse their bodies by hand).


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error body."""
    return {code: {"model": ErrorResponse} for code in codes}


ERRORS = documented(400, 404, 413, 422, 503)

# The predict and explain routes read their path parameter and the app state off the request
# itself (FastAPI's dependency resolution was a tenth of the loop's time per request) and parse
# the body by hand (orjson, one-pass validation); this documents both.
INSTANCES_BODY: dict[str, Any] = {
    "parameters": [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "title": "Name"},
            "description": "The model's name in the registry.",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    },
}

FEEDBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}
        },
    },
}


# The Open Inference Protocol (KServe v2) REST bodies, as documented in OpenAPI (/v2 routes parse
# by hand in service/protocols/oip.py; docs/protocols.md maps features and answers onto tensors).


class OipTensor(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BYTES")
    shape: list[int] = Field(description="[n] or [n, 1] per feature; [n, features] for one 2-D")
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(
        default=None, description="Row-major values (flat or nested); absent with binary data."
    )


class OipRequestedOutput(BaseModel):
    name: str = Field(description="predict, predict_proba or prediction_id")
    parameters: dict[str, Any] | None = None


class OipInferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[OipTensor] = Field(min_length=1)
    outputs: list[OipRequestedOutput] | None = None


class OipInferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OipTensor] = Field(
        description="predict (the prediction), predict_proba (classifiers: [n, classes], the "
        "class order in parameters.classes), prediction_id (the ids /feedback joins on)"
    )


class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata]


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipLive(BaseModel):
    live: bool


class OipReady(BaseModel):
    ready: bool


class OipModelReady(BaseModel):
    name: str
    ready: bool


class OipError(BaseModel):
    error: str


def oip_documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, with the protocol's error body."""
    return {code: {"model": OipError} for code in codes}
