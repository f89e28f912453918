"""The canary is judged by the objective metric's own direction, for classifiers and regressors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn import datasets

from core.registry import Registry
from core.rows import FeedbackRow
from monitoring.alerts import AlertRules
from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from predlog.backfill import backfill
from predlog.store import PredictionStore, encode
from service.inference.model import LoadedModel
from tests.service.conftest import pg_url  # noqa: F401  (the fixture)
from training.config import TrainConfig
from training.train import run_training

FAST = {"search": {"method": "random", "trials": 1, "budget_seconds": 10},
        "split": {"cv_folds": 2}, "reference_rows": 200, "calibration": "none"}  # fmt: skip


def cancer() -> pd.DataFrame:
    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame[["mean radius", "mean texture", "worst area"]].copy()
    frame["target"] = raw.target.astype(int)
    return frame


def diabetes() -> pd.DataFrame:
    return datasets.load_diabetes(as_frame=True, scaled=False).frame


@pytest.fixture(scope="module", params=["log_loss", "rmse"])
def two_versions(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """v1 in production, v2 at staging, objective a lower-is-better metric."""
    metric = request.param
    root = tmp_path_factory.mktemp(metric)
    frame = cancer() if metric == "log_loss" else diabetes()
    frame.to_csv(root / "data.csv", index=False)
    registry = Registry(root / "registry")
    for families in (["linear"], ["tree"]):
        cfg = TrainConfig.model_validate(
            {**FAST, "name": "m", "data": str(root / "data.csv"), "target": "target",
             "models": families, "objective": {"metric": metric}}
        )  # fmt: skip
        run_training(cfg, registry, promote="never")
    registry.set_alias("m", "production", 1)
    registry.set_alias("m", "staging", 2)
    return root, registry, frame, metric


def log(store: PredictionStore, registry: Registry, version: int, frame: pd.DataFrame,
        labels: list[Any]) -> None:  # fmt: skip
    model = LoadedModel.load(registry, "m", version)
    rows = frame.drop(columns="target").to_dict(orient="records")
    backfill(store, model, rows, labels=labels)


@pytest.mark.parametrize("canary_is_worse", [True, False])
def test_the_canary_is_withdrawn_only_when_it_is_worse(
    two_versions: Any, tmp_path: Path, canary_is_worse: bool
) -> None:
    root, registry, frame, metric = two_versions
    registry.set_alias("m", "staging", 2)
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    rows = frame.sample(300, random_state=0)
    truth = rows["target"].tolist()
    if metric == "rmse":
        off = [v + 3 * float(frame["target"].std()) for v in truth]
    else:
        off = [1 - v for v in truth]
    # the worse side gets labels far from the truth (its errors grow); the other the truth
    log(store, registry, 1, rows, truth if canary_is_worse else off)
    log(store, registry, 2, rows, off if canary_is_worse else truth)
    summary = run_monitoring(
        settings=MonitorSettings(
            registry=registry.root, database_url=store.url, monitor_reports_dir=tmp_path / "r"
        ),
        store=store,
        model="m",
        version=1,
        notifiers=[],
    )
    canary = summary["canary"]
    assert summary["metric"] == metric and canary["version"] == 2
    # lower is better: the canary's error is above production's exactly when it is worse
    assert (canary["realised"] > canary["production"]) == canary_is_worse
    assert canary["worse"] is canary_is_worse
    assert canary.get("withdrawn", False) is canary_is_worse
    assert (registry.alias_version("m", "staging") is None) is canary_is_worse
    fired = {a["rule"] for a in summary["alerts"]}
    assert ("canary_performance" in fired) is canary_is_worse


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> PredictionStore:
    url = f"sqlite:///{tmp_path}/log.db"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    s = PredictionStore(url)
    s.create_schema()
    return s


def test_late_canary_labels_are_judged_by_the_run_that_sees_them_once(
    two_versions: Any, tmp_path: Path, any_store: PredictionStore
) -> None:
    """The canary's labels have their own cursor: labels that arrive after the canary's
    predictions' window ran are judged by the next run, against the canary's version, once; a
    worse canary seen through late labels is withdrawn."""
    root, registry, frame, metric = two_versions
    registry.set_alias("m", "staging", 2)
    store = any_store
    settings = MonitorSettings(
        registry=registry.root, database_url=store.url, monitor_reports_dir=tmp_path / "r"
    )
    rules = AlertRules(min_rows=10_000)  # rows carried, labels judged: fast

    def run() -> Any:
        return run_monitoring(settings=settings, store=store, model="m", notifiers=[], rules=rules)

    def late(ids: list[str], labels: list[Any]) -> None:
        store.write_labels(
            [
                FeedbackRow(prediction_id=i, model="m", label=encode(lab), received_at=time.time())
                for i, lab in zip(ids, labels, strict=True)
            ]
        )

    rows = frame.sample(300, random_state=1)
    truth = rows["target"].tolist()
    off = (
        [v + 3 * float(frame["target"].std()) for v in truth]
        if metric == "rmse"
        else [1 - v for v in truth]
    )
    canary = LoadedModel.load(registry, "m", 2)
    records = rows.drop(columns="target").to_dict("records")
    try:
        log(store, registry, 1, rows, truth)
        canary_ids = backfill(store, canary, records)
        first = run()["canary"]
        assert first["version"] == 2 and first["labelled_rows"] == 0 and first["carried"]
        # the canary's true labels arrive after its window ran; production gets new labelled rows
        late(canary_ids, truth)
        log(store, registry, 1, rows, truth)
        second = run()["canary"]
        assert second["labelled_rows"] == 300 and second["labels_since"] is None  # carried
        assert second["worse"] is False and "band" in second
        assert registry.alias_version("m", "staging") == 2
        log(store, registry, 1, rows, truth)
        third = run()["canary"]
        assert third["labelled_rows"] == 0 and third["carried"]  # judged once
        assert third["labels_since"] is not None
        # a worse canary, seen only through late labels, is withdrawn
        canary_ids = backfill(store, canary, records)
        run()
        late(canary_ids, off)
        log(store, registry, 1, rows, truth)
        summary = run()
        assert summary["canary"]["labelled_rows"] == 300 and summary["canary"]["worse"] is True
        assert summary["canary"]["withdrawn"] is True
        assert registry.alias_version("m", "staging") is None
        assert "canary_performance" in {a["rule"] for a in summary["alerts"]}
    finally:
        registry.set_alias("m", "staging", 2)


def test_a_canary_equal_to_production_stays_and_the_cli_shows_its_band(
    msettings: MonitorSettings,
    store: PredictionStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same model at staging, labelled with the truth: inside its noise band, not withdrawn;
    `monitor run` prints the canary's figure, limit and band."""
    from typer.testing import CliRunner

    from servewatch.cli import app as cli
    from tests.monitoring.conftest import FEATURES, log_traffic, traffic
    from tests.monitoring.test_summary_shape import with_canary

    with_canary(msettings.registry)
    log_traffic(store, msettings.registry, traffic(400, seed=6))
    frame = traffic(300, seed=7)
    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    model = LoadedModel.load(Registry(msettings.registry), "demo", 2)
    backfill(store, model, rows.to_dict(orient="records"), labels=list(frame["label"]))
    monkeypatch.setenv("SERVEWATCH_MONITOR_REPORTS_DIR", str(msettings.monitor_reports_dir))
    common = ["--registry", str(msettings.registry), "--database-url", store.url]
    res = CliRunner().invoke(cli, ["monitor", "run", "--model", "demo", *common])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("canary v2: 300 labels; "))
    assert "roc_auc" in line and "limit" in line and "(noise band" in line, line
    assert "canary_performance" not in res.output
    assert Registry(msettings.registry).alias_version("demo", "staging") == 2


def worse_canary(
    two_versions: Any, tmp_path: Path, seed: int
) -> tuple[Registry, PredictionStore, MonitorSettings]:
    """Version 2 of model m at staging as the canary, 300 rows logged for each version with
    their labels: production's right, the canary's wrong (3 sd off for rmse, flipped otherwise)."""
    _root, registry, frame, metric = two_versions
    registry.set_alias("m", "staging", 2)
    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    rows = frame.sample(300, random_state=seed)
    truth = rows["target"].tolist()
    off = (
        [v + 3 * float(frame["target"].std()) for v in truth]
        if metric == "rmse"
        else [1 - v for v in truth]
    )
    log(store, registry, 1, rows, truth)
    log(store, registry, 2, rows, off)
    settings = MonitorSettings(
        registry=registry.root, database_url=store.url, monitor_reports_dir=tmp_path / "r"
    )
    return registry, store, settings


def test_a_manual_run_reports_a_worse_canary_but_withdraws_nothing(
    two_versions: Any, tmp_path: Path
) -> None:
    """A manual run (`--last`) moves nothing: the canary it finds worse stays at staging, and
    the next scheduled run judges the same labels and withdraws it."""
    registry, store, settings = worse_canary(two_versions, tmp_path, 2)
    try:
        manual = run_monitoring(settings=settings, store=store, model="m", notifiers=[], last=300)
        assert manual["manual"] and manual["canary"]["worse"] is True
        assert "withdrawn" not in manual["canary"]
        assert registry.alias_version("m", "staging") == 2
        scheduled = run_monitoring(settings=settings, store=store, model="m", notifiers=[])
        assert scheduled["canary"]["labelled_rows"] == 300 and scheduled["canary"]["withdrawn"]
        assert registry.alias_version("m", "staging") is None
    finally:
        registry.set_alias("m", "staging", 2)
