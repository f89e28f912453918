"""Kubernetes keeps the prediction-log spool and gives a stopping pod the time its drain takes.

The spool (SERVEWATCH_SPOOL_DIR) holds the rows the log store could not take: it must be on storage
that outlives the pod (a claim per pod, never an emptyDir, never shared by two pods), and the pod's
terminationGracePeriodSeconds must cover preStop + uvicorn's graceful shutdown + the log writer's
drain and join, each read from the code and the built manifests, not copied here.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_bundle import OVERLAYS, build

ROOT = Path(__file__).resolve().parents[2]
# Beyond the three bounded waits: the batchers close, the last rows are fsynced to the spool, the
# worker processes exit and the supervisor follows. None of these has a timeout of its own.
MARGIN_S = 10


# --- reading the built overlay ----------------------------------------------------------------


def servers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every workload whose container runs `servewatch serve` (the one that owns a spool)."""
    found = []
    for d in docs:
        pod = pod_spec(d)
        if pod and any(c.get("args", [])[:2] == ["servewatch", "serve"] for c in pod["containers"]):
            found.append(d)
    return found


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return template["spec"] if template else None


def server_container(doc: dict[str, Any]) -> dict[str, Any]:
    pod = pod_spec(doc)
    assert pod is not None
    (c,) = [c for c in pod["containers"] if c.get("args", [])[:2] == ["servewatch", "serve"]]
    return c


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """SERVEWATCH_ variables the container gets from its ConfigMaps and literal env entries."""
    env: dict[str, str] = {}
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            env.update(maps[ref["name"]].get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings as the pod sees them (only the ConfigMap and literal env)."""
    import os

    from service.config import Settings

    for key in list(os.environ):
        if key.startswith("SERVEWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


# --- the spool's storage -----------------------------------------------------------------------


def spool_volume_problem(docs: list[dict[str, Any]], workload: dict[str, Any]) -> str | None:
    """Why the workload's spool would be lost with its pod or shared by two pods (None: safe)."""
    c = server_container(workload)
    spool = container_env(docs, c).get("SERVEWATCH_SPOOL_DIR")
    if not spool or not spool.startswith("/"):
        return f"SERVEWATCH_SPOOL_DIR must be an absolute path set in the manifests, got {spool!r}"
    mounts = [
        m
        for m in c.get("volumeMounts", [])
        if spool == m["mountPath"] or spool.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    if not mounts:
        return f"the spool {spool} is on the container's own (read-only) filesystem"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    if mount.get("readOnly"):
        return f"the spool {spool} is on a read-only mount"
    pod = pod_spec(workload)
    assert pod is not None
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    templates = {t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])}
    name = mount["name"]
    if name in volumes:
        vol = volumes[name]
        if "emptyDir" in vol:
            return f"the spool {spool} is on the emptyDir {name!r}: deleted with the pod"
        return (
            f"the spool {spool} is on the pod volume {name!r} ({sorted(set(vol) - {'name'})}): "
            "shared by every replica or gone with the node; use a volumeClaimTemplate"
        )
    if workload["kind"] != "StatefulSet" or name not in templates:
        return f"the spool's volume {name!r} is neither a pod volume nor a claim template"
    modes = set(templates[name]["spec"]["accessModes"])
    if not modes <= {"ReadWriteOnce", "ReadWriteOncePod"}:
        return f"the spool claim {name!r} can be mounted by several pods: {sorted(modes)}"
    policy = workload["spec"].get("persistentVolumeClaimRetentionPolicy", {})
    if policy.get("whenScaled", "Retain") != "Retain":
        return "a scale-down deletes the spool claim (persistentVolumeClaimRetentionPolicy)"
    return None


def quantity_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMGT]i)?", str(text))
    assert match, f"unsupported quantity {text!r}"
    power = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4}.get(match.group(2) or "", 0)
    return int(match.group(1)) * 1024**power


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_spool_outlives_the_pod_and_is_never_shared(overlay: str) -> None:
    docs = build(overlay)
    found = servers(docs)
    assert [w["kind"] for w in found] == ["StatefulSet"], found
    assert spool_volume_problem(docs, found[0]) is None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_spool_claim_holds_the_spool_bound(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = build(overlay)
    (sts,) = servers(docs)
    settings = settings_for(container_env(docs, server_container(sts)), monkeypatch)
    (claim,) = [t for t in sts["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == "data"]
    size = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
    assert size >= settings.spool_max_bytes, (size, settings.spool_max_bytes)


def test_the_spool_check_fails_on_an_emptydir_and_on_a_shared_claim() -> None:
    """The check above can fail: the manifests as they were (an emptyDir), and a shared claim."""
    docs = build("prod")
    (sts,) = servers(docs)
    as_before = copy.deepcopy(sts)
    as_before["spec"].pop("volumeClaimTemplates")
    pod = pod_spec(as_before)
    assert pod is not None
    pod["volumes"].append({"name": "data", "emptyDir": {"sizeLimit": "2Gi"}})
    assert "emptyDir" in (spool_volume_problem(docs, as_before) or "")
    as_before["kind"] = "Deployment"
    assert "emptyDir" in (spool_volume_problem(docs, as_before) or "")

    shared = copy.deepcopy(sts)
    shared["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = ["ReadWriteMany"]
    assert "several pods" in (spool_volume_problem(docs, shared) or "")
    shared = copy.deepcopy(sts)
    shared["spec"].pop("volumeClaimTemplates")
    pod = pod_spec(shared)
    assert pod is not None
    pod["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "one"}})
    assert "shared" in (spool_volume_problem(docs, shared) or "")
    scaled = copy.deepcopy(sts)
    scaled["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = "Delete"
    assert "scale-down" in (spool_volume_problem(docs, scaled) or "")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_and_budget_follow_the_statefulset(overlay: str) -> None:
    docs = build(overlay)
    (sts,) = servers(docs)
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == sts["spec"]["replicas"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    name = sts["spec"]["serviceName"]
    governing = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"].items() <= pod_labels.items()


# --- the grace period --------------------------------------------------------------------------


def resolve(node: ast.expr, settings: Any, where: str) -> float:
    """A number written in the code, or a `settings.<field>` read from the pod's Settings."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "settings"
    ):
        value = getattr(settings, node.attr)
        assert isinstance(value, int | float), (where, node.attr, value)
        return float(value)
    if isinstance(node, ast.Constant) and node.value is None:
        pytest.fail(f"{where}: unbounded (None): no grace period can cover it")
    pytest.fail(f"{where}: cannot compute {ast.unparse(node)!r}; teach this test to read it")


def calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]


def uvicorn_drain_s(settings: Any) -> float:
    """uvicorn's timeout_graceful_shutdown in servewatch/serve.py (requests in flight finish)."""
    path = ROOT / "servewatch/serve.py"
    (call,) = [c for c in calls(path) if ast.unparse(c.func) in ("uvicorn.run", "uvicorn.Config")]
    kw = {k.arg: k.value for k in call.keywords}
    if "timeout_graceful_shutdown" not in kw:
        pytest.fail(f"{path}: uvicorn.run without timeout_graceful_shutdown waits without bound")
    return resolve(kw["timeout_graceful_shutdown"], settings, f"{path}: timeout_graceful_shutdown")


def writer_join_s(settings: Any) -> float:
    """The log writer's close timeout as the service's shutdown calls it (service/runtime.py)."""
    from predlog.logwriter import LogWriter

    path = ROOT / "service/runtime.py"
    found = []
    for c in calls(path):
        if ast.unparse(c.func) == "writer.close":
            found.append((c.args, c.keywords))
        elif c.args and ast.unparse(c.args[0]) == "writer.close":  # run_in_threadpool(writer.close)
            found.append((c.args[1:], c.keywords))
    assert len(found) == 1, f"{path}: expected one writer.close call, found {len(found)}"
    args, keywords = found[0]
    params = [p for p in inspect.signature(LogWriter.close).parameters.values() if p.name != "self"]
    timeouts = [p for p in params if "timeout" in p.name]
    assert len(timeouts) == 1, f"LogWriter.close has no single timeout parameter: {params}"
    param = timeouts[0]
    given = {k.arg: k.value for k in keywords}
    if param.name in given:
        return resolve(given[param.name], settings, f"{path}: writer.close({param.name}=...)")
    index = params.index(param)
    if index < len(args):
        return resolve(args[index], settings, f"{path}: writer.close(...)")
    if param.default is None or param.default is inspect.Parameter.empty:
        pytest.fail("LogWriter.close waits without bound: no grace period can cover it")
    return float(param.default)


def prestop_s(container: dict[str, Any]) -> float:
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    command = hook.get("exec", {}).get("command", [])
    assert command[:1] == ["sleep"] and len(command) == 2, f"preStop not understood: {hook}"
    return float(command[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_drain_and_writer_join(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = build(overlay)
    (sts,) = servers(docs)
    c = server_container(sts)
    settings = settings_for(container_env(docs, c), monkeypatch)
    parts = {
        "preStop": prestop_s(c),
        "uvicorn graceful shutdown": uvicorn_drain_s(settings),
        "log writer drain and join": writer_join_s(settings),
        "margin": MARGIN_S,
    }
    grace = sts["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    assert parts["uvicorn graceful shutdown"] > 0 and parts["log writer drain and join"] > 0
    assert grace >= sum(parts.values()), f"grace {grace} s < {sum(parts.values())} s: {parts}"
