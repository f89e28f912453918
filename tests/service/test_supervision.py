"""No silent stop: every background task (the hot-reload watcher, log maintenance, the monitoring
loop, the log writer) runs under one supervisor. An unexpected error is logged, counted in
servewatch_background_task_failures_total{task}, retried with backoff, and shown by /readyz while
it persists; the task recovers by itself. Faults are injected into the real app (TestClient runs
its lifespan, so the tasks run as in `servewatch serve`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from core.registry import Registry
from monitoring.config import MonitorSettings
from monitoring.loop import monitor_loop
from predlog.store import PredictionStore
from service.config import Settings
from service.main import create_app
from tests.conftest import fast_config
from tests.service.test_logwriter import wait_for
from training.train import run_training


def failures(task: str) -> float:
    value = REGISTRY.get_sample_value("servewatch_background_task_failures_total", {"task": task})
    return value or 0.0


def persists_then_recovers(
    client: TestClient, task: str, heal: Callable[[], None], *, before: float, serving: bool
) -> None:
    """The task fails three times in a row (counted, each retried): /readyz says so; healed,
    the task runs again and /readyz is ready. The Kubernetes probe (`?store=false`) is told only
    of the task this replica's answers depend on (the watcher): maintenance and monitoring fail
    with the store or the reports' volume on every replica at once."""
    wait_for(lambda: failures(task) >= before + 3)
    probe = "/readyz?store=false" if serving else "/readyz"
    wait_for(lambda: client.get(probe).status_code == 503)
    problems = client.get(probe).json()["problems"]
    assert any(f"background task {task} failed" in p for p in problems), problems
    if not serving:
        assert client.get("/readyz?store=false").status_code == 200
    heal()
    wait_for(lambda: client.get(probe).status_code == 200, timeout=20)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"task_retry_s": 0.02, "reload_interval_s": 0.05})


def test_the_watcher_survives_an_unreadable_aliases_file_and_serves_a_later_promotion(
    fast: Settings, clf_csv: Path
) -> None:
    """aliases.json half-written for a moment (a JSONDecodeError while the staging slot of a
    shadowed model is looked up) ended the watcher for good: a promotion was never served."""
    registry = Registry(fast.registry)
    cfg = fast_config(name="demo", data=str(clf_csv), target="label", models=["linear"])
    v2 = run_training(cfg, registry, promote="never").version or 0
    aliases = fast.registry / "demo" / "aliases.json"
    shadowed = fast.model_copy(update={"shadow": ["demo"]})
    with TestClient(create_app(shadowed)) as c:
        good = aliases.read_text()
        aliases.write_text('{"production": {"vers')  # caught mid-write
        time.sleep(0.5)  # several watcher passes see it (not a timing assertion)
        aliases.write_text(good)
        registry.set_alias("demo", "production", v2)
        wait_for(lambda: c.get("/readyz?store=false").json()["models"].get("demo") == v2)
        assert c.get("/readyz?store=false").status_code == 200


def test_a_failing_watcher_is_counted_shown_and_recovers(
    fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = failures("watcher")
    with TestClient(create_app(fast)) as c:
        manager = c.app.state.sw.manager  # type: ignore[attr-defined]

        async def broken(*_: Any, **__: Any) -> None:
            raise RuntimeError("registry mount went away")

        monkeypatch.setattr(manager, "swap", broken)
        persists_then_recovers(c, "watcher", monkeypatch.undo, before=before, serving=True)


def test_a_failing_log_maintenance_is_counted_shown_and_recovers(
    fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error escaping the maintenance loop (here: a pass that returns nothing) used to end
    it with one log line."""
    import predlog.retention

    monkeypatch.setattr(predlog.retention, "maintain", lambda *_: None)
    settings = fast.model_copy(update={"log_maintenance_interval_s": 0.05})
    before = failures("log_maintenance")
    with TestClient(create_app(settings)) as c:
        persists_then_recovers(c, "log_maintenance", monkeypatch.undo, before=before, serving=False)


def test_a_failing_monitoring_loop_is_counted_shown_and_recovers(
    fast: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error outside a model's monitoring run was swallowed, every time, without a word."""
    import monitoring.loop

    def broken(*_: Any) -> list[str]:
        raise OSError(28, "No space left on device", "reports/.monitor.lock")

    monkeypatch.setattr(monitoring.loop, "run_all", broken)
    msettings = MonitorSettings(
        registry=fast.registry,
        database_url=fast.database_url,
        monitor_reports_dir=tmp_path / "reports",
        monitor_interval=0.05,
    )
    store = PredictionStore(fast.database_url)
    before = failures("monitoring")
    app = create_app(fast, background={"monitoring": lambda: monitor_loop(msettings, store)})
    with TestClient(app) as c:
        persists_then_recovers(c, "monitoring", monkeypatch.undo, before=before, serving=False)
