"""The monitoring CronJob is an Indexed Job: pod K of N runs `monitor run --all --shard K/N`."""

from __future__ import annotations

import base64

import pytest

from monitoring.cli import parse_duration
from monitoring.fleet import parse_shard
from tests.deploy.test_bundle import OVERLAYS, build


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_index_is_one_shard_of_as_many_as_pods(overlay: str) -> None:
    docs = build(overlay)
    cron = next(d for d in docs if d["metadata"]["name"] == "servewatch-monitor")
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"]
    (c,) = job["template"]["spec"]["containers"]
    args = c["args"]
    assert args[:4] == ["servewatch", "monitor", "run", "--all"]
    shard = args[args.index("--shard") + 1]
    # Kubernetes puts $(JOB_COMPLETION_INDEX) in from the container's env: from the index
    index = next(e for e in c["env"] if e["name"] == "JOB_COMPLETION_INDEX")
    assert "job-completion-index" in index["valueFrom"]["fieldRef"]["fieldPath"]
    n = job["completions"]
    parts = [parse_shard(shard.replace("$(JOB_COMPLETION_INDEX)", str(k))) for k in range(n)]
    assert [(p.index, p.count) for p in parts] == [(k, n) for k in range(n)]
    # the slot is the schedule's interval: a retried pod skips what its slot already ran
    minutes = int(cron["spec"]["schedule"].split()[0].removeprefix("*/"))
    assert parse_duration(args[args.index("--slot") + 1]) == minutes * 60
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_dev_postgres_monitors_in_the_sharded_job_on_its_postgresql() -> None:
    docs = build("dev-postgres")
    cron = next(d for d in docs if d["metadata"]["name"] == "servewatch-monitor")
    assert cron["spec"]["suspend"] is False
    secret = next(d for d in docs if d["kind"] == "Secret")
    url = base64.b64decode(secret["data"]["database-url"]).decode()
    assert url.startswith("postgresql://") and "servewatch-postgres" in url
    settings = next(
        d for d in docs if d["kind"] == "ConfigMap" and "settings" in d["metadata"]["name"]
    )
    assert float(settings["data"]["SERVEWATCH_MONITOR_INTERVAL"]) == 0  # not in the replica too
