"""The floor: the endpoint people write first (a DataFrame per request, the model on the loop)."""

import os
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI

app = FastAPI()
MODEL = joblib.load(os.environ["BENCH_MODEL"])


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    frame = pd.DataFrame(body["instances"])
    proba = MODEL.predict_proba(frame)
    classes = [str(c) for c in MODEL.classes_]
    return {
        "predictions": [
            {
                "prediction": classes[row.argmax()],
                "probabilities": dict(zip(classes, map(float, row), strict=True)),
            }
            for row in proba
        ]
    }
