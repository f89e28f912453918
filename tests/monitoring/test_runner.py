"""Monitoring runs over a real prediction log and the demo version's reference sample."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from monitoring.collector import MonitoringCollector
from monitoring.config import MonitorSettings
from monitoring.routes import make_router
from monitoring.runner import MonitorError, Settling, run_monitoring
from monitoring.store import MonitorStore
from predlog.store import PredictionStore
from servewatch.cli import app as cli
from service.config import Settings
from service.main import create_app
from tests.monitoring.conftest import log_traffic, traffic


def run(msettings: MonitorSettings, store: PredictionStore, **kw):  # type: ignore[no-untyped-def]
    return run_monitoring(settings=msettings, store=store, model="demo", notifiers=[], **kw)


def test_shifted_traffic_fires_drift_and_is_stored(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(600, seed=5, shift=2.0))
    s = run(msettings, store)
    assert s["rows"] == 600 and s["labelled_rows"] == 600
    assert s["drift"]["columns"]["x1"]["drifted"] and s["drift"]["columns"]["x2"]["drifted"]
    assert {a["rule"] for a in s["alerts"]} >= {"out_of_range"}
    assert s["performance"]["realised"]["accuracy"] > 0 and s["performance"]["estimated"]
    assert s["quality"]["out_of_range_share"]["x1"] > 0.1
    # explanation drift: shifted x1 moves rows far from the background, so x1 matters more
    x1 = s["explanation_drift"]["features"]["x1"]
    assert x1["current"] > 1.5 * x1["reference"] and x1["change"] > 0
    report = Path(s["report_dir"])
    assert (report / "report.html").stat().st_size > 10_000 and (report / "summary.json").is_file()
    assert "metrics" in json.loads((report / "evidently.json").read_text())
    latest = MonitorStore(store).latest("demo")[0]
    assert latest["summary"]["rows"] == 600


def test_reference_like_traffic_rarely_alarms(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """False-alarm rate of dataset drift over several seeds of in-distribution traffic."""
    alarms = 0
    seeds = range(10, 16)
    for seed in seeds:
        log_traffic(store, msettings.registry, traffic(400, seed=seed))
        s = run(msettings, store)
        alarms += s["drift"]["drifted_share"] > 0.5
    assert alarms == 0, f"{alarms}/{len(seeds)} false dataset-drift alarms"


def test_a_performance_drop_with_labels_fires(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    frame = traffic(500, seed=3)
    frame["label"] = frame["label"].map({"yes": "no", "no": "yes"})  # the world flipped
    log_traffic(store, msettings.registry, frame)
    s = run(msettings, store)
    rules = {a["rule"] for a in s["alerts"]}
    assert "realised_performance" in rules
    assert "estimated_performance" not in rules  # inputs look normal: only labels can tell


def test_estimate_moves_before_labels_arrive(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(500, seed=1), labelled=False)
    base = run(msettings, store)["performance"]["estimated"]["roc_auc"]
    shifted = traffic(500, seed=2)
    shifted["x1"] = shifted["x1"] * 0.05  # rows crowd at the decision boundary
    log_traffic(store, msettings.registry, shifted, labelled=False)
    s = run(msettings, store)
    assert s["labelled_rows"] == 0 and s["performance"]["realised"] is None
    assert s["performance"]["estimated"]["roc_auc"] < base - 0.05


def test_too_little_data_is_reported_not_passed(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(50, seed=1))
    s = run(msettings, store)
    assert "drift" not in s
    assert [a["rule"] for a in s["alerts"]] == ["insufficient_data"]


def test_unknown_model_and_empty_log_fail_clearly(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    with pytest.raises(MonitorError, match="no model named 'ghost'"):
        run_monitoring(settings=msettings, store=store, model="ghost")
    with pytest.raises(MonitorError, match="no logged predictions"):
        run(msettings, store)


def test_rows_inside_the_settle_window_are_announced_not_a_failed_run(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """A run within SERVEWATCH_MONITOR_SETTLE_S of the last traffic: it says how many rows wait
    and from when a run includes them; the command exits 0, and a later run takes them."""
    log_traffic(store, msettings.registry, traffic(40, seed=3))
    settling = msettings.model_copy(update={"monitor_settle_s": 3600.0})
    with pytest.raises(Settling, match=r"40 logged prediction\(s\) for demo v1 wait") as exc:
        run(settling, store)
    assert exc.value.rows == 40
    assert store.now() + 3500 < exc.value.ready_at <= store.now() + 3600
    assert MonitorStore(store).latest("demo") == []  # nothing recorded as a run
    common = ["--registry", str(msettings.registry), "--database-url", store.url]
    res = CliRunner().invoke(
        cli,
        ["monitor", "run", "--model", "demo", *common],
        env={"SERVEWATCH_MONITOR_SETTLE_S": "3600"},
    )
    assert res.exit_code == 0, res.output
    assert "wait for the settle window" in res.output and "UTC" in res.output
    assert run(msettings.model_copy(update={"monitor_settle_s": 0.0}), store)["rows"] == 40


def test_window_far_over_the_cap_is_sampled_in_the_database(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(6000, seed=9), labelled=False)
    capped = msettings.model_copy(update={"monitor_max_rows": 1000})
    s = run(capped, store)
    assert s["rows_in_window"] == 6000
    assert 800 <= s["rows"] <= 1000
    assert run(capped, store, since=0.0)["rows"] == s["rows"]  # same window, same sample


def test_a_run_killed_half_way_leaves_nothing(
    msettings: MonitorSettings, store: PredictionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_traffic(store, msettings.registry, traffic(300, seed=1))

    def boom(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("monitoring.drift.run_drift", boom)
    with pytest.raises(KeyboardInterrupt):
        run(msettings, store)
    assert MonitorStore(store).latest("demo") == []
    assert not any((msettings.monitor_reports_dir / "demo").iterdir())


def test_retention_prunes_old_runs_and_reports(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    for seed in range(5):
        log_traffic(store, msettings.registry, traffic(250, seed=seed))
        run(msettings, store)
    runs = MonitorStore(store).latest("demo", 10)
    assert len(runs) == 3
    assert len(list((msettings.monitor_reports_dir / "demo").iterdir())) == 3


def test_gauges_and_routes_show_the_latest_run(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    log_traffic(store, msettings.registry, traffic(400, seed=4, shift=2.0))
    run(msettings, store)
    mstore = MonitorStore(store)
    reg = CollectorRegistry()
    reg.register(MonitoringCollector(mstore, cache_s=0))
    text = generate_latest(reg).decode()
    assert 'servewatch_drift_share{model="demo",version="1"}' in text
    assert 'servewatch_feature_drifted{feature="x1",model="demo",version="1"} 1.0' in text
    assert 'servewatch_alert_active{model="demo",rule="out_of_range"' in text
    assert 'kind="estimated",metric="roc_auc"' in text
    assert 'servewatch_feature_contribution{feature="x1",model="demo",sample="current"' in text
    settings = Settings(
        registry=msettings.registry,
        database_url=store.url,
        spool_dir=tmp_path / "spool",
        reload_interval_s=0,
    )
    with TestClient(
        create_app(
            settings,
            extra_routers=[make_router(mstore)],
            extra_collectors=[MonitoringCollector(mstore, cache_s=0)],
        )
    ) as c:
        body = c.get("/v1/models/demo/monitoring").json()
        assert body["latest"]["rows"] == 400 and len(body["history"]) == 1
        page = c.get("/v1/models/demo/monitoring/report")
        assert page.status_code == 200 and "<html" in page.text[:2000].lower()
        assert "servewatch_drift_share" in c.get("/metrics").text
        assert c.get("/v1/models/other/monitoring").status_code == 404


def test_cli_run_json_and_export_round_trip(
    msettings: MonitorSettings,
    store: PredictionStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVEWATCH_MONITOR_REPORTS_DIR", str(msettings.monitor_reports_dir))
    log_traffic(store, msettings.registry, traffic(300, seed=2))
    common = ["--registry", str(msettings.registry), "--database-url", store.url]
    res = CliRunner().invoke(cli, ["monitor", "run", "--model", "demo", "--json", *common])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == 300
    bad = CliRunner().invoke(cli, ["monitor", "run", "--model", "ghost", *common])
    assert bad.exit_code == 2 and "no model named 'ghost'" in bad.output
    bad = CliRunner().invoke(cli, ["monitor", "run", "--model", "demo", "--since", "soon", *common])
    assert bad.exit_code == 2
    out = tmp_path / "labelled.csv"
    res = CliRunner().invoke(
        cli, ["monitor", "export", "--model", "demo", "--out", str(out), *common]
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(out),
            "--target",
            "label",
            "--name",
            "re",
            "--registry",
            str(tmp_path / "reg2"),
            "--models",
            "linear",
            "--trials",
            "1",
            "--budget-seconds",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output


def test_the_service_starts_and_is_ready_without_evidently_optuna_or_shap(
    tmp_path: Path, registry_copy: Path
) -> None:
    code = (
        "import sys; from fastapi.testclient import TestClient; from servewatch.app import build\n"
        "with TestClient(build()) as c: assert c.get('/readyz').status_code == 200\n"
        "print(*(m in sys.modules for m in ('evidently', 'optuna', 'shap')))"
    )
    env = {
        "SERVEWATCH_REGISTRY": str(registry_copy),
        "SERVEWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "SERVEWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "SERVEWATCH_MONITOR_INTERVAL": "0",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.split() == ["False", "False", "False"], out.stderr


def test_gauges_skip_metrics_that_are_undefined_for_the_window(store: PredictionStore) -> None:
    """ROC AUC of a single-class window is NaN, stored as null: the scrape must still work."""
    mstore = MonitorStore(store)
    mstore.create_schema()
    summary = {
        "model": "m",
        "version": 1,
        "rows": 10,
        "alerts": [],
        "performance": {
            "realised": {"accuracy": 1.0, "roc_auc": None},
            "estimated": {"roc_auc": float("nan")},
        },
    }
    mstore.save_run(
        model="m",
        version=1,
        window_end=0.0,
        rows=10,
        summary=summary,
        report_dir=None,
        alert_states={},
    )
    reg = CollectorRegistry()
    reg.register(MonitoringCollector(mstore, cache_s=0))
    text = generate_latest(reg).decode()
    assert 'metric="accuracy"' in text and 'metric="roc_auc"' not in text


def test_an_unwritable_report_store_fails_the_run_cleanly(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    log_traffic(store, msettings.registry, traffic(300, seed=1))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the reports folder should be")
    broken = msettings.model_copy(update={"monitor_reports_dir": blocker})
    with pytest.raises(MonitorError, match="report store .* not writable"):
        run(broken, store)
    assert MonitorStore(store).latest("demo") == []  # no run row without its report


def test_a_failed_run_is_recorded_and_does_not_block_the_next(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """The version's model file is damaged after its traffic was logged: the run fails part-way
    (explanation drift loads the model), is recorded with its reason, and the next run moves on."""
    log_traffic(store, msettings.registry, traffic(300, seed=7))
    model_file = msettings.registry / "demo" / "1" / "model.joblib"
    good = model_file.read_bytes()
    model_file.write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(MonitorError, match="failed .*recorded"):
        run(msettings, store)
    failed = MonitorStore(store).latest("demo")[0]
    assert failed["summary"]["status"] == "failed" and "sha" in failed["summary"]["error"].lower()
    assert failed["window_end"] > 0 and failed["report_dir"] is None
    model_file.write_bytes(good)
    log_traffic(store, msettings.registry, traffic(300, seed=8))
    s = run(msettings, store)
    assert s["status"] == "ok" and s["rows"] == 300  # only the rows after the failed window
    assert s["window"]["since"] == failed["window_end"]


def test_rows_that_reach_the_log_late_fall_into_the_next_window(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """A spool replayed after an outage (or another replica's late flush) writes rows predicted
    before the previous run: windows follow ingest order, so they are monitored next time."""
    import time

    log_traffic(store, msettings.registry, traffic(250, seed=21))
    first = run(msettings, store)
    run_at = time.time()
    # predicted an hour ago, stored only now
    log_traffic(store, msettings.registry, traffic(250, seed=22), at=run_at - 3600)
    second = run(msettings, store)
    assert first["rows"] == 250 and second["rows"] == 250
    assert second["window"]["since"] == first["window"]["until"]
    assert second["window"]["end"] < run_at - 3000  # the rows' own times are from before


def test_a_window_ends_settle_seconds_before_the_run(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """Rows stamped within the settle time may still be inside a store transaction elsewhere:
    they wait for the next run."""
    log_traffic(store, msettings.registry, traffic(250, seed=23))
    settled = msettings.model_copy(update={"monitor_settle_s": 3600})
    with pytest.raises(Settling, match="250 logged prediction"):
        run(settled, store)
    assert run(msettings, store)["rows"] == 250


def test_rules_that_watch_another_metric_judge_it_by_its_own_test_score() -> None:
    """metric: log_loss on a roc_auc model: the reference is the version's test log loss, not its
    ROC AUC (a ceiling of AUC + max_drop would never make sense)."""
    from core.registry import Manifest
    from monitoring.alerts import AlertRules
    from monitoring.runner import _watched

    manifest = Manifest.model_validate(
        {"name": "m", "version": 1, "created_at": "x", "task": "classification",
         "target": "y", "features": [], "objective": {"metric": "roc_auc", "test_score": 0.8},
         "metrics": {"test": {"roc_auc": 0.8, "log_loss": 0.45}}}
    )  # fmt: skip
    assert _watched(manifest, AlertRules()) == ("roc_auc", 0.8)
    assert _watched(manifest, AlertRules(metric="log_loss")) == ("log_loss", 0.45)
    assert _watched(manifest, AlertRules(metric="brier")) == ("brier", None)


def test_the_estimates_baseline_is_read_from_the_served_models_own_reference_rows(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """The reference's top-up rows (validation by the train-only fit, out-of-fold by fold
    models) were predicted by models fitted on fewer rows, whose sharper probabilities put the
    estimate on the reference above the served model's on healthy traffic: every healthy seed
    fired estimated_performance. The baseline now comes from the test rows alone."""
    import pandas as pd

    from core.registry import Registry
    from monitoring.estimate import estimate
    from monitoring.noise import from_reference
    from monitoring.runner import _own_rows

    manifest = Registry(msettings.registry).manifest("demo", 1)
    counts = manifest.reference.rows
    assert counts.get("test") and len(counts) > 1  # the fixture's reference is topped up
    reference = pd.read_parquet(msettings.registry / "demo" / "1" / "reference.parquet")
    own = _own_rows(manifest, len(reference))
    assert own == counts["test"] < len(reference)
    for seed in (4, 6):
        log_traffic(store, msettings.registry, traffic(500, seed=seed))
        s = run(msettings, store)
        assert "estimated_performance" not in {a["rule"] for a in s["alerts"]}
        proba = from_reference(reference, ["no", "yes"]).proba
        assert proba is not None
        expected = estimate(proba[:own], ["no", "yes"])["roc_auc"]
        assert s["performance"]["reference_estimated"]["roc_auc"] == pytest.approx(expected)
