"""BentoML service for the comparison, with adaptive batching on (BentoML's documented setup)."""

import os
from typing import Any

import bentoml
import joblib
import pandas as pd


@bentoml.service(workers=1, traffic={"timeout": 30})
class Flights:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])
        self.classes = [str(c) for c in self.model.classes_]

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=20)
    def predict(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        proba = self.model.predict_proba(pd.DataFrame(instances))
        return [
            {
                "prediction": self.classes[row.argmax()],
                "probabilities": dict(zip(self.classes, map(float, row), strict=True)),
            }
            for row in proba
        ]
