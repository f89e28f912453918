"""Every row judged once, every label used: scheduled windows of rows and of labels, manual runs,
sampling over the cap, alert state per version."""

import json
import shutil
import time
from pathlib import Path

import pytest

from core.registry import Registry
from core.rows import FeedbackRow
from monitoring.alerts import AlertRules, evaluate
from monitoring.collector import MonitoringCollector
from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from monitoring.store import MonitorStore
from monitoring.window import read_window
from predlog.backfill import backfill
from predlog.store import PredictionStore, encode
from service.inference.model import LoadedModel
from tests.monitoring.conftest import FEATURES, log_traffic, traffic
from tests.service.conftest import pg_url  # noqa: F401  (the fixture)


def run(msettings: MonitorSettings, store: PredictionStore, **kw):  # type: ignore[no-untyped-def]
    return run_monitoring(settings=msettings, store=store, model="demo", notifiers=[], **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> PredictionStore:
    """The log on SQLite, and on PostgreSQL (its partitioned tables) when reachable."""
    url = f"sqlite:///{tmp_path}/any.db"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    s = PredictionStore(url)
    s.create_schema()
    return s


def test_labels_that_arrive_after_their_window_ran_are_judged_by_the_next_run(
    msettings: MonitorSettings, any_store: PredictionStore
) -> None:
    store = any_store
    rules = AlertRules(min_rows=10_000)  # rows are carried, not judged: labels only (fast)
    frame = traffic(250, seed=31)
    ids = log_traffic(store, msettings.registry, frame, labelled=False)
    first = run(msettings, store, rules=rules)
    assert first["labelled_rows"] == 0 and first["performance"]["realised"] is None
    # the labels come a day later, after their predictions' window ran
    store.write_labels(
        [
            FeedbackRow(prediction_id=i, model="demo", label=encode(lab), received_at=time.time())
            for i, lab in zip(ids, frame["label"], strict=True)
        ]
    )
    log_traffic(store, msettings.registry, traffic(250, seed=32), labelled=False)
    second = run(msettings, store, rules=rules)
    assert second["labelled_rows"] == 250  # the late labels, against their predictions
    assert second["performance"]["realised_rows"] == 250
    assert second["performance"]["realised"]["accuracy"] > 0.6
    third = run(msettings, store, rules=rules)
    assert third["labelled_rows"] == 0  # judged once
    # a label that reached the store before its (spooled) prediction: judged when both are in
    early = traffic(100, seed=30)
    ids = log_traffic(store, msettings.registry, early, labelled=False)
    store.write_labels(
        [
            FeedbackRow(prediction_id=i, model="demo", label=encode(lab), received_at=1.0)
            for i, lab in zip(ids, early["label"], strict=True)
        ]
    )
    assert run(msettings, store, rules=rules)["labelled_rows"] == 100


def test_a_label_stamped_by_a_clock_behind_the_databases_is_still_judged(
    msettings: MonitorSettings, any_store: PredictionStore
) -> None:
    """The service's labels are stamped by the database's clock as they are written: a replica
    whose clock is behind (or a write delayed past the settle time) stamped a label inside a
    labels window that had already run, and no later run read it."""
    store = any_store
    rules = AlertRules(min_rows=10_000)
    log_traffic(store, msettings.registry, traffic(150, seed=35))  # labelled: judged by run 1
    frame = traffic(150, seed=34)
    ids = log_traffic(store, msettings.registry, frame, labelled=False)
    first = run(msettings, store, rules=rules)
    assert first["labelled_rows"] == 150
    behind = first["window"]["labels_until"] - 1.0  # the replica's clock, a moment behind
    store.write_labels(
        [
            FeedbackRow(prediction_id=i, model="demo", label=encode(lab), received_at=behind)
            for i, lab in zip(ids, frame["label"], strict=True)
        ],
        db_clock=True,
    )
    assert run(msettings, store, rules=rules)["labelled_rows"] == 150


def test_too_few_labels_are_carried_until_there_are_enough(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    rules = AlertRules(min_rows=10_000, min_labelled_rows=150)
    log_traffic(store, msettings.registry, traffic(250, seed=33).iloc[:100])
    first = run(msettings, store, rules=rules)
    assert first["labelled_rows"] == 100
    assert first["window"]["labels_until"] == first["window"]["labels_since"]  # carried
    log_traffic(store, msettings.registry, traffic(250, seed=34).iloc[:100])
    second = run(msettings, store, rules=rules)
    assert second["labelled_rows"] == 200 and second["performance"]["realised_rows"] == 200
    assert second["window"]["labels_until"] == second["window"]["until"]  # judged: moved on


def test_runs_without_new_rows_report_insufficient_data_and_never_rejudge(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """One burst of shifted rows, then two runs without traffic: with fire_after 2 only
    insufficient_data fires: the burst is judged once (the old fallback re-read it and fired)."""
    rules = AlertRules(fire_after=2)
    log_traffic(store, msettings.registry, traffic(250, seed=35, shift=2.0))
    first = run(msettings, store, rules=rules)
    assert first["drift"]["columns"]["x1"]["drifted"]
    for _ in range(2):
        s = run(msettings, store, rules=rules)
        assert s["rows"] == 0 and "drift" not in s and s["window"]["carried"]
    fired = {a["rule"] for a in s["alerts"]}
    assert fired == {"insufficient_data"}  # low traffic is reported, nothing else fires


def test_a_short_window_is_carried_into_the_next_one(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(150, seed=36), labelled=False)
    first = run(msettings, store)
    assert first["rows"] == 150 and "drift" not in first
    log_traffic(store, msettings.registry, traffic(100, seed=37), labelled=False)
    second = run(msettings, store)
    assert second["rows"] == 250 and "drift" in second  # every row judged, once
    assert second["window"]["since"] == first["window"]["since"]


def test_a_manual_run_never_moves_the_scheduled_window(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    log_traffic(store, msettings.registry, traffic(250, seed=38))
    scheduled = run(msettings, store)
    log_traffic(store, msettings.registry, traffic(300, seed=39, shift=2.0))
    manual = run(msettings, store, last=100)
    assert manual["manual"] and manual["rows"] == 100 and manual["transitions"] == []
    gauges = MonitoringCollector(MonitorStore(store), cache_s=0)
    rows = {m.name: m.samples[0].value for m in gauges.collect() if m.samples}
    assert rows["servewatch_monitor_rows"] == 250  # the gauges show the scheduled run
    after = run(msettings, store)
    assert after["rows"] == 300  # the shifted rows between the runs are judged
    assert after["window"]["since"] == scheduled["window"]["until"]
    assert "out_of_range" in {a["rule"] for a in after["transitions"]}
    big = AlertRules(min_rows=1000)  # only the window's size is checked: no drift report
    assert run(msettings, store, ago=3600, rules=big)["rows"] == 550  # by the database's clock
    assert run(msettings, store)["rows"] == 0


def test_sampling_over_the_cap_reaches_the_oldest_rows(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    old = time.time() - 7200
    log_traffic(store, msettings.registry, traffic(300, seed=40), labelled=False, at=old)
    log_traffic(store, msettings.registry, traffic(5700, seed=41), labelled=False)
    w = read_window(
        store, model="demo", version=1, since=None, last=None, cap=1000, classes=["no", "yes"]
    )
    assert 800 <= w.rows <= 1000
    assert w.start is not None and w.start < old + 1  # the oldest rows can be drawn


def test_a_rule_not_evaluated_keeps_its_alert_firing() -> None:
    """dataset_drift is firing; a run with too few rows cannot judge it: it stays firing (it
    used to vanish from the state without a resolution)."""
    summary = {"model": "m", "version": 1, "rows": 10, "metric": None}
    states = {"dataset_drift": {"active": True, "streak": 0, "since": 1.0}}
    active, changed, new = evaluate(summary, AlertRules(), states)  # type: ignore[arg-type]
    assert new["dataset_drift"] == states["dataset_drift"]
    assert "dataset_drift" in {a.rule for a in active} and changed[0].rule == "insufficient_data"


def test_alert_state_is_kept_per_version_and_resolved_when_another_serves(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    registry = msettings.registry
    shifted = traffic(250, seed=42, shift=2.0)
    ids = log_traffic(store, registry, shifted, labelled=False)
    v1 = run(msettings, store)
    assert "out_of_range" in {a["rule"] for a in v1["alerts"]}
    shutil.copytree(registry / "demo" / "1", registry / "demo" / "2")
    manifest = registry / "demo" / "2" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 2}))
    frame = traffic(250, seed=43)
    model = LoadedModel.load(Registry(registry), "demo", 2)
    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    backfill(store, model, rows.to_dict(orient="records"))
    Registry(registry).set_alias("demo", "production", 2)
    v2 = run(msettings, store, version=2)
    assert v2["rows"] == 250  # v2's own rows, from its first
    assert "out_of_range" not in {a["rule"] for a in v2["alerts"]}  # v1's state is not v2's
    resolved = [t for t in v2["transitions"] if t["status"] == "resolved"]
    assert {(t["version"], t["rule"]) for t in resolved} >= {(1, "out_of_range")}
    # v1's labels arrive late, after v2 took over: judged once, against v1
    store.write_labels(
        [
            FeedbackRow(prediction_id=i, model="demo", label=encode(lab), received_at=time.time())
            for i, lab in zip(ids, shifted["label"], strict=True)
        ]
    )
    late = run(msettings, store, version=2)["late_labels"]
    assert [(x["version"], x["labelled_rows"]) for x in late] == [(1, 250)]
    assert "late_labels" not in run(msettings, store, version=2)
    # rolled back: v1 goes on from its own window, not its whole history
    Registry(registry).set_alias("demo", "production", 1)
    log_traffic(store, registry, traffic(250, seed=44))
    back = run(msettings, store)
    assert back["version"] == 1 and not back["manual"]
    assert back["rows"] == 250 and back["window"]["since"] == v1["window"]["until"]


def test_a_run_of_a_version_production_does_not_serve_leaves_productions_state(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    """`monitor run --version V` of another version reports like a manual run: production's
    firing alerts, windows and labels stay the scheduled runs' (it resolved them before)."""
    registry = msettings.registry
    shutil.copytree(registry / "demo" / "1", registry / "demo" / "2")
    manifest = registry / "demo" / "2" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 2}))
    Registry(registry).set_alias("demo", "production", 2)
    model = LoadedModel.load(Registry(registry), "demo", 2)
    shifted = traffic(250, seed=45, shift=2.0)
    rows = shifted[FEATURES].astype(object).where(shifted[FEATURES].notna(), None)
    backfill(store, model, rows.to_dict(orient="records"))
    prod = run(msettings, store)
    assert prod["version"] == 2 and "out_of_range" in {a["rule"] for a in prod["alerts"]}
    mstore = MonitorStore(store)
    before = (mstore.cursor("demo", 2), mstore.alert_states("demo", 2))
    log_traffic(store, registry, traffic(250, seed=46))  # v1's rows (the log_traffic helper)
    other = run(msettings, store, version=1)
    assert other["version"] == 1 and other["manual"] and other["transitions"] == []
    assert (mstore.cursor("demo", 2), mstore.alert_states("demo", 2)) == before
    gauges = MonitoringCollector(MonitorStore(store), cache_s=0)
    versions = {s.labels.get("version") for m in gauges.collect() for s in m.samples} - {None}
    assert versions == {"2"}  # the gauges still show production's scheduled run


def test_alert_state_of_the_release_before_is_given_to_the_newest_runs_version(
    store: PredictionStore,
) -> None:
    """`sw_alert_state` (per model) becomes per-version state of the model's newest run's version,
    so an alert firing at the upgrade still resolves; the old table is dropped."""
    import sqlalchemy as sa

    from monitoring.store import OLD_ALERT_STATE, metadata, runs

    metadata.tables["sw_monitor_runs"].create(store.engine)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {OLD_ALERT_STATE} (model VARCHAR(64), rule VARCHAR(64), "
            "active BOOLEAN, streak INTEGER, since FLOAT, PRIMARY KEY (model, rule))"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {OLD_ALERT_STATE} VALUES ('demo', 'dataset_drift', 1, 0, 5.0)"
        )
        conn.execute(
            runs.insert().values(
                model="demo", version=3, finished_at=1.0, window_end=1.0, rows=1, summary="{}"
            )
        )
    mstore = MonitorStore(store)
    mstore.create_schema()
    assert mstore.alert_states("demo", 3) == {
        "dataset_drift": {"active": True, "streak": 0, "since": 5.0}
    }
    assert not sa.inspect(store.engine).has_table(OLD_ALERT_STATE)
    mstore.create_schema()  # again: nothing to do


def test_the_cli_since_is_a_manual_run_on_the_databases_clock(
    msettings: MonitorSettings, store: PredictionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from servewatch.cli import app as cli

    monkeypatch.setenv("SERVEWATCH_MONITOR_REPORTS_DIR", str(msettings.monitor_reports_dir))
    log_traffic(store, msettings.registry, traffic(50, seed=45), labelled=False)
    common = ["--registry", str(msettings.registry), "--database-url", store.url]
    res = CliRunner().invoke(
        cli, ["monitor", "run", "--model", "demo", "--since", "1h", "--json", *common]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["manual"] and out["rows"] == 50
    assert out["window"]["until"] - out["window"]["since"] == pytest.approx(3600, abs=1)
    assert MonitorStore(store).cursor("demo", 1).rows_until is None  # the schedule is untouched
