"""Each workload runs the image that holds what it does: the `full` image (tag -full) where
Evidently or training run (the monitoring CronJob, a replica that monitors in process), the lean
`serve` image everywhere else."""

from __future__ import annotations

import pytest

from tests.deploy.test_bundle import OVERLAYS, build
from tests.deploy.test_k8s_storage import container_env, pod_spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_runs_the_image_it_needs(overlay: str) -> None:
    docs = build(overlay)
    seen = {}
    for doc in docs:
        pod = pod_spec(doc) if doc["kind"] in ("StatefulSet", "CronJob") else None
        if pod is None:
            continue
        for container in pod["containers"]:
            args = container.get("args", [])
            if args[:1] != ["servewatch"]:
                continue  # e.g. the dev-postgres component's PostgreSQL
            env = container_env(docs, container)
            monitors = args[1:2] in (["monitor"], ["retrain"]) or (
                args[1:2] == ["serve"] and float(env.get("SERVEWATCH_MONITOR_INTERVAL", 300)) > 0
            )
            full = container["image"].endswith("-full")
            assert full == monitors, (overlay, doc["metadata"]["name"], container["image"], args)
            seen[" ".join(args[:2])] = full
    assert seen == {"servewatch serve": overlay == "dev", "servewatch monitor": True,
                    "servewatch log": False}  # fmt: skip
