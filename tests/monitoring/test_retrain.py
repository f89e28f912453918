"""Retraining on flights: January to April trains the champion, later months are the traffic."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import log_loss
from typer.testing import CliRunner

from core.registry import Registry
from predlog.backfill import backfill
from predlog.store import PredictionStore
from servewatch.cli import app as cli
from servewatch.retrain import retrain
from service.inference.model import LoadedModel
from training.config import TrainConfig
from training.demo import FEATURES, TARGET, load_flights
from training.errors import TrainingError
from training.train import run_training

# A search budget no machine hits: both trials always run, so the champion (and what its
# incremental update learns) does not depend on the machine's load. The champion is published
# refitted on all of January to April (publish.refit_all, the default), so it learnt April, its
# test rows: the challenger's refit learns them too (its tested model never does), else it is
# judged on the window against a champion that learnt the newest months it was denied. The window
# is June/July: on July/August a refitted champion scores 0.712 on the newest 1,800 rows and a
# challenger that learnt 4,200 July/August rows as well 0.695 (retraining does not help there).
FAST = {"models": ["hgb"], "search": {"method": "random", "trials": 2, "budget_seconds": 3600,
        "max_rows": 5000}, "split": {"cv_folds": 2}, "reference_rows": 500,
        "calibration": "none"}  # fmt: skip


WINDOW = [6, 7]  # the months logged after the champion's publication


def train_champion(root: Path, family: str) -> Path:
    """flights v1 of `family` trained on a sample of January to April (time-ordered), in
    production."""
    frame = load_flights([1, 2, 3, 4]).sample(8000, random_state=0).sort_values("time_hour")
    frame.to_parquet(root / "jan-apr.parquet", index=False)
    cfg = TrainConfig.model_validate({
        **FAST, "models": [family], "name": "flights", "data": str(root / "jan-apr.parquet"),
        "target": TARGET,
        "task": "classification", "time_column": "time_hour",
        "features": {"categorical": ["carrier", "origin", "dest"],
                     "numeric": [f for f in FEATURES if f not in {"carrier", "origin", "dest"}]},
        "quality": {"max_missing_share": 0.8}})  # fmt: skip
    run_training(cfg, Registry(root / "registry"))
    return root


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_champion(tmp_path_factory.mktemp("flights"), "hgb")


@pytest.fixture(scope="module")
def linear_champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion of a family that learns incrementally (SGD, `partial_fit`)."""
    return train_champion(tmp_path_factory.mktemp("flights-linear"), "linear")


def log_later_months(root: Path, store: PredictionStore, months: list[int], n: int) -> None:
    """Predict later flights with the champion and log them with their true outcome."""
    reg = Registry(root / "registry")
    model = LoadedModel.load(reg, "flights", reg.resolve("flights"))
    frame = load_flights(months).sample(n, random_state=1).sort_values("time_hour")
    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    backfill(
        store,
        model,
        rows.to_dict(orient="records"),
        labels=[str(y) for y in frame[TARGET]],
        start=time.time() - n,
    )


def logged(champion: Path, folder: Path) -> Path:
    """`folder` with a copy of the champion's registry and a log of 6,000 labelled June/July
    flights (log.db): made once per champion, copied by each test."""
    shutil.copytree(champion / "registry", folder / "registry")
    store = PredictionStore(f"sqlite:///{folder}/log.db")
    store.create_schema()
    log_later_months(champion, store, WINDOW, 6000)
    store.dispose()  # the WAL is checkpointed into log.db: one file to copy
    return folder


def logged_copy(template: Path, tmp_path: Path) -> tuple[Registry, PredictionStore]:
    """A private copy of a logged template (registry and log) that a test may change."""
    shutil.copytree(template / "registry", tmp_path / "registry")
    shutil.copyfile(template / "log.db", tmp_path / "log.db")
    return Registry(tmp_path / "registry"), PredictionStore(f"sqlite:///{tmp_path}/log.db")


@pytest.fixture(scope="module")
def logged_champion(champion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return logged(champion, tmp_path_factory.mktemp("logged"))


@pytest.fixture(scope="module")
def logged_linear_champion(linear_champion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return logged(linear_champion, tmp_path_factory.mktemp("logged-linear"))


@pytest.fixture
def setup(logged_champion: Path, tmp_path: Path) -> tuple[Registry, PredictionStore]:
    return logged_copy(logged_champion, tmp_path)


@pytest.fixture
def linear_setup(logged_linear_champion: Path, tmp_path: Path) -> tuple[Registry, PredictionStore]:
    return logged_copy(logged_linear_champion, tmp_path)


def test_retrain_on_later_months_beats_the_old_version_and_is_promoted(
    setup: tuple[Registry, PredictionStore],
) -> None:
    registry, store = setup
    result = retrain(registry=registry, store=store, model="flights")
    gate = result.manifest["gate"]
    assert result.verdict == gate  # the typed verdict is what the manifest records
    assert registry.raw_manifest("flights", 2)["gate"] == gate
    recent = gate["checks"]["recent_window"]
    assert recent["challenger"] > recent["champion"]
    assert gate["passed"] and result.promoted_to == "production"
    # the champion learnt its test rows (April) by its refit on all rows: the challenger's refit
    # learnt them too, and on them the two tested models are compared, neither having learnt them
    refit, rows = result.manifest["model"]["refit"], result.manifest["data"]["row_fingerprints"]
    assert registry.raw_manifest("flights", 1)["model"]["refit"]["all_rows"] is True
    assert refit["all_rows"] and refit["extra_rows"] == rows["rows"]["refit"] == 1600
    assert refit["rows"] == sum(rows["rows"].values())
    original = gate["checks"]["original_test"]
    assert original["rows"] == 1600 and "tested model" in original["challenger_from"]
    assert original["champion"] == registry.raw_manifest("flights", 1)["metrics"]["test"]["roc_auc"]
    assert registry.resolve("flights") == result.version == 2
    lineage = registry.raw_manifest("flights", 2)["lineage"]
    assert lineage["parent_version"] == 1
    assert lineage["log_window"]["labelled_rows"] == 6000
    assert lineage["log_window"]["held_out_for_gate"] == 1800
    assert registry.raw_manifest("flights", 2)["config"]["data"].endswith("jan-apr.parquet")


def test_the_gate_refuses_a_deliberately_worse_challenger(
    setup: tuple[Registry, PredictionStore],
) -> None:
    registry, store = setup
    crippled = {"features": {"categorical": ["origin"], "numeric": ["distance"]}}
    result = retrain(registry=registry, store=store, model="flights", overrides=crippled)
    gate = result.manifest["gate"]
    assert not gate["passed"]
    assert not gate["checks"]["recent_window"]["passed"]
    assert result.promoted_to is None
    assert registry.resolve("flights") == 1  # production unchanged; v2 is kept for inspection


def test_dry_run_publishes_nothing_and_too_few_labels_fail_clearly(
    setup: tuple[Registry, PredictionStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, store = setup
    result = retrain(registry=registry, store=store, model="flights", dry_run=True)
    assert result.version is None and "gate" in result.manifest
    assert registry.versions("flights") == [1]
    empty = PredictionStore(f"sqlite:///{tmp_path}/empty.db")
    empty.create_schema()
    with pytest.raises(TrainingError, match="only 0 labelled predictions"):
        retrain(registry=registry, store=empty, model="flights")
    # the command: what it passes to retrain and prints of the dry run's result (the retraining
    # itself is the one above: a second one here would cost as much and prove nothing more)
    calls: list[dict[str, Any]] = []

    def recorded(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return result

    monkeypatch.setattr("servewatch.retrain.retrain", recorded)
    res = CliRunner().invoke(
        cli,
        [
            "retrain",
            "--model",
            "flights",
            "--dry-run",
            "--registry",
            str(registry.root),
            "--database-url",
            store.url,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "gate" in res.output and "dry run: nothing published" in res.output
    (call,) = calls
    assert call["dry_run"] is True and call["model"] == "flights"
    assert call["registry"].root == registry.root and call["store"].url == store.url
    assert registry.versions("flights") == [1]


def test_incremental_update_learns_from_the_window_only(
    linear_setup: tuple[Registry, PredictionStore],
) -> None:
    registry, store = linear_setup
    result = retrain(registry=registry, store=store, model="flights", incremental=True)
    m = result.manifest
    assert m["lineage"]["incremental"] is True and m["lineage"]["parent_version"] == 1
    assert m["model"]["incremental_update"]["rows"] == 4200
    assert "recent_window" in m["gate"]["checks"] and "original_test" in m["gate"]["checks"]
    assert result.verdict == m["gate"]
    # the champion's refit learnt its test rows and the update starts from it: both published
    # models are measured there, never the champion's tested score against a model that learnt them
    original, parent = m["gate"]["checks"]["original_test"], registry.raw_manifest("flights", 1)
    assert parent["model"]["refit"]["all_rows"] is True
    assert "champion_from" not in original and "both models learnt" in original["note"]
    assert original["champion"] != parent["metrics"]["test"][m["objective"]["metric"]]
    assert result.promoted_to == ("production" if result.verdict["passed"] else None)
    assert m["objective"]["test_score"] == m["metrics"]["test"][m["objective"]["metric"]]
    assert m["plots"] == [] and "model_card.md" in m["files"]
    assert result.version == 2 and registry.manifest("flights", 2).version == 2
    new = LoadedModel.load(registry, "flights", 2)  # hashes match, it loads and warms up
    old = LoadedModel.load(registry, "flights", 1)
    # It learnt from the later months (summer has more delays): on June/July flights its
    # probabilities score better than the old version's (log loss; an update that overshoots, as
    # the SGD update at the fit's own late step did, scores worse: 0.623 -> 0.725).
    later = load_flights(WINDOW).sample(2000, random_state=5)
    rows = later[FEATURES].astype(object).where(later[FEATURES].notna(), None)
    cols = {k: rows[k].tolist() for k in FEATURES}
    truth = later[TARGET].to_numpy()

    def late(model: LoadedModel) -> np.ndarray:
        return np.array([p["1"] for p in model.predict_columns(cols).probabilities or []])

    p_old, p_new = late(old), late(new)
    assert log_loss(truth, p_new) < log_loss(truth, p_old)


def test_incremental_refuses_families_that_cannot_learn_incrementally(
    setup: tuple[Registry, PredictionStore],
) -> None:
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    from training import incremental

    registry, store = setup
    pipe = joblib.load(registry.path("flights", 1) / "model.joblib")
    # HistGradientBoosting's warm start re-bins the features on the new rows and misreads its
    # earlier trees through the new bins: refused, with the reason
    assert not incremental.supports(pipe)
    with pytest.raises(TrainingError, match="HistGradientBoosting.*re-bins"):
        retrain(registry=registry, store=store, model="flights", incremental=True)
    assert registry.versions("flights") == [1]
    pipe.steps[-1] = ("model", RandomForestClassifier())
    with pytest.raises(TrainingError, match="RandomForestClassifier cannot be updated"):
        incremental.update(pipe, None, None)  # type: ignore[arg-type]


def test_an_alert_triggers_a_gated_retrain(
    setup: tuple[Registry, PredictionStore], tmp_path: Path
) -> None:
    from monitoring.config import MonitorSettings
    from monitoring.loop import retrain_reason
    from servewatch.auto_retrain import maybe_retrain

    registry, store = setup
    settings = MonitorSettings(registry=registry.root, database_url=store.url,
                               monitor_reports_dir=tmp_path / "reports",
                               retrain_on_alert=["realised_performance"])  # fmt: skip
    quiet = {"transitions": [{"rule": "dataset_drift", "status": "firing"}]}
    assert retrain_reason(settings, "flights", quiet) is None
    fired = {"transitions": [{"rule": "realised_performance", "status": "firing"}]}
    outcome = maybe_retrain(settings, store, "flights", fired)
    assert outcome is not None and outcome["reason"] == "alert realised_performance fired"
    assert outcome["version"] == 2 and outcome["gate_passed"] is True
    assert registry.resolve("flights") == 2
    scheduled = settings.model_copy(update={"retrain_on_alert": [], "retrain_interval": 3600})
    assert retrain_reason(scheduled, "flights", quiet) is None  # the stamp is fresh
    assert (
        retrain_reason(scheduled.model_copy(update={"retrain_interval": 1e-9}), "flights", quiet)
        == "scheduled"
    )
