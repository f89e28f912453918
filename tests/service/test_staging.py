"""Shadow and canary versions beside production."""

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from core.registry import Registry
from monitoring.config import MonitorSettings
from monitoring.runner import run_monitoring
from predlog.backfill import backfill
from predlog.store import PredictionStore
from service.config import Settings
from service.inference.model import LoadedModel
from service.main import create_app
from tests.conftest import fast_config
from tests.service.conftest import example
from training.train import run_training


@pytest.fixture
def with_staging(registry_copy: Path, clf_csv: Path) -> Path:
    """demo v1 in production; v2 (a different model: x1 left out) at the staging alias."""
    cfg = fast_config(
        name="demo",
        data=str(clf_csv),
        target="label",
        models=["linear"],
        features={"datetime": ["when"], "drop": ["x1"]},
    )
    result = run_training(cfg, Registry(registry_copy), promote="never")
    Registry(registry_copy).set_alias("demo", "staging", result.version or 0)
    return registry_copy


def settings_for(registry: Path, tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "registry": registry,
        "database_url": f"sqlite:///{tmp_path}/log.db",
        "spool_dir": tmp_path / "spool",
        "reload_interval_s": 0,
    }
    return Settings(**{**base, **kw})


def instances(n: int) -> list[dict[str, Any]]:
    return [{**example(), "x1": -2 + 4 * i / n} for i in range(n)]


def test_shadow_logs_staging_answers_and_leaves_production_unchanged(
    with_staging: Path, tmp_path: Path
) -> None:
    settings = settings_for(with_staging, tmp_path, shadow=["demo"])
    batch = instances(20)
    with TestClient(create_app(settings)) as c:
        res = c.post("/v1/models/demo/predict", json={"instances": batch}).json()
    prod = LoadedModel.load(Registry(with_staging), "demo", 1)
    expected = prod.predict_columns({k: [r[k] for r in batch] for k in batch[0]})
    assert res["version"] == 1
    assert [p["probabilities"] for p in res["predictions"]] == expected.probabilities
    rows = PredictionStore(settings.database_url).read_window("demo")
    shadow = [r for r in rows if r["shadow"]]
    answered = {p["prediction_id"] for p in res["predictions"]}
    assert len(shadow) == 20 and {r["version"] for r in shadow} == {2}
    assert {r["ref_id"] for r in shadow} == answered
    assert not answered & {r["id"] for r in shadow}
    # the monitoring run reports agreement and both versions' performance
    store = PredictionStore(settings.database_url)
    with TestClient(create_app(settings)) as c:
        c.post(
            "/v1/models/demo/feedback",
            json={
                "labels": [
                    {"prediction_id": p["prediction_id"], "label": "yes"}
                    for p in res["predictions"]
                ]
            },
        )
    summary = run_monitoring(
        settings=MonitorSettings(
            registry=with_staging, database_url=store.url, monitor_reports_dir=tmp_path / "r"
        ),
        store=store,
        model="demo",
        notifiers=[],
    )
    report = summary["shadow"]
    assert report["shadow_version"] == 2 and report["production_version"] == 1
    # Expected figures from the logged rows themselves: each shadow answer against the production
    # answer it shadows (by ref_id); every label is "yes", so accuracy is the share answering "yes".
    answers = {r["id"]: orjson.loads(r["prediction"]) for r in rows if not r["shadow"]}
    pairs = [(answers[r["ref_id"]], orjson.loads(r["prediction"])) for r in shadow]
    # The shadow rows hold v2's own answers (not production's copied), so agreement is measured.
    v2 = LoadedModel.load(Registry(with_staging), "demo", 2)
    by_id = {r["ref_id"]: orjson.loads(r["prediction"]) for r in shadow}
    own = v2.predict_columns({k: [r[k] for r in batch] for k in batch[0]}).predictions
    assert [by_id[p["prediction_id"]] for p in res["predictions"]] == own
    assert [answers[p["prediction_id"]] for p in res["predictions"]] == expected.predictions
    assert report["rows"] == 20
    assert report["agreement"] == pytest.approx(sum(a == b for a, b in pairs) / len(pairs))
    assert report["labelled_rows"] == 20
    for side, index in (("production", 0), ("shadow", 1)):
        hits = sum(pair[index] == "yes" for pair in pairs) / len(pairs)
        assert report[f"{side}_realised"]["accuracy"] == pytest.approx(hits), side


def test_canary_share_is_respected_and_sticky_by_key(with_staging: Path, tmp_path: Path) -> None:
    settings = settings_for(with_staging, tmp_path, canary={"demo": 0.3})
    with TestClient(create_app(settings)) as c:
        versions = [
            c.post(
                "/v1/models/demo/predict",
                json={"instances": [example()]},
                headers={"x-request-key": f"user-{i}"},
            ).json()["version"]
            for i in range(400)
        ]
        again = [
            c.post(
                "/v1/models/demo/predict",
                json={"instances": [example()]},
                headers={"x-request-key": f"user-{i}"},
            ).json()["version"]
            for i in range(50)
        ]
    share = versions.count(2) / len(versions)
    assert 0.23 <= share <= 0.37, share
    assert again == versions[:50]  # the same key always lands on the same version


def test_a_broken_canary_is_rolled_back(with_staging: Path, tmp_path: Path) -> None:
    settings = settings_for(with_staging, tmp_path, canary={"demo": 0.5}, canary_min_requests=10)
    before = (
        REGISTRY.get_sample_value(
            "servewatch_canary_rollbacks_total",
            {"model": "demo", "version": "2", "reason": "errors"},
        )
        or 0
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        staging = c.app.state.sw.manager.staging["demo"].model  # type: ignore[attr-defined]

        def broken(_columns: dict[str, list[Any]]) -> Any:
            raise RuntimeError("canary bug")

        staging.predict_columns = broken
        codes = [
            c.post("/v1/models/demo/predict", json={"instances": [example()]}).status_code
            for _ in range(80)
        ]
        after_stop = [
            c.post("/v1/models/demo/predict", json={"instances": [example()]}) for _ in range(30)
        ]
    assert 500 in codes  # the canary did fail ...
    assert all(
        r.status_code == 200 and r.json()["version"] == 1 for r in after_stop
    )  # ... then stopped
    after = REGISTRY.get_sample_value(
        "servewatch_canary_rollbacks_total", {"model": "demo", "version": "2", "reason": "errors"}
    )
    assert after == before + 1


def test_bad_canary_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Settings(canary="demo:1.5")
    with pytest.raises(ValueError, match="NAME:SHARE"):
        Settings(canary="demo")
    with pytest.raises(ValueError, match="both a shadow and a canary"):
        Settings(canary="demo:0.1", shadow="demo")


def test_a_canary_with_worse_realised_performance_is_withdrawn(
    with_staging: Path, tmp_path: Path
) -> None:
    """Monitoring compares labelled canary rows with production's and clears the staging alias;
    the service then stops routing to the canary."""
    import time

    store = PredictionStore(f"sqlite:///{tmp_path}/log.db")
    store.create_schema()
    reg = Registry(with_staging)
    for version, honest in ((1, True), (2, False)):
        model = LoadedModel.load(reg, "demo", version)
        batch = instances(200)
        predicted = model.predict_columns({k: [r[k] for r in batch] for k in batch[0]})
        # production is always right; the canary's labels have nothing to do with its answers
        labels = [
            p if honest else ("yes" if k % 2 else "no") for k, p in enumerate(predicted.predictions)
        ]
        backfill(store, model, batch, labels=labels)
    settings = settings_for(with_staging, tmp_path, canary={"demo": 0.5}, reload_interval_s=0.1)
    with TestClient(create_app(settings)) as c:
        manager = c.app.state.sw.manager  # type: ignore[attr-defined]
        assert "demo" in manager.staging
        summary = run_monitoring(
            settings=MonitorSettings(
                registry=with_staging, database_url=store.url, monitor_reports_dir=tmp_path / "r"
            ),
            store=store,
            model="demo",
            notifiers=[],
        )
        canary = summary["canary"]
        assert canary["version"] == 2 and canary["worse"] and canary["withdrawn"], canary
        assert "canary_performance" in {a["rule"] for a in summary["alerts"]}
        assert reg.alias_version("demo", "staging") is None
        for _ in range(100):
            if "demo" not in manager.staging:
                break
            time.sleep(0.05)
        assert "demo" not in manager.staging
        versions = {
            c.post("/v1/models/demo/predict", json={"instances": [example()]}).json()["version"]
            for _ in range(20)
        }
    assert versions == {1}


def test_shadow_calls_are_bounded_and_a_dropped_shadow_never_touches_the_answer(
    with_staging: Path, tmp_path: Path
) -> None:
    """With `shadow_max_inflight` shadow calls already running, a request's shadow is dropped
    and counted; the request is answered by production as always, and shadowed again once a
    slot is free (before: a shadow task was spawned per request, without bound)."""
    settings = settings_for(with_staging, tmp_path, shadow=["demo"], shadow_max_inflight=2)

    def dropped() -> float:
        labels = {"model": "demo", "version": "2", "result": "dropped"}
        return REGISTRY.get_sample_value("servewatch_shadow_predictions_total", labels) or 0.0

    before = dropped()
    batch = instances(5)
    with TestClient(create_app(settings)) as c:
        plane = c.app.state.sw.plane  # type: ignore[attr-defined]
        plane._shadows = 2  # two shadow calls in flight (as under a burst)
        busy = c.post("/v1/models/demo/predict", json={"instances": batch})
        assert busy.status_code == 200
        assert dropped() == before + 5
        plane._shadows = 0
        free = c.post("/v1/models/demo/predict", json={"instances": batch})
    assert [p["probabilities"] for p in busy.json()["predictions"]] == [
        p["probabilities"] for p in free.json()["predictions"]
    ]
    rows = PredictionStore(settings.database_url).read_window("demo")
    shadowed = {r["ref_id"] for r in rows if r["shadow"]}
    assert shadowed == {p["prediction_id"] for p in free.json()["predictions"]}
    assert plane._shadows == 0  # every shadow call that ran gave its slot back
