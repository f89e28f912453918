"""A monitoring run commits (report, run record, alert states) before it acts (notifies, withdraws
a canary): a run whose commit fails sends nothing, and the next run sends each alert once."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.registry import Registry
from monitoring.alerts import Alert, AlertContext
from monitoring.config import MonitorSettings
from monitoring.runner import MonitorError, run_monitoring
from monitoring.store import MonitorStore
from predlog.store import PredictionStore
from tests.monitoring.conftest import log_traffic, traffic
from tests.monitoring.test_canary_judgement import two_versions, worse_canary  # noqa: F401


class Recorder:
    """A notifier that keeps what it is sent, and how many runs were stored when it was sent."""

    def __init__(self, store: PredictionStore, model: str) -> None:
        self.mstore, self.model = MonitorStore(store), model
        self.sent: list[tuple[str, str]] = []
        self.stored_runs: list[int] = []

    def send(self, alerts: list[Alert], context: AlertContext) -> None:
        self.sent += [(a.rule, a.status) for a in alerts]
        self.stored_runs.append(len(self.mstore.latest(self.model, 100)))


def _fail_once(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The commit's report-folder rename, or its store write, raises once."""
    if where == "rename":
        real_rename = os.rename

        def rename(src: Any, dst: Any) -> None:
            if ".tmp-" in str(src):
                monkeypatch.setattr(os, "rename", real_rename)
                raise OSError(28, "No space left on device")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", rename)
    else:
        real_save = MonitorStore.save_run

        def save_run(*_a: object, **_k: object) -> int:
            monkeypatch.setattr(MonitorStore, "save_run", real_save)
            raise RuntimeError("the database went away")

        monkeypatch.setattr(MonitorStore, "save_run", save_run)


@pytest.mark.parametrize("where", ["rename", "store"])
def test_a_run_whose_commit_fails_notifies_no_one_and_the_next_notifies_once(
    msettings: MonitorSettings,
    store: PredictionStore,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    recorder = Recorder(store, "demo")

    def run() -> Any:
        return run_monitoring(settings=msettings, store=store, model="demo", notifiers=[recorder])

    log_traffic(store, msettings.registry, traffic(600, seed=5, shift=2.0))
    _fail_once(monkeypatch, where)
    with pytest.raises((MonitorError, RuntimeError)):
        run()
    assert recorder.sent == []  # the commit failed: nothing sent
    assert MonitorStore(store).latest("demo") == []
    first = run()
    fired = {(a["rule"], a["status"]) for a in first["transitions"]}
    assert ("out_of_range", "firing") in fired
    assert set(recorder.sent) == fired and recorder.stored_runs == [1]  # sent after the commit
    log_traffic(store, msettings.registry, traffic(600, seed=6, shift=2.0))
    second = run()
    assert not {(a["rule"], a["status"]) for a in second["transitions"]} & fired
    assert all(n == 1 for n in Counter(recorder.sent).values()), recorder.sent
    assert first["notifier_errors"] == [] == second["notifier_errors"]


def test_a_failing_notifier_is_recorded_in_the_committed_run(
    msettings: MonitorSettings, store: PredictionStore
) -> None:
    class Down:
        def send(self, alerts: list[Alert], context: AlertContext) -> None:
            raise ConnectionError("refused")

    log_traffic(store, msettings.registry, traffic(600, seed=5, shift=2.0))
    s = run_monitoring(settings=msettings, store=store, model="demo", notifiers=[Down()])
    assert s["notifier_errors"] and "refused" in s["notifier_errors"][0]
    stored = MonitorStore(store).latest("demo")[0]["summary"]
    assert stored["notifier_errors"] == s["notifier_errors"]
    on_disk = (Path(s["report_dir"]) / "summary.json").read_text()
    assert "refused" in on_disk


def test_a_worse_canary_is_withdrawn_only_after_the_run_is_committed(
    two_versions: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, store, settings = worse_canary(two_versions, tmp_path, 3)
    recorder = Recorder(store, "m")
    withdrawn_after: list[int] = []
    real_clear = Registry.clear_alias

    def clear_alias(self: Registry, model: str, alias: str) -> None:
        withdrawn_after.append(len(MonitorStore(store).latest("m", 100)))
        real_clear(self, model, alias)

    monkeypatch.setattr(Registry, "clear_alias", clear_alias)
    try:
        _fail_once(monkeypatch, "store")
        with pytest.raises(RuntimeError):
            run_monitoring(settings=settings, store=store, model="m", notifiers=[recorder])
        assert registry.alias_version("m", "staging") == 2 and withdrawn_after == []
        assert recorder.sent == []
        s = run_monitoring(settings=settings, store=store, model="m", notifiers=[recorder])
        assert s["canary"]["worse"] and s["canary"]["withdrawn"]
        assert registry.alias_version("m", "staging") is None
        assert withdrawn_after == [1]  # cleared once, with the run already stored
        assert ("canary_performance", "firing") in recorder.sent and recorder.stored_runs == [1]
    finally:
        registry.set_alias("m", "staging", 2)
