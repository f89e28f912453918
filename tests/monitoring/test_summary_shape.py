"""The monitoring summary's JSON shape is a contract: stored runs, summary.json and the HTTP
response keep every key, in order, with the same kinds of values; summaries stored by older
releases and failed runs (fewer keys) are still read by the gauges, the routes and the loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from core.registry import Registry
from monitoring.collector import MonitoringCollector
from monitoring.config import MonitorSettings
from monitoring.routes import make_router
from monitoring.runner import _shadow_report, run_monitoring
from monitoring.store import MonitorStore
from predlog.backfill import backfill
from predlog.store import PredictionStore
from service.inference.model import LoadedModel
from tests.monitoring.conftest import FEATURES, log_traffic, traffic


def skeleton(value: Any) -> Any:
    """Keys in order and the JSON kind of every leaf; a list by its first item."""
    if isinstance(value, dict):
        return [[k, skeleton(v)] for k, v in value.items()]
    if isinstance(value, list):
        return [skeleton(value[0])] if value else []
    return type(value).__name__


def with_canary(registry: Path) -> None:
    """demo v2 (a copy of v1) at the staging alias."""
    shutil.copytree(registry / "demo" / "1", registry / "demo" / "2")
    manifest = registry / "demo" / "2" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 2}))
    Registry(registry).set_alias("demo", "staging", 2)


def log_canary(store: PredictionStore, registry: Path, frame: Any) -> None:
    model = LoadedModel.load(Registry(registry), "demo", 2)
    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    flipped = frame["label"].map({"yes": "no", "no": "yes"}).tolist()
    backfill(store, model, rows.to_dict(orient="records"), labels=flipped)


def test_summary_shape_is_the_same_in_the_return_value_the_files_the_store_and_http(
    msettings: MonitorSettings, store: PredictionStore, tmp_path: Path
) -> None:
    msettings = msettings.model_copy(update={"evidently_workspace": str(tmp_path / "evidently")})
    with_canary(msettings.registry)
    log_traffic(store, msettings.registry, traffic(400, seed=4, shift=2.0))
    log_canary(store, msettings.registry, traffic(300, seed=5))
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])
    stored = MonitorStore(store).latest("demo")[0]["summary"]
    # the stored row is the returned summary through orjson (NaN becomes null)
    assert stored == orjson.loads(orjson.dumps(s, option=orjson.OPT_SERIALIZE_NUMPY))
    on_disk = json.loads((Path(s["report_dir"]) / "summary.json").read_text())
    # report_dir and the Evidently snapshot's outcome are added after the files are written
    after = ("report_dir", "evidently")
    assert skeleton(on_disk) == [kv for kv in skeleton(stored) if kv[0] not in after]
    app = FastAPI()
    app.include_router(make_router(MonitorStore(store)))
    with TestClient(app) as c:
        body = c.get("/v1/models/demo/monitoring").json()
    assert body["latest"] == stored
    assert list(body["history"][0]) == ["finished_at", "version", "rows", "drifted_share", "alerts"]
    top = [k for k, _ in skeleton(stored)]
    assert top == [
        "model", "version", "status", "manual", "started_at", "window", "rows", "rows_in_window",
        "labelled_rows", "metric", "test_score", "reference", "baseline", "quality", "performance",
        "canary", "explanation_drift", "drift", "prediction_drift", "alerts", "transitions",
        "notifier_errors", "finished_at", "seconds", "report_dir", "evidently",
    ]  # fmt: skip
    shape = dict(skeleton(stored))
    assert shape["evidently"] == [
        ["workspace", "str"], ["saved", "bool"], ["project_id", "str"], ["snapshot_id", "str"],
        ["sent", "int"], ["removed", "int"], ["pending", "int"],
    ]  # fmt: skip
    assert shape["window"] == [["start", "float"], ["end", "float"], ["since", "NoneType"],
                               ["until", "float"], ["carried", "bool"],
                               ["labels_since", "NoneType"], ["labels_until", "float"]]  # fmt: skip
    assert dict(shape["drift"])["columns"][0][1] == [
        ["column", "str"], ["method", "str"], ["score", "float"], ["threshold", "float"],
        ["drifted", "bool"],
    ]  # fmt: skip
    assert [k for k, _ in shape["prediction_drift"]] == [
        "column", "method", "score", "threshold", "drifted", "reference_shares", "current_shares",
    ]  # fmt: skip
    assert [k for k, _ in shape["quality"]] == [
        "missing_share", "missing_increase", "unseen_category_share", "out_of_range_share",
    ]  # fmt: skip
    assert shape["reference"] == [["drawn_from", "str"], ["unseen", "bool"], ["note", "str"]]
    assert [k for k, _ in shape["performance"]] == [
        "realised", "estimated", "reference_estimated", "unusable_labels", "realised_rows", "noise",
    ]  # fmt: skip
    noise = dict(dict(shape["performance"])["noise"])
    assert list(noise) == ["confidence", "source", "note", "realised", "estimated"]
    assert [k for k, _ in noise["realised"]] == ["rows", "widths"]
    assert shape["canary"] == [
        ["version", "int"], ["rows", "int"], ["labelled_rows", "int"], ["labels_since", "NoneType"],
        ["realised", "float"], ["production", "float"], ["worse_by", "float"], ["limit", "float"],
        ["band", "float"], ["worse", "bool"], ["withdrawn", "bool"],
    ]  # fmt: skip
    assert [k for k, _ in shape["explanation_drift"]] == ["method", "features", "rows"]
    assert dict(shape["explanation_drift"])["features"][0][1] == [
        ["reference", "float"], ["current", "float"], ["change", "float"], ["band", "float"],
    ]  # fmt: skip
    assert shape["alerts"] == [[
        ["model", "str"], ["version", "int"], ["rule", "str"], ["status", "str"],
        ["severity", "str"], ["value", "float"], ["threshold", "float"], ["message", "str"],
        ["since", "float"],
    ]]  # fmt: skip
    assert shape["notifier_errors"] == []


def test_shadow_report_shape() -> None:
    def row(pred: str, label: str | None) -> dict[str, Any]:
        proba = orjson.dumps({"yes": 0.7, "no": 0.3} if pred == "yes" else {"yes": 0.2, "no": 0.8})
        return {
            "shadow_version": 2,
            "shadow_prediction": orjson.dumps(pred),
            "shadow_probabilities": proba,
            "production_version": 1,
            "production_prediction": orjson.dumps("yes"),
            "production_probabilities": orjson.dumps({"yes": 0.7, "no": 0.3}),
            "label": None if label is None else orjson.dumps(label),
        }

    rows = [row("yes", "yes"), row("no", "no"), row("no", None)]
    report = _shadow_report(rows, ["no", "yes"])  # type: ignore[arg-type]
    assert [k for k, _ in skeleton(report)] == [
        "shadow_version", "production_version", "rows", "agreement", "production_realised",
        "shadow_realised", "labelled_rows",
    ]  # fmt: skip
    assert report["agreement"] == 1 / 3 and report["labelled_rows"] == 2
    assert report["shadow_realised"]["accuracy"] == 1.0
    assert report["production_realised"]["accuracy"] == 0.5


OLD_RELEASE = {  # as the first release stored it: no status, until, canary, unusable_labels
    "model": "demo",
    "version": 1,
    "started_at": 1.0,
    "window": {"start": 0.5, "end": 0.9, "since": None},
    "rows": 300,
    "rows_in_window": 300,
    "labelled_rows": 0,
    "metric": "roc_auc",
    "test_score": 0.9,
    "drift": {"drifted_share": 0.5, "drifted_count": 1,
              "columns": {"x1": {"column": "x1", "method": "K-S p_value", "score": 0.01,
                                 "threshold": 0.05, "drifted": True}}},
    "quality": {"missing_share": {}, "missing_increase": {}, "unseen_category_share": {},
                "out_of_range_share": {}},
    "performance": {"realised": None, "estimated": {"roc_auc": 0.8}, "reference_estimated": None},
    "alerts": [{"model": "demo", "version": 1, "rule": "dataset_drift", "status": "firing",
                "severity": "warning", "value": 0.5, "threshold": 0.4, "message": "m",
                "since": 1.0}],
    "transitions": [],
    "notifier_errors": [],
    "finished_at": 2.0,
    "seconds": 1.0,
}  # fmt: skip
FAILED = {
    "model": "demo",
    "version": 1,
    "status": "failed",
    "started_at": 3.0,
    "window": {"start": 2.5, "end": 2.9, "since": 2.0, "until": 2.95},
    "rows": 300,
    "rows_in_window": 300,
    "labelled_rows": 0,
    "metric": None,
    "test_score": None,
    "error": "ValueError: boom",
    "finished_at": 4.0,
}


def test_old_and_failed_summaries_are_read_back_as_they_were_stored(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    mstore = MonitorStore(store)
    mstore.create_schema()
    old_model = {**OLD_RELEASE, "model": "old"}
    for summary, end in ((OLD_RELEASE, 1.0), (FAILED, 2.95), (old_model, 1.0)):
        mstore.save_run(
            model=str(summary["model"]),
            version=1,
            window_end=end,
            rows=300,
            summary=summary,  # type: ignore[arg-type]
            report_dir=None,
            alert_states={},
        )
    runs = mstore.latest("demo", 5)
    assert [r["summary"] for r in runs] == [FAILED, OLD_RELEASE]
    reg = CollectorRegistry()
    reg.register(MonitoringCollector(mstore, cache_s=0))
    text = generate_latest(reg).decode()
    assert 'servewatch_monitor_rows{model="demo",version="1"} 300.0' in text
    assert 'servewatch_drift_share{model="old",version="1"} 0.5' in text
    assert 'servewatch_alert_active{model="old",rule="dataset_drift",severity="warning"' in text
    assert 'servewatch_model_performance{kind="estimated",metric="roc_auc",model="old"' in text
    app = FastAPI()
    app.include_router(make_router(mstore))
    with TestClient(app) as c:
        body = c.get("/v1/models/demo/monitoring").json()
    assert body["latest"] == FAILED
    assert body["history"][0] == {"finished_at": runs[0]["finished_at"], "version": 1,
                                  "rows": 300, "drifted_share": None, "alerts": []}  # fmt: skip
    assert body["history"][1]["drifted_share"] == 0.5
    assert body["history"][1]["alerts"] == ["dataset_drift"]
    # the next run starts after the failed run's window
    log_traffic(store, msettings.registry, traffic(250, seed=3))
    assert (
        run_monitoring(settings=msettings, store=store, model="demo", notifiers=[])["window"][
            "since"
        ]
        == 2.95
    )
