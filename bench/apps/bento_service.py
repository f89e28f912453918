"""BentoML service for the comparison, with adaptive batching on (BentoML's documented setup).

max_latency_ms is BentoML's latency budget: requests the batcher expects to miss it are refused
with 503. At 20 ms a third of requests were refused under 16 connections; 1,000 ms refuses none at
these loads, so throughput is compared without errors. Workers: BENCH_BENTO_WORKERS (default 1).
"""

import os
from typing import Any

import bentoml
import joblib
import pandas as pd


@bentoml.service(workers=int(os.environ.get("BENCH_BENTO_WORKERS", "1")), traffic={"timeout": 30})
class Flights:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])
        self.classes = [str(c) for c in self.model.classes_]

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=1000)
    def predict(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        proba = self.model.predict_proba(pd.DataFrame(instances))
        return [
            {
                "prediction": self.classes[row.argmax()],
                "probabilities": dict(zip(self.classes, map(float, row), strict=True)),
            }
            for row in proba
        ]
