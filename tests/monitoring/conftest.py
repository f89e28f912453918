"""Monitoring fixtures: a prediction log filled through the service's own model and store."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from monitoring.config import MonitorSettings
from service.ids import new_ids
from service.model import LoadedModel
from service.store import PredictionStore, encode
from tests.data import classification_frame
from training.registry import Registry

FEATURES = ["x1", "x2", "color", "group", "when"]


def traffic(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Rows like the training data; `shift` moves x1 (covariate shift) and x2."""
    frame = classification_frame(n, seed=seed)
    frame["x1"] = frame["x1"] + shift
    frame["x2"] = frame["x2"] + shift * 2
    frame["when"] = frame["when"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return frame


def log_traffic(
    store: PredictionStore,
    registry: Path,
    frame: pd.DataFrame,
    *,
    labelled: bool = True,
    at: float | None = None,
) -> list[str]:
    """Predict with the real model and write rows (and labels) the way the service does."""
    model = LoadedModel.load(Registry(registry), "demo", 1)
    records = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    rows = records.to_dict(orient="records")
    out = model.predict_columns({k: [r[k] for r in rows] for k in FEATURES})
    ids = new_ids(len(rows))
    now = at if at is not None else time.time()
    store.write_predictions(
        [
            {
                "id": i,
                "model": "demo",
                "version": 1,
                "created_at": now + k * 1e-4,
                "inputs": encode(r),
                "prediction": encode(p),
                "probabilities": encode(pr),
                "latency_ms": 1.0,
                "shadow": False,
            }
            for k, (i, r, p, pr) in enumerate(
                zip(ids, rows, out.predictions, out.probabilities or [], strict=True)
            )
        ]
    )
    if labelled:
        store.write_labels(
            [
                {"prediction_id": i, "model": "demo", "label": encode(lab), "received_at": now}
                for i, lab in zip(ids, frame["label"], strict=True)
            ]
        )
    return ids


@pytest.fixture
def store(tmp_path: Path) -> PredictionStore:
    s = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    s.create_schema()
    return s


@pytest.fixture
def msettings(registry_copy: Path, store: PredictionStore, tmp_path: Path) -> MonitorSettings:
    return MonitorSettings(
        registry=registry_copy,
        database_url=store.url,
        monitor_reports_dir=tmp_path / "reports",
        monitor_keep_runs=3,
    )
