"""Monitoring fixtures: a prediction log filled through the service's own model and store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.registry import Registry
from monitoring.config import MonitorSettings
from predlog.backfill import backfill
from predlog.store import PredictionStore
from service.inference.model import LoadedModel
from tests.data import classification_frame

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
    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    labels = list(frame["label"]) if labelled else None
    return backfill(store, model, rows.to_dict(orient="records"), labels=labels, start=at)


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
        evidently_workspace="",  # off (see tests/conftest.py); test_workspace.py sets its own
        monitor_keep_runs=3,
    )
