"""The distributed search's Indexed Job (k8s/overlays/dev-postgres-train): valid, one worker per
pod on the dev-postgres PostgreSQL, args the real `servewatch train` accepts, a config it loads."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import typer
import yaml

from tests.deploy.test_bundle import build
from tests.deploy.test_bundle import (
    test_overlay_builds_and_validates_strictly as validates_strictly,
)
from training.config import TrainConfig
from training.distributed import NAME_RULE

OVERLAY = "dev-postgres-train"


def job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "Job"]
    return found


def test_the_training_overlay_validates_strictly(tmp_path: Path) -> None:
    validates_strictly(OVERLAY, tmp_path)  # as the service's overlays (tests/deploy/test_bundle.py)
    # the service overlays start no search: the Job is only in this one
    assert not [d for d in build("dev-postgres") if d["kind"] == "Job"]


def test_each_pod_is_one_worker_of_one_study_and_a_lost_pod_is_retried() -> None:
    spec = job(build(OVERLAY))["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["backoffLimitPerIndex"] >= 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in c["env"]}
    assert NAME_RULE.fullmatch(env["SERVEWATCH_STUDY"]["value"])
    # each pod's native threads are its CPU request, not the node's cores
    threads = env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert threads["resource"] == "requests.cpu" and threads["containerName"] == c["name"]
    assert "cpu" in c["resources"]["requests"]


def test_the_args_are_ones_servewatch_train_takes() -> None:
    from servewatch.cli import app

    docs = build(OVERLAY)
    (c,) = job(docs)["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["servewatch", "train"]
    train = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    args = [a.replace("$(SERVEWATCH_STUDY)", "study") for a in c["args"][2:]]
    ctx = train.make_context("train", list(args))  # click consumes the list it parses
    assert ctx.params["study"] == "study" and ctx.params["workers"] == 1
    # --worker-index comes from the Indexed Job's JOB_COMPLETION_INDEX
    index = next(p for p in train.params if p.name == "worker_index")
    assert getattr(index, "envvar", None) == "JOB_COMPLETION_INDEX"
    # the config it reads is the ConfigMap mounted at /config, and training loads it
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/config"]
    volumes = {v["name"]: v for v in job(docs)["spec"]["template"]["spec"]["volumes"]}
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    data = maps[volumes[mount["name"]]["configMap"]["name"]]["data"]
    path = Path(ctx.params["config"])
    assert path.parent == Path(mount["mountPath"])
    config = TrainConfig.model_validate(yaml.safe_load(data[path.name]))
    assert not config.search.halving  # refused by a distributed search


def test_the_study_lives_in_the_dev_postgres_database_and_pod_0_can_publish() -> None:
    docs = build(OVERLAY)
    pod = job(docs)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ref = next(e for e in c["env"] if e["name"] == "SERVEWATCH_DATABASE_URL")["valueFrom"]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    url = base64.b64decode(secrets[ref["secretKeyRef"]["name"]]["data"]["database-url"]).decode()
    assert url.startswith("postgresql://") and "servewatch-postgres" in url
    assert any(d["kind"] == "StatefulSet" and "postgres" in d["metadata"]["name"] for d in docs)
    # the registry claim the service reads, mounted writable (pod 0 publishes into it)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (models,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
    assert not models.get("readOnly")
    claim = volumes[models["name"]]["persistentVolumeClaim"]["claimName"]
    assert any(
        d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs
    )
    assert c["args"][c["args"].index("--registry") + 1] == "/models"
