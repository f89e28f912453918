"""Retraining judges the champion on exactly its own test rows (issue 34): found by the row
fingerprints its training recorded, never by splitting the data again (which split integer labels
and a day-first time column differently from training)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.registry import Registry
from predlog.backfill import backfill
from predlog.store import PredictionStore
from servewatch.retrain import retrain
from service.inference.model import LoadedModel
from tests.conftest import fast_config
from training import fingerprints
from training.train import run_training

LINEAR = {"models": ["linear"], "search": {"method": "random", "trials": 1, "budget_seconds": 30},
          "calibration": "none"}  # fmt: skip


def months(n: int, seed: int) -> pd.DataFrame:
    """Integer labels 1-12 (the month a row's x points to) and a numeric feature."""
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 13, n)
    return pd.DataFrame({"x": y + rng.normal(0, 0.8, n), "z": rng.normal(size=n), "y": y})


def day_first(n: int, seed: int) -> pd.DataFrame:
    """Binary labels and a time column written day first, spanning January to March."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    when = pd.date_range("2024-01-20", periods=n, freq="3h").strftime("%d/%m/%Y %H:%M")
    y = (x + rng.normal(0, 1, n) > 0).astype(int)
    return pd.DataFrame({"x": x, "when": when, "y": y})


def champion_and_log(
    tmp_path: Path, frame: pd.DataFrame, **config: Any
) -> tuple[Registry, PredictionStore, dict[str, Any]]:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    registry = Registry(tmp_path / "registry")
    cfg = fast_config(**LINEAR, name="m", data=str(path), target="y", **config)
    manifest = run_training(cfg, registry).manifest
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    later = frame.sample(120, random_state=1)
    features = [f["name"] for f in manifest["features"]]
    records = later[features].to_dict(orient="records")
    model = LoadedModel.load(registry, "m", 1)
    backfill(store, model, records, labels=later["y"].tolist(), start=time.time() - 200)
    return registry, store, manifest


def check_exact(registry: Registry, store: PredictionStore, manifest: dict[str, Any]) -> None:
    result = retrain(registry=registry, store=store, model="m", dry_run=True)
    original = result.manifest["gate"]["checks"]["original_test"]
    metric = manifest["objective"]["metric"]
    # the champion's own test rows: the same count, and the score its training measured on them
    assert original["rows"] == manifest["data"]["split"]["test"]
    assert original["champion"] == pytest.approx(manifest["metrics"]["test"][metric], abs=1e-12)
    lineage = result.manifest["lineage"]["original"]
    assert lineage["test_rebuilt_from"] == "fingerprints"
    assert lineage["test_rows"] == original["rows"]


def test_integer_labels_one_to_twelve_rebuild_the_champions_test_rows(tmp_path: Path) -> None:
    registry, store, manifest = champion_and_log(tmp_path, months(600, 0))
    assert manifest["label_type"] == "integer" and len(manifest["classes"]) == 12
    check_exact(registry, store, manifest)


def test_a_day_first_time_column_rebuilds_the_champions_test_rows(tmp_path: Path) -> None:
    registry, store, manifest = champion_and_log(
        tmp_path, day_first(500, 0), time_column="when", features={"drop": []}
    )
    assert manifest["data"]["split"]["ordered_by"] == "when"
    check_exact(registry, store, manifest)


def test_a_champion_without_fingerprints_is_split_again_as_its_training_split(
    tmp_path: Path,
) -> None:
    registry, store, manifest = champion_and_log(tmp_path, months(600, 0))
    folder = registry.path("m", 1)  # as published before fingerprints were recorded
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["data"]["row_fingerprints"], raw["files"][fingerprints.ROWS_FILE]
    (folder / "manifest.json").write_text(json.dumps(raw))
    (folder / fingerprints.ROWS_FILE).unlink()
    result = retrain(registry=registry, store=store, model="m", dry_run=True)
    original = result.manifest["gate"]["checks"]["original_test"]
    assert result.manifest["lineage"]["original"]["test_rebuilt_from"] == "split"
    metric = manifest["objective"]["metric"]
    assert original["champion"] == pytest.approx(manifest["metrics"]["test"][metric], abs=1e-12)


def test_an_incremental_update_records_the_parents_rows_and_the_windows(tmp_path: Path) -> None:
    registry, store, manifest = champion_and_log(tmp_path, months(600, 0))
    result = retrain(registry=registry, store=store, model="m", incremental=True)
    prints = result.manifest["data"]["row_fingerprints"]
    parent = manifest["data"]["row_fingerprints"]["rows"]
    used = result.manifest["lineage"]["log_window"]["used_for_training"]
    assert prints["rows"] == {**parent, "train": parent["train"] + used}
    assert result.manifest["lineage"]["original"]["test_rebuilt_from"] == "fingerprints"
    folder = registry.path("m", result.version or 0)
    assert fingerprints.ROWS_FILE in result.manifest["files"]
    table = pd.read_parquet(folder / fingerprints.ROWS_FILE)
    assert len(table) == sum(prints["rows"].values())
