"""A rolling update across the partitioning of the log: the previous release and this one at once.

The previous release is `PREVIOUS`, checked out by the test (`git archive` into a temporary
folder) and run from there with the same venv. One replica of it (`a`) and one of this release
(`b`) serve the same model on one log under load (predictions, and labels for earlier answers sent
to the other replica), while `servewatch log maintain` (the retention CronJob, this release) runs
the migration; then `a` is replaced by this release on the same spool folder (a StatefulSet pod on
its claim), and maintenance runs again. Every answered prediction must be in the log exactly once
(counted by id), every answered label once with its value, and on PostgreSQL the log must end up
partitioned. Then the same on SQLite, both replicas on one file (one volume).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from predlog.store import normalise_url
from tests.service.conftest import Server, example, pg_url  # noqa: F401  (the fixture)

# one xdist worker runs both files, one after the other (tests/parallel.py): the images and
# containers on the one Docker engine, and the previous release's servers under timed load
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("deploy_serial")]

# The last commit before the prediction log was partitioned (88934ef, "Prediction log partitioned
# by ingest time on PostgreSQL"): the release whose pods still run while this one's pods start and
# `servewatch log maintain` partitions the log. It writes rows with INSERT ... ON CONFLICT (id),
# which a partitioned table (key: id, ingested_at) cannot take, and issues ids without tags.
PREVIOUS = "854c29f9ff46233aaac9ab5496fc06493ec5a43a"
ROOT = Path(__file__).resolve().parents[2]
LOAD_S = 2.0  # seconds of load in each phase


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's tree (`git archive` of `PREVIOUS`)."""
    dest = tmp_path_factory.mktemp("previous")
    archive = dest.parent / "previous.tar"
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "cat-file", "-e", PREVIOUS], capture_output=True).returncode:
        # a shallow clone lacks the commit: ask its origin for the history once
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*git, "fetch", "-q", "--unshallow"], capture_output=True, timeout=120)
    made = subprocess.run(
        [*git, "archive", "-o", str(archive), PREVIOUS], capture_output=True, text=True
    )
    if made.returncode != 0:
        message = f"commit {PREVIOUS[:12]} not in this clone: {made.stderr.strip()}"
        if os.environ.get("SERVEWATCH_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return dest


def run_in(tree: Path, *args: str, timeout: float = 300) -> str:
    """`python *args` on the code of checkout `tree` (its own folder first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


TRAIN = """
import sys
from pathlib import Path
from core.registry import Registry
from tests.conftest import fast_config
from tests.data import classification_frame
from training.train import run_training
root = Path(sys.argv[1])
csv = root.parent / "clf.csv"
classification_frame().to_csv(csv, index=False)
cfg = fast_config(name="demo", data=str(csv), target="label", models=["linear"],
                  fairness={"sensitive": ["group"]}, features={"datetime": ["when"]})
run_training(cfg, Registry(root))
"""


@pytest.fixture(scope="module")
def old_registry(previous: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model as the previous release trained it (its pods serve it when the update starts)."""
    root = tmp_path_factory.mktemp("old-registry") / "registry"
    run_in(previous, "-c", TRAIN, str(root))
    return root


class Load:
    """One client per replica slot: predictions of a few rows each, and every other request a
    label for an answer of the other slot made at least `LABEL_AFTER_S` before. A refused
    connection (the slot's replica being replaced) is retried; only answers count."""

    LABEL_AFTER_S = 1.0

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls  # slot -> the URL of the replica serving it now (changed by the test)
        self.answered: dict[str, list[tuple[float, str]]] = {s: [] for s in urls}
        self.labels: dict[str, str] = {}  # prediction id -> label, answered 200
        self.refused: Counter[str] = Counter()  # "predict 503", "feedback 422 id_not_issued"...
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.marks: dict[str, float] = {}  # phase -> time.monotonic() it began
        self.threads = [threading.Thread(target=self._run, args=(s,)) for s in urls]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _label_for(self, slot: str, k: int) -> tuple[str, str] | None:
        other = next(s for s in self.answered if s != slot)
        cutoff = time.monotonic() - self.LABEL_AFTER_S
        with self.lock:
            ready = [pid for t, pid in self.answered[other] if t <= cutoff]
        if not ready:
            return None
        return ready[(k * 7919) % len(ready)], "yes" if k % 3 else "no"

    def _run(self, slot: str) -> None:
        k = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                k += 1
                url = self.urls[slot]
                try:
                    if k % 2 == 0 and (pick := self._label_for(slot, k)) is not None:
                        self._feedback(client, url, *pick)
                    else:
                        self._predict(client, url, slot, k)
                except httpx.TransportError:
                    time.sleep(0.1)  # the replica is being replaced

    def _predict(self, client: httpx.Client, url: str, slot: str, k: int) -> None:
        rows = [{**example(), "x1": (k % 50) / 10 - 2.5, "x2": float(j)} for j in range(3)]
        res = client.post(f"{url}/v1/models/demo/predict", json={"instances": rows})
        if res.status_code != 200:
            self.refused[f"predict {res.status_code}"] += 1
            return
        now = time.monotonic()
        with self.lock:
            self.answered[slot] += [(now, p["prediction_id"]) for p in res.json()["predictions"]]

    def _feedback(self, client: httpx.Client, url: str, pid: str, label: str) -> None:
        body = {"labels": [{"prediction_id": pid, "label": label}]}
        res = client.post(f"{url}/v1/models/demo/feedback", json=body)
        if res.status_code == 200 and res.json()["items"][0]["status"] == "stored":
            with self.lock:
                self.labels[pid] = label
            return
        rule = ""
        if res.status_code == 422:
            rule = " " + ",".join(str(e.get("rule")) for e in res.json().get("errors", [])[:1])
        self.refused[f"feedback {res.status_code}{rule}"] += 1

    def ids(self) -> list[str]:
        return [pid for answered in self.answered.values() for _, pid in answered]


def maintain(url: str) -> dict[str, Any]:
    """`servewatch log maintain` of this release (the retention CronJob's command)."""
    out = run_in(ROOT, "-m", "servewatch", "log", "maintain", "--database-url", url)
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


def log_state(url: str) -> tuple[Counter[str], dict[str, str], str | None]:
    """(rows per prediction id, label per id, the kind of sw_predictions: 'p' partitioned)."""
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            rows = Counter(r[0] for r in conn.execute(sa.text("SELECT id FROM sw_predictions")))
            labels = {
                r[0]: json.loads(r[1])
                for r in conn.execute(sa.text("SELECT prediction_id, label FROM sw_feedback"))
            }
            kind = None
            if engine.dialect.name == "postgresql":
                kind = conn.execute(
                    sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": "sw_predictions"},
                ).scalar_one()
    finally:
        engine.dispose()
    return rows, labels, kind


def serve(registry: Path, url: str, spool: Path, tree: Path | None = None) -> Server:
    """A replica of this release (`tree` None) or of the checkout `tree`."""
    env = {
        "SERVEWATCH_REGISTRY": str(registry),
        "SERVEWATCH_DATABASE_URL": url,
        "SERVEWATCH_SPOOL_DIR": str(spool),
        "SERVEWATCH_MONITOR_INTERVAL": "0",
        "SERVEWATCH_LOG_FLUSH_MS": "50",
        "SERVEWATCH_RELOAD_INTERVAL_S": "0",
        "PYTHONPATH": str(tree or ROOT),
    }
    return Server(env, cwd=tree or ROOT)


def rolling_update(
    registry: Path, previous: Path, url: str, tmp: Path, report: Callable[[str], None]
) -> tuple[Load, list[dict[str, Any]], list[str]]:
    """The update under load; returns the load, each maintenance pass's output and the servers'
    output (the previous release's first)."""
    servers: list[Server] = []
    outputs: list[str] = []
    passes: list[dict[str, Any]] = []
    try:
        servers.append(serve(registry, url, tmp / "spool-a", previous))
        servers.append(serve(registry, url, tmp / "spool-b"))
        load = Load({"a": servers[0].url, "b": servers[1].url})
        with load:
            time.sleep(LOAD_S)
            passes.append(maintain(url))  # the CronJob during the update
            load.marks["maintained"] = time.monotonic()
            time.sleep(LOAD_S)
            load.marks["replaced"] = time.monotonic()
            outputs.append(servers[0].stop())  # pod a replaced: same claim, this release
            servers[0] = serve(registry, url, tmp / "spool-a")
            load.urls["a"] = servers[0].url
            time.sleep(LOAD_S)
            passes.append(maintain(url))  # the CronJob after the update
            time.sleep(LOAD_S)
        for server in servers:
            outputs.append(server.stop())
    finally:
        for server in servers:
            server.stop()
    report(f"answered {len(load.ids())} predictions, {len(load.labels)} labels; {load.refused}")
    return load, passes, outputs


def check_landed(load: Load, url: str) -> tuple[Counter[str], str | None]:
    rows, labels, kind = log_state(url)
    answered = load.ids()
    assert len(answered) == len(set(answered)), "an id answered twice"
    missing = [pid for pid in answered if rows[pid] == 0]
    by_slot = {s: sum(rows[pid] == 0 for _, pid in a) for s, a in load.answered.items()}
    doubled = [pid for pid in answered if rows[pid] > 1]
    assert not missing, (
        f"{len(missing)} of {len(answered)} answered predictions not in the log {by_slot}"
    )
    assert not doubled, f"{len(doubled)} answered predictions logged more than once"
    lost = {pid: v for pid, v in load.labels.items() if labels.get(pid) != v}
    assert not lost, f"{len(lost)} of {len(load.labels)} answered labels not in the log as sent"
    # both replicas answered, and the previous release after the maintenance pass that ran
    # while it wrote (labels too)
    after = [t for t, _ in load.answered["a"] if t > load.marks["maintained"]]
    assert load.labels and load.answered["b"] and after
    assert min(after) < load.marks["replaced"], "the previous release answered nothing after it"
    return rows, kind


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str], None]]:
    lines: list[str] = []
    yield lines.append
    with capsys.disabled():
        sys.stdout.write("".join(f"\n{line}" for line in lines) + "\n")


def test_rolling_update_over_postgresql_partitioning(
    old_registry: Path,
    previous: Path,
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    load, passes, outputs = rolling_update(old_registry, previous, pg_url, tmp_path, report)
    report(f"maintenance passes: {passes}")
    _, kind = check_landed(load, pg_url)
    # the CronJob's pass while the previous release wrote waited; the one after partitioned
    assert [p["migration"] for p in passes] == ["deferred", "partitioned"], passes
    assert passes[0]["earlier_writers"] >= 1
    assert kind == "p", "the log was not partitioned by the maintenance after the update"
    # no row of the previous release was refused by the partitioned table (none spooled as bad)
    assert not list((tmp_path / "spool-a").rglob("*.bad")), outputs[0][-2000:]
    assert not load.refused, f"requests refused during the update: {dict(load.refused)}"


def test_rolling_update_over_one_sqlite_volume(
    old_registry: Path, previous: Path, tmp_path: Path, report: Callable[[str], None]
) -> None:
    url = f"sqlite:///{tmp_path}/data/servewatch.db"
    load, passes, outputs = rolling_update(old_registry, previous, url, tmp_path, report)
    report(f"maintenance passes: {passes}")
    check_landed(load, url)
    assert [p["migration"] for p in passes] == ["", ""], passes
    assert not list(tmp_path.rglob("*.bad")), outputs[0][-2000:]
    assert not load.refused, f"requests refused during the update: {dict(load.refused)}"
