"""A post-processed model (thresholds per group) over real HTTP: its schema says it needs the
sensitive attribute, and a request without it gets a 422 naming the feature and the rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.registry import Registry
from tests.service.conftest import Server
from training.config import TrainConfig
from training.demo import FEATURES, TARGET, load_flights
from training.train import run_training

COLUMNS = [c for c in FEATURES if c != "wind_gust"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("fair")
    frame = load_flights([1]).sample(2000, random_state=0)[[*COLUMNS, TARGET]]
    frame.to_csv(root / "f.csv", index=False)
    cfg = TrainConfig.model_validate(
        {"name": "late", "data": str(root / "f.csv"), "target": TARGET, "models": ["linear"],
         "search": {"trials": 1, "budget_seconds": 10}, "split": {"cv_folds": 2},
         "reference_rows": 100, "fairness": {"sensitive": ["origin"],
                                             "mitigation": "postprocess"}}
    )  # fmt: skip
    manifest = run_training(cfg, Registry(root / "registry")).manifest
    features = [f["name"] for f in manifest["features"]]  # month is constant in January: dropped
    row = frame.iloc[0][features].to_dict()
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    row = {k: (None if v != v else v) for k, v in row.items()}
    server = Server(
        {
            "SERVEWATCH_REGISTRY": str(root / "registry"),
            "SERVEWATCH_DATABASE_URL": f"sqlite:///{root}/log.db",
            "SERVEWATCH_SPOOL_DIR": str(root / "spool"),
            "SERVEWATCH_RELOAD_INTERVAL_S": "0",
        }
    )
    try:
        yield server.url, row
    finally:
        server.stop()


def _predict(url: str, instances: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/late/predict", json={"instances": instances}, timeout=30)


def test_the_schema_says_the_attribute_is_required(served: tuple[str, dict[str, Any]]) -> None:
    url, _ = served
    features = httpx.get(f"{url}/v1/models/late", timeout=10).json()["features"]
    (origin,) = [f for f in features if f["name"] == "origin"]
    assert origin["required_for"] == "postprocess" and origin["nullable"] is False


def test_with_the_attribute_it_answers_per_group(served: tuple[str, dict[str, Any]]) -> None:
    url, row = served
    res = _predict(url, [{**row, "origin": o} for o in ("EWR", "JFK", "LGA")])
    assert res.status_code == 200, res.text
    assert all(p["prediction"] in (0, 1) for p in res.json()["predictions"])


def test_without_the_attribute_a_clear_422(served: tuple[str, dict[str, Any]]) -> None:
    url, row = served
    missing = {k: v for k, v in row.items() if k != "origin"}
    res = _predict(url, [row, missing, {**row, "origin": None}])
    assert res.status_code == 422, res.text
    details = res.json()["error"]["details"]
    assert [(d["instance"], d["feature"], d["rule"]) for d in details] == [
        (1, "origin", "required"),
        (2, "origin", "not_null"),
    ]
    assert "postprocess" in details[0]["message"]
