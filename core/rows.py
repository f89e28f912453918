"""The prediction log's row types: what the service writes and monitoring and retraining read."""

from __future__ import annotations

from typing import TypedDict


class PredictionRow(TypedDict):
    """One answered (or shadow) prediction in `sw_predictions`; JSON columns as text."""

    id: str  # 32 hex: 48-bit ms time + 80 random bits
    model: str
    version: int
    created_at: float  # Unix s, when it was answered
    inputs: str  # JSON object of the features, personal data redacted
    prediction: str  # JSON value in the version's label type
    probabilities: str | None  # JSON object class text -> probability
    latency_ms: float
    shadow: bool
    ref_id: str | None  # a shadow row: the answered prediction it shadowed


class FeedbackRow(TypedDict):
    """One ground-truth label in `sw_feedback`, joined to its prediction by id."""

    prediction_id: str
    model: str
    label: str  # JSON value, coerced to the version's label type
    received_at: float
