"""Evidently's UI beside the service: a Deployment and Service hardened like the rest, fed by the
monitoring CronJob through the Service's API, and linked from the Grafana dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_bundle import OVERLAYS, build
from tests.deploy.test_k8s_storage import container_env, pod_spec

ROOT = Path(__file__).resolve().parents[2]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ui_runs_hardened_like_the_service_on_its_own_claim(overlay: str) -> None:
    docs = build(overlay)
    ui = named(docs, "Deployment", "servewatch-evidently")
    server = pod_spec(named(docs, "StatefulSet", "servewatch"))
    pod = pod_spec(ui)
    assert pod is not None and server is not None
    assert pod["securityContext"] == server["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["securityContext"] == server["containers"][0]["securityContext"]
    assert c["args"][:3] == ["servewatch", "monitor", "ui"]
    args = dict(zip(c["args"][3::2], c["args"][4::2], strict=True))
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[args["--workspace"]]]["persistentVolumeClaim"]["claimName"]
    pvc = named(docs, "PersistentVolumeClaim", claim)
    # one writer: the UI holds the workspace in memory and owns its folder
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and ui["spec"]["replicas"] == 1
    assert ui["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e for e in c["env"]}
    assert env["DO_NOT_TRACK"]["value"] == "1"
    assert "/tmp" in mounts  # read-only root: anything Evidently writes outside the workspace
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    assert args["--port"] == str(port) and args["--host"] == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/api/version", "port": "http"}
    svc = named(docs, "Service", "servewatch-evidently")
    labels = ui["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # the monitoring runs send to this Service, with the same secret the UI checks writes by
    cron = named(docs, "CronJob", "servewatch-monitor")
    (monitor,) = pod_spec(cron)["containers"]  # type: ignore[index]
    location = container_env(docs, monitor)["SERVEWATCH_EVIDENTLY_WORKSPACE"]
    assert location == f"http://{svc['metadata']['name']}"  # port 80
    assert svc["spec"]["ports"][0]["port"] == 80
    token = next(e for e in monitor["env"] if e["name"] == "SERVEWATCH_EVIDENTLY_TOKEN")
    assert token["valueFrom"] == env["EVIDENTLY_SECRET"]["valueFrom"]
    # pending snapshots wait on the reports claim, which the CronJob mounts
    reports = container_env(docs, monitor)["SERVEWATCH_MONITOR_REPORTS_DIR"]
    assert reports in {m["mountPath"] for m in monitor["volumeMounts"]}


def test_the_grafana_dashboard_links_a_model_to_its_evidently_project() -> None:
    dash = json.loads((ROOT / "deploy/grafana/servewatch.json").read_text())
    names = {v["name"] for v in dash["templating"]["list"]}
    assert "evidently_url" in names
    linked = [
        p
        for p in dash["panels"]
        if any(
            link["url"] == "${evidently_url}/projects/${__field.labels.project_id}"
            for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        )
    ]
    assert {p["title"] for p in linked} >= {
        "Dataset drift share",
        "Realised vs estimated performance, with noise bands",
    }
    for p in linked:  # the series carry the project id (and models without one still show);
        # the figure's own series (the first target), not the noise bands drawn beside it
        target = p["targets"][0]
        # one project series per model, whichever replica was scraped
        joined = (
            "group_left (project_id) max by (model, project_id) (servewatch_evidently_project_info)"
        )
        assert joined in target["expr"]
        assert "unless on (model) servewatch_evidently_project_info" in target["expr"]
