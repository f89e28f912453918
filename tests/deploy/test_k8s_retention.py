"""The retention CronJob: `servewatch log maintain` against the shared log, where there is one."""

from __future__ import annotations

import pytest

from tests.deploy.test_bundle import OVERLAYS, build


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retention_runs_hourly_against_the_shared_log_and_only_where_one_exists(
    overlay: str,
) -> None:
    docs = build(overlay)
    crons = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    cron = crons["servewatch-retention"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["servewatch", "log", "maintain"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"] if "valueFrom" in e}
    assert secrets == {"database-url"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    settings = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and "servewatch-settings" in d["metadata"]["name"]
    )
    assert float(settings["data"]["SERVEWATCH_LOG_RETENTION_DAYS"]) > 0
    # dev keeps SQLite on the replica's own claim: the replica's loop applies the retention.
    assert bool(cron["spec"].get("suspend")) is overlay.startswith("dev")
