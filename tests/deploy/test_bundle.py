"""The production bundle is valid: Dockerfile, kustomize overlays, alert rules, dashboard names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "dev-postgres", "prod"]


def tool(name: str) -> str:
    return require_tool(name)


def run(
    *cmd: str, cwd: Path = ROOT, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, input=input_text)


def test_dockerfile_passes_hadolint() -> None:
    res = run(tool("hadolint"), "Dockerfile")
    assert res.returncode == 0, res.stdout + res.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "hadolint ignore" not in text


def test_the_images_install_the_extras_each_needs() -> None:
    """`serve` compiles tree models (`fast`: without it they run on scikit-learn, 100x slower per
    row); `full` holds training, monitoring, exact explanations and `fast` (its jobs need them)."""
    text = (ROOT / "Dockerfile").read_text()
    serve = re.search(r"^ARG SERVE_EXTRAS=(\S+)$", text, re.M)
    full = re.search(r"^ARG FULL_EXTRAS=(\S+)$", text, re.M)
    assert serve and full, "the Dockerfile names its extras in ARG SERVE_EXTRAS and FULL_EXTRAS"
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert set(serve.group(1).split(",")) == {"fast"}
    assert full.group(1) == "full"
    (inner,) = extras["full"]
    assert set(re.fullmatch(r"servewatch\[(.+)\]", inner).group(1).split(",")) == {  # type: ignore[union-attr]
        "train",
        "monitor",
        "explain",
        "fast",
    }


def build(overlay: str) -> list[dict[str, Any]]:
    res = run(tool("kubectl"), "kustomize", f"k8s/overlays/{overlay}")
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    docs = build(overlay)
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com")]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    res = run(tool("kubernetes-validate"), "--strict", "-k", "1.30.0", "--quiet", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    kinds = {d["kind"] for d in docs}
    assert {
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "PersistentVolumeClaim",
        "CronJob",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_is_hardened_and_probed(overlay: str) -> None:
    docs = build(overlay)
    dep = next(
        d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "servewatch"
    )
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"].startswith("/readyz")
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= 30
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and "/tmp" in mounts
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"] if "valueFrom" in e}
    assert {"database-url", "admin-token"} <= secrets
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    cron = next(d for d in docs if d["kind"] == "CronJob")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["servewatch", "monitor", "run"]
    if overlay == "prod":
        assert dep["spec"]["replicas"] >= 3 and not cron["spec"].get("suspend")
        assert not any(
            d["kind"] == "Secret" for d in docs
        )  # created by the operator, never committed
    else:
        # dev monitors in the replica (SQLite); dev-postgres in the sharded CronJob
        assert dep["spec"]["replicas"] == 1 and cron["spec"]["suspend"] is (overlay == "dev")


def test_operator_objects_have_the_fields_the_operator_requires() -> None:
    docs = build("prod")
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "servewatch")
    others = [d for d in docs if d["kind"] == "Service" and d is not svc]
    # One scrape per pod: no other Service may carry the labels the ServiceMonitor selects.
    for other in others:
        labels = other["metadata"].get("labels", {})
        assert not sm["spec"]["selector"]["matchLabels"].items() <= labels.items(), other
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert all(e["port"] in port_names for e in sm["spec"]["endpoints"])
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}
            assert r["alert"] and r["expr"] and r["labels"]["severity"]


def test_prometheusrule_is_generated_from_the_rules_file() -> None:
    res = run(sys.executable, "scripts/build_prometheusrule.py", "--check")
    assert res.returncode == 0, res.stdout


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    promtool = tool("promtool")
    res = run(promtool, "check", "rules", "deploy/prometheus/rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    spec = yaml.safe_load((ROOT / "k8s/base/prometheusrule.yaml").read_text())["spec"]
    (tmp_path / "from_crd.yml").write_text(yaml.safe_dump(spec))
    assert run(promtool, "check", "rules", str(tmp_path / "from_crd.yml")).returncode == 0
    res = run(promtool, "test", "rules", "rules.test.yml", cwd=ROOT / "deploy/prometheus")
    assert res.returncode == 0, res.stdout + res.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tested = set(
        re.findall(r"alertname: (\w+)", (ROOT / "deploy/prometheus/rules.test.yml").read_text())
    )
    assert alerts == tested, f"alerts without a promtool test: {alerts - tested}"


def queried_metric_names() -> set[str]:
    texts = [
        (ROOT / "deploy/prometheus/rules.yml").read_text(),
        json.dumps(json.loads((ROOT / "deploy/grafana/servewatch.json").read_text())["panels"]),
        json.dumps(json.loads((ROOT / "deploy/grafana/servewatch.json").read_text())["templating"]),
    ]
    return {m for t in texts for m in re.findall(r"\bservewatch_[a-z0-9_]+", t)}


def test_dashboard_is_provisioning_ready() -> None:
    dash = json.loads((ROOT / "deploy/grafana/servewatch.json").read_text())
    assert dash["uid"] == "servewatch"
    assert any(v["type"] == "datasource" for v in dash["templating"]["list"])
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in (
        "traffic",
        "latency",
        "error",
        "batch",
        "class",
        "validation",
        "drift",
        "estimated",
        "alerts",
        "queue",
    ):
        assert word in titles
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"


def wait_until_logged(store: Any, rows: int, timeout_s: float = 30) -> None:
    """Answered rows reach the log within a flush interval; monitoring reads only what landed."""
    deadline = time.monotonic() + timeout_s
    while store.count_predictions() < rows:
        assert time.monotonic() < deadline, f"fewer than {rows} rows logged in {timeout_s} s"
        time.sleep(0.05)


def test_every_queried_metric_is_exported_by_the_service(
    tmp_path: Path, registry_copy: Path
) -> None:
    """Start the service, send traffic, run monitoring, scrape: no panel or rule can go blank."""
    from monitoring.config import MonitorSettings
    from monitoring.runner import run_monitoring
    from predlog.store import PredictionStore
    from tests.service.conftest import Server, example

    db = f"sqlite:///{tmp_path}/log.db"
    env = {
        "SERVEWATCH_REGISTRY": str(registry_copy),
        "SERVEWATCH_DATABASE_URL": db,
        "SERVEWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "SERVEWATCH_MONITOR_INTERVAL": "0",
        "SERVEWATCH_MONITOR_REPORTS_DIR": str(tmp_path / "reports"),
    }
    server = Server(env, workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            shifted = {**example(), "x1": 40.0, "x2": 90.0}
            for _ in range(30):
                res = c.post("/v1/models/demo/predict", json={"instances": [shifted] * 10})
                ids = [p["prediction_id"] for p in res.json()["predictions"]]
                c.post(
                    "/v1/models/demo/feedback",
                    json={"labels": [{"prediction_id": i, "label": "no"} for i in ids]},
                )
            c.post("/v1/models/demo/predict", json={"instances": [{"x1": "bad"}]})
            c.post(
                "/v1/models/demo/predict",
                content=b"{",
                headers={"content-type": "application/json"},
            )
            wait_until_logged(PredictionStore(db), 300)
            run_monitoring(
                settings=MonitorSettings(
                    registry=registry_copy,
                    database_url=db,
                    monitor_reports_dir=tmp_path / "reports",
                    evidently_workspace=str(tmp_path / "evidently"),  # its gauges are queried
                ),
                store=PredictionStore(db),
                model="demo",
                notifiers=[],
            )
            from predlog.retention import maintain  # issue 17: log maintenance's metrics

            maintain(PredictionStore(db), 30.0)
            text = c.get("/metrics").text
    finally:
        server.stop()
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line.startswith("servewatch_")
    }
    # Canary and shadow metrics appear only while a canary or shadow runs: they must be declared.
    from prometheus_client import REGISTRY

    import service.metrics  # noqa: F401  (declares every service metric)

    declared = set(REGISTRY._names_to_collectors)
    mode_specific = {
        "servewatch_canary_rollbacks_total",
        "servewatch_shadow_predictions_total",
        "servewatch_staging_info",
    }
    assert mode_specific <= declared
    missing = sorted(queried_metric_names() - exported - mode_specific)
    assert not missing, f"queried but not exported: {missing}"
