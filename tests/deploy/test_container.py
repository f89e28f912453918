"""The images built and run as docs/deploy.md says: `serve` answers every model shape from a
registry trained on the host by another uid, read-only and non-root, stops on SIGTERM under load
with status 0 and every answered prediction logged, and fails a start that cannot serve with one
line; `full` runs the monitoring CronJob's command. Needs a Docker engine (CI starts one)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from sklearn import datasets

from core.registry import Registry
from tests.conftest import REQUIRE_TOOLS
from tests.service.conftest import free_port
from training.config import TrainConfig
from training.train import run_training

# one xdist worker runs both files, one after the other (tests/parallel.py): the images and
# containers on the one Docker engine, and the previous release's servers under timed load
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("deploy_serial")]

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_DOCKER = "SERVEWATCH_REQUIRE_DOCKER"
TAG = os.environ.get("SERVEWATCH_TEST_IMAGE", "servewatch:test")
OWNER = 12345  # the uid that "trained on another machine": neither root nor the image's 10001
IMAGE_UID = 10001


def _docker() -> str:
    path = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    ok = path and subprocess.run([path, "info"], capture_output=True, timeout=30).returncode == 0
    if not ok:
        if os.environ.get(REQUIRE_DOCKER) or os.environ.get(REQUIRE_TOOLS):
            pytest.fail("a running Docker engine is required here; .ci/run starts dockerd")
        pytest.skip(
            "no running Docker engine (.ci/run starts one); CI requires it", allow_module_level=True
        )
    assert path is not None
    return path


DOCKER = _docker()


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {res.stdout}{res.stderr}")
    return res


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    """Both targets, built with cached layers; SERVEWATCH_TEST_IMAGE_BUILT=1 (.ci/run, which
    has just built them) uses the tags as they are."""
    if os.environ.get("SERVEWATCH_TEST_IMAGE_BUILT"):
        for tag in (TAG, f"{TAG}-full"):
            docker("image", "inspect", tag)
        return TAG, f"{TAG}-full"
    res = subprocess.run(
        ["bash", str(ROOT / "scripts/build_images.sh"), TAG],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "DOCKER": DOCKER},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return TAG, f"{TAG}-full"


# --- a registry trained on the host, owned by another uid -------------------------------------

SMALL = {
    "search": {"method": "random", "trials": 1, "budget_seconds": 10},
    "split": {"cv_folds": 2},
    "reference_rows": 100,
    "calibration": "none",
    "ensemble": {"enabled": False},
}


def _cancer(labels: str) -> pd.DataFrame:
    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame[["mean radius", "mean texture", "worst area"]].copy()
    frame["target"] = {
        "str": raw.target.map({0: "malignant", 1: "benign"}),
        "bool": raw.target.astype(bool),
    }[labels]
    return frame


def _iris() -> pd.DataFrame:  # three classes, integer labels
    raw = datasets.load_iris(as_frame=True)
    return raw.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))


def _diabetes() -> pd.DataFrame:
    raw = datasets.load_diabetes(as_frame=True)
    return raw.frame[["age", "bmi", "bp", "s5", "target"]]


# name -> (frame, family, what each answer's `prediction` must be)
SHAPES = {
    "binary-str": (_cancer("str"), "hgb", str),
    "binary-bool": (_cancer("bool"), "linear", bool),
    "multiclass-int": (_iris(), "forest", int),
    "regression": (_diabetes(), "hgb", float),
}


@dataclass
class Shared:
    top: Path
    registry: Path
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """Every model shape trained here under umask 022, then handed to uid 12345 (as a registry
    copied from another machine would be); folders the container's uid can reach."""
    top = Path(tempfile.mkdtemp(prefix="sw-container-"))
    top.chmod(0o755)
    out = Shared(top, top / "registry")
    old = os.umask(0o022)
    try:
        for name, (frame, family, _kind) in SHAPES.items():
            csv = top / f"{name}.csv"
            frame.to_csv(csv, index=False)
            cfg = TrainConfig.model_validate(
                {**SMALL, "name": name, "data": str(csv), "target": "target", "models": [family]}
            )
            run_training(cfg, Registry(out.registry))
            out.frames[name] = frame
    finally:
        os.umask(old)
    if os.geteuid() == 0:
        for path in [out.registry, *out.registry.rglob("*")]:
            os.chown(path, OWNER, OWNER)
    try:
        yield out
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _data_dir(parent: Path, name: str) -> Path:
    """A /data for the container: a folder its uid owns (a volume claim with fsGroup does that)."""
    path = parent / name
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    else:
        path.chmod(0o777)
    return path


# --- running a container as docs/deploy.md does ------------------------------------------------


class Container:
    """`docker run --read-only --tmpfs /tmp -v registry:/models:ro -v data:/data IMAGE [CMD]`,
    on the host's network so every request stays on 127.0.0.1."""

    def __init__(
        self, image: str, registry: Path, data: Path, env: dict[str, str] | None = None, *cmd: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        envs = {"SERVEWATCH_HOST": "127.0.0.1", "SERVEWATCH_PORT": str(self.port), **(env or {})}
        args = ["run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp"]
        args += ["-v", f"{registry}:/models:ro", "-v", f"{data}:/data"]
        for key, value in envs.items():
            args += ["-e", f"{key}={value}"]
        self.id = docker(*args, image, *cmd).stdout.strip()

    def wait_ready(self, timeout: float = 120) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.state()["Status"] == "exited":
                raise AssertionError(f"the container exited: {self.logs()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout} s: {self.logs()}")

    def state(self) -> dict[str, Any]:
        out = docker("inspect", "-f", "{{ json .State }}", self.id).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def wait(self, timeout: float = 90) -> int:
        return int(docker("wait", self.id, timeout=timeout).stdout.strip())

    def logs(self) -> str:
        res = docker("logs", self.id, check=False)
        return res.stdout + res.stderr

    def remove(self) -> None:
        docker("rm", "-f", self.id, check=False)


def run_once(image: str, registry: Path, data: Path, env: dict[str, str], *cmd: str) -> Container:
    box = Container(image, registry, data, env, *cmd)
    try:
        box.wait()
    except BaseException:
        box.remove()  # e.g. a server that never exits: the test fails, nothing is left running
        raise
    return box


def predict(url: str, model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    res = httpx.post(f"{url}/v1/models/{model}/predict", json={"instances": rows}, timeout=30)
    assert res.status_code == 200, res.text
    answers: list[dict[str, Any]] = res.json()["predictions"]
    return answers


def rows_of(frame: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        frame.drop(columns="target").head(n).to_json(orient="records")
    )
    return rows


def logged_ids(data: Path) -> set[str]:
    with sqlite3.connect(data / "servewatch.db") as conn:
        return {r[0] for r in conn.execute("SELECT id FROM sw_predictions")}


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serving(images: tuple[str, str], shared: Shared) -> Iterator[tuple[Container, Path]]:
    data = _data_dir(shared.top, "data-serve")
    box = Container(images[0], shared.registry, data)
    try:
        ready_s = box.wait_ready()
        print(f"serve image ready in {ready_s:.1f} s")  # noqa: T201 - the figure in docs/deploy.md
        yield box, data
    finally:
        box.remove()


COUNTED = ("servewatch_predictions_total{", "servewatch_prediction_value_count{")


def test_serves_every_model_shape_with_metrics(serving: tuple[Container, Path]) -> None:
    box, _data = serving
    for name, (frame, family, kind) in SHAPES.items():
        answers = predict(box.url, name, rows_of(frame, 5))
        assert len(answers) == 5
        for answer in answers:
            assert type(answer["prediction"]) is kind, (name, answer)
        if kind in (str, int, bool):
            assert set(answers[0]["probabilities"]) == {str(c) for c in frame["target"].unique()}
        info = httpx.get(f"{box.url}/v1/models/{name}", timeout=10).json()
        if family in ("hgb", "forest"):  # tree models compiled by ONNX Runtime in this image
            assert info["serving_path"] == "compiled", (name, info["serving_path"])
    metrics = httpx.get(box.url + "/metrics", timeout=10).text.splitlines()
    for name in SHAPES:
        counted = [
            line for line in metrics if line.startswith(COUNTED) and f'model="{name}"' in line
        ]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) >= 5, (name, counted)


def test_runs_as_non_root_on_a_read_only_root(serving: tuple[Container, Path]) -> None:
    box, _data = serving
    assert docker("exec", box.id, "id", "-u").stdout.strip() == str(IMAGE_UID)
    denied = docker("exec", box.id, "touch", "/opt/venv/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    health = docker("inspect", "-f", "{{ json .Config.Healthcheck.Test }}", box.id).stdout
    assert "/healthz" in health


def test_serve_image_lacks_the_heavy_packages_and_says_what_to_use(
    serving: tuple[Container, Path],
) -> None:
    box, _data = serving
    heavy = ["evidently", "shap", "numba", "optuna", "matplotlib", "pyarrow", "plotly"]
    check = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    assert docker("exec", box.id, "python", "-c", check).stdout.strip() == "[]"
    res = docker("exec", box.id, "servewatch", "monitor", "run", "--all", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "error: `servewatch monitor run` needs the Python package 'evidently', which is not "
        "installed here: pip install 'servewatch[monitor]' (or use the full image)"
    )
    # explanations degrade to sampling (no shap), and say so
    name = "binary-str"
    res_explain = httpx.post(
        f"{box.url}/v1/models/{name}/explain", json={"instances": [{"mean radius": 14.0,
        "mean texture": 19.0, "worst area": 880.0}]}, timeout=60,
    )  # fmt: skip
    assert res_explain.status_code == 200, res_explain.text
    assert "sampling" in res_explain.text


SERVE_GOAL_MB = 450  # the serve image on the official python:3.11-slim-bookworm (issue 27)
OFFICIAL_BASE_MB = 130  # that base image, as Docker Hub lists it (docs/deploy.md)


def test_serve_image_fits_its_size_goal_on_the_official_base(images: tuple[str, str]) -> None:
    """What the Dockerfile adds to its base (the venv, the user, the folders) plus the official
    base stays within the goal, whichever base this engine has (the stand-in is larger); ONNX
    Runtime's C library and conversion tools, which serving never loads, are not in it."""
    name = (ROOT / "Dockerfile").read_text().split()[1]  # FROM python:3.11-slim-bookworm AS base
    base = docker("image", "inspect", "-f", "{{ .Size }}", name)
    serve = docker("image", "inspect", "-f", "{{ .Size }}", images[0])
    added_mb = (int(serve.stdout) - int(base.stdout)) / 1e6
    assert added_mb + OFFICIAL_BASE_MB <= SERVE_GOAL_MB, f"{added_mb:.0f} MB over the base"
    gone = "import glob, onnxruntime as o, os; d = os.path.dirname(o.__file__); print(" + (
        "glob.glob(d + '/capi/libonnxruntime.so*') + glob.glob(d + '/transformers'))"
    )
    res = docker("run", "--rm", "--entrypoint", "python", images[0], "-c", gone)
    assert res.stdout.strip() == "[]"


def test_sigterm_under_load_exits_0_and_loses_nothing(
    images: tuple[str, str], shared: Shared
) -> None:
    data = _data_dir(shared.top, "data-sigterm")
    box = Container(images[0], shared.registry, data)
    answered: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    rows = rows_of(shared.frames["binary-str"], 3)

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(2000):
                if stop.is_set():
                    return
                try:
                    res = client.post(
                        f"{box.url}/v1/models/binary-str/predict", json={"instances": rows}
                    )
                except httpx.HTTPError:
                    continue  # the server is going away: nothing was answered
                if res.status_code == 200:
                    answered.extend(p["prediction_id"] for p in res.json()["predictions"])
                elif res.status_code != 503:
                    errors.append(res.text)

    try:
        box.wait_ready()
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        while len(answered) < 300 and all(t.is_alive() for t in threads):
            time.sleep(0.05)
        docker("kill", "--signal", "TERM", box.id)
        code = box.wait()
        stop.set()
        for t in threads:
            t.join(30)
        assert code == 0, box.logs()
        assert not errors, errors[:3]
        assert len(answered) >= 300
        missing = set(answered) - logged_ids(data)
        assert not missing, f"{len(missing)} answered predictions are not in the log"
    finally:
        stop.set()
        box.remove()


@pytest.mark.parametrize(
    ("case", "code", "said"),
    [
        ("no models", 3, "holds no model"),
        ("bad value", 2, "SERVEWATCH_WORKERS='two'"),
        ("unreadable registry", 3, "permission denied"),
    ],
)
def test_a_failed_start_exits_non_zero_with_one_line(
    images: tuple[str, str], shared: Shared, case: str, code: int, said: str
) -> None:
    registry, env = shared.registry, {}
    if case == "no models":
        registry = shared.top / "empty-registry"
        registry.mkdir(exist_ok=True)
    elif case == "bad value":
        env = {"SERVEWATCH_WORKERS": "two"}
    else:  # a version as mkdtemp published it: 0700, owned by the uid that trained it
        registry = shared.top / "private-registry"
        if not registry.exists():
            shutil.copytree(shared.registry / "binary-str", registry / "binary-str")
            (registry / "binary-str" / "1").chmod(0o700)
            for path in [registry, *registry.rglob("*")]:
                os.chown(path, OWNER, OWNER)
    data = _data_dir(shared.top, f"data-{case.replace(' ', '-')}")
    box = run_once(images[0], registry, data, env)
    try:
        assert box.state()["ExitCode"] == code, box.logs()
        lines = [line for line in box.logs().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert said in lines[0]
    finally:
        box.remove()


def test_the_monitoring_cronjob_command_runs_in_the_full_image(
    images: tuple[str, str], shared: Shared, serving: tuple[Container, Path]
) -> None:
    """The CronJob's own args, on the log the serving container wrote (the full image's
    Evidently, plotly and pyarrow)."""
    box, data = serving
    for name, (frame, _family, _kind) in SHAPES.items():
        predict(box.url, name, rows_of(frame, 60))
    cronjob = yaml.safe_load((ROOT / "k8s/base/monitor-cronjob.yaml").read_text())
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "servewatch-full"
    time.sleep(1)  # the log writer's flush interval (200 ms)
    settle = {"SERVEWATCH_MONITOR_SETTLE_S": "0"}  # rows of the last minute count too
    shards = cronjob["spec"]["jobTemplate"]["spec"]["completions"]
    for index in range(shards):  # each pod of the Indexed Job, its index put in as Kubernetes does
        args = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in container["args"]]
        job = run_once(images[1], shared.registry, data, settle, *args)
        try:
            assert job.state()["ExitCode"] == 0, job.logs()
        finally:
            job.remove()
    with sqlite3.connect(data / "servewatch.db") as conn:
        runs = dict(conn.execute("SELECT model, rows FROM sw_monitor_runs").fetchall())
    assert set(runs) == set(SHAPES) and all(rows >= 60 for rows in runs.values()), runs
    reports = data / "reports"
    # one report folder per model; dot-folders are the runs' own (.locks, pending snapshots)
    assert {p.name for p in reports.iterdir() if p.is_dir() and not p.name.startswith(".")} == set(
        SHAPES
    )


def test_the_retention_cronjob_command_runs_in_the_serve_image(
    images: tuple[str, str], shared: Shared, serving: tuple[Container, Path]
) -> None:
    """`servewatch log maintain` (the retention CronJob's args) needs nothing of the full image."""
    _box, data = serving
    cronjob = yaml.safe_load((ROOT / "k8s/base/retention-cronjob.yaml").read_text())
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "servewatch"
    job = run_once(images[0], shared.registry, data, {}, *container["args"])
    try:
        assert job.state()["ExitCode"] == 0, job.logs()
        assert json.loads(job.logs())["dropped"] == []
    finally:
        job.remove()
