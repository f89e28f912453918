"""backfill(): predict records with a loaded version and log them as the service would.

For filling a log from history, for benchmarks and for tests: the rows are the ones the
service writes (`prediction_rows`), 0.1 ms apart from `start`, with optional labels.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

from core.rows import FeedbackRow
from predlog.ids import IdKeys
from predlog.store import PredictionStore, encode, prediction_rows


class Predicts(Protocol):
    name: str
    version: int

    def predict_columns(self, columns: dict[str, list[Any]]) -> Any: ...


def backfill(
    store: PredictionStore,
    model: Predicts,
    records: list[dict[str, Any]],
    *,
    labels: Sequence[Any] | None = None,
    start: float | None = None,
    keys: IdKeys | None = None,
) -> list[str]:
    """Predict `records` with `model`, log them (and their labels); returns their ids (tagged
    with `keys`, else with a throw-away key: then feedback finds them in the log)."""
    columns = {k: [r.get(k) for r in records] for k in records[0]}
    out = model.predict_columns(columns)
    keys = keys or IdKeys(secrets.token_hex(16))  # the service's keys, for ids it accepts
    ids = keys.new(len(records), model.name)
    t0 = time.time() if start is None else start
    rows = prediction_rows(
        ids=ids,
        model=model.name,
        version=model.version,
        created_at=t0,
        inputs=records,
        predictions=out.predictions,
        probabilities=out.probabilities,
        latency_ms=0.0,
    )
    for k, row in enumerate(rows):
        row["created_at"] = t0 + k * 1e-4
    store.write_predictions(rows)
    if labels is not None:
        store.write_labels(
            [
                FeedbackRow(prediction_id=i, model=model.name, label=encode(lab), received_at=t0)
                for i, lab in zip(ids, labels, strict=True)
            ]
        )
    return ids
