"""A search spread over worker processes through Optuna's RDB storage on the real PostgreSQL:
the same choice as one process, a dead worker's trial redone, one publication per study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from sklearn.metrics import get_scorer
from typer.testing import CliRunner

from core.registry import Registry
from servewatch.cli import app as cli
from tests.data import classification_frame, regression_frame
from tests.service.conftest import pg_url  # noqa: F401 - the fixture
from training.candidates import Choice, FloatRange, IntRange, Space, make_estimator
from training.config import Preprocessing, load_config
from training.data import FeatureKinds
from training.distributed import GRACE_BEATS, SharedSearch, StudySpec
from training.errors import TrainingError
from training.pipeline import build_pipeline
from training.search import FamilyResult, make_cv, run_family, search_family
from training.train import run_training

ROOT = Path(__file__).resolve().parents[2]
SPACE: Space = {
    "alpha": FloatRange(1e-5, 1e-1),
    "l1_ratio": Choice((0.0, 0.5, 1.0)),
    "pre_scaler": Choice(("standard", "robust")),
}
TREE_SPACE: Space = {"max_depth": IntRange(2, 8), "min_samples_leaf": IntRange(1, 20)}
FAMILIES = ("linear", "tree")  # the end-to-end runs' model families


@pytest.fixture
def study_url(request: pytest.FixtureRequest) -> str:
    """The test PostgreSQL in a fresh schema (pg_url): the studies' storage."""
    url: str = request.getfixturevalue("pg_url")
    return url


def build(params: dict[str, Any]) -> Any:
    kinds = FeatureKinds(numeric=["x1", "x2"], categorical=["color"], datetime=[])
    pre = {k[4:]: v for k, v in params.items() if k.startswith("pre_")}
    model = {k: v for k, v in params.items() if not k.startswith("pre_")}
    family = "tree" if "max_depth" in params else "linear"
    est = make_estimator(family, "classification", model, 0)
    return build_pipeline(
        kinds, est, family=family, prep=Preprocessing(), scaler=pre.get("scaler", "standard")
    )


class SlowScorer:
    """roc_auc after a pause: a trial long enough to kill its worker in the middle of it."""

    def __call__(self, est: Any, x: Any, y: Any) -> float:
        time.sleep(float(os.environ.get("SLOW_SCORER_SECONDS", "0")))
        return float(get_scorer("roc_auc")(est, x, y))

    def __repr__(self) -> str:
        return "SlowScorer"


def family_args(method: str, slow: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The linear family's search, or (slow) the tree family's with a slow scorer: the
    positional arguments and options of search_family and FamilySearch."""
    frame = classification_frame(300)
    space: Space = TREE_SPACE if slow else SPACE
    x, y = frame[["x1", "x2", "color"]], frame["label"]
    args: tuple[Any, ...] = ("tree" if slow else "linear", space, build, x, y)
    options: dict[str, Any] = {
        "method": method,
        "cv": make_cv("classification", 3, False, 0),
        "scoring": SlowScorer() if slow else "roc_auc",
        "seed": 11,
        "default": {} if slow else {"alpha": 1e-4, "l1_ratio": 0.15},
    }
    return args, options


def family_search(
    shared: SharedSearch | None, method: str, trials: int = 5, slow: bool = False
) -> FamilyResult:
    """family_args' search: in memory (search_family) or on the shared study."""
    args, options = family_args(method, slow)
    deadline = time.monotonic() + 600
    search = search_family if shared is None else shared.search_family
    result: FamilyResult = search(*args, trials=trials, deadline=deadline, **options)
    return result


def worker_main(url: str, name: str, method: str, worker: int, trials: int, slow: bool) -> None:
    """A worker process (run by the tests with `python -c`): its share of the family's trials."""
    shared = SharedSearch(StudySpec(name, url, heartbeat_seconds=1), worker, "work")
    family_search(shared, method, trials, slow=slow)
    shared.close()


def start_worker(
    url: str, name: str, method: str, worker: int, trials: int = 5, slow: bool = False
) -> subprocess.Popen[bytes]:
    code = (
        "from tests.training.test_distributed import worker_main; "
        f"worker_main({url!r}, {name!r}, {method!r}, {worker}, {trials}, {slow})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOW_SCORER_SECONDS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)


def shape(result: FamilyResult) -> list[tuple[str, float, int, bool]]:
    return [(repr(t.params), round(t.score, 12), t.rows, t.pruned) for t in result.trials]


@pytest.mark.parametrize("method", ["grid", "random"])
def test_two_worker_processes_draw_what_one_process_would(method: str, study_url: str) -> None:
    alone = family_search(None, method)
    other = start_worker(study_url, "s", method, 1)
    shared = SharedSearch(StudySpec("s", study_url), 0, "wait")
    mine = family_search(shared, method)
    assert other.wait(timeout=300) == 0
    assert shape(mine) == shape(alone)  # same trials, same order, same scores
    assert mine.best is not None and alone.best is not None
    assert mine.best.params == alone.best.params
    # the other process did trials too (a search spread, not one worker doing it all)
    import optuna

    study = optuna.load_study(study_name="s/linear/fixed", storage=shared.storage)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    shared.close()


def test_bayes_with_one_worker_draws_what_the_in_memory_study_draws(study_url: str) -> None:
    alone = family_search(None, "bayes", trials=6)
    shared = SharedSearch(StudySpec("b", study_url), 0, "wait")
    mine = family_search(shared, "bayes", trials=6)
    assert shape(mine) == shape(alone)
    shared.close()


def test_bayes_with_two_workers_shares_one_history_with_pruning(study_url: str) -> None:
    other = start_worker(study_url, "b2", "bayes", 1, trials=10)
    shared = SharedSearch(StudySpec("b2", study_url), 0, "wait")
    mine = family_search(shared, "bayes", trials=10)
    assert other.wait(timeout=300) == 0
    # the default, then exactly 9 TPE trials (each claims a slot; one taken last is a stray)
    assert len(mine.trials) == 10 and mine.trials[0].params["alpha"] == 1e-4
    drawn = [repr(t.params) for t in mine.trials[1:]]
    assert len(set(drawn)) == len(drawn)  # the workers' samplers are seeded apart
    assert mine.best is not None and mine.best.score == max(
        t.score for t in mine.trials if not t.pruned
    )


def kept(study: str, storage: Any) -> list[Any]:
    """A study's trials but the strays (a claim lost to another worker)."""
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).trials
    return [t for t in trials if not t.user_attrs.get("stray")]


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
def test_two_workers_drawing_the_last_trial_at_once_run_it_once(
    method: str, study_url: str
) -> None:
    """The race forced: both workers read the study while one trial was left, then both draw
    one. Claims are compare-and-set, so one runs it and the other's trial is a stray; the old
    numbering (a trial's index from its number) ran a configuration past the cap."""
    args, options = family_args(method)
    a = SharedSearch(StudySpec("r", study_url), 0, "work")
    b = SharedSearch(StudySpec("r", study_url), 1, "work")
    first = a.family(*args, cap=3, **options)
    first.step()
    first.step()
    second = b.family(*args, cap=3, **options)  # reads the study: 2 of 3 taken
    assert not first.done and not second.done
    first.step()
    second.step()  # its view was stale: it draws too
    assert first.done and second.done
    alone = family_search(None, method, trials=3)
    assert shape(second.result) == shape(first.result) == shape(alone)
    studies = [
        f"r/linear/{kind}" for kind in (("fixed", "bayes") if method == "bayes" else ("fixed",))
    ]
    trials = [t for s in studies for t in kept(s, a.storage)]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    claims = sorted(
        (t.user_attrs.get("proposal", -1), t.user_attrs.get("slot", -1)) for t in trials
    )
    assert claims == (
        [(-1, 0), (-1, 1), (0, -1)] if method == "bayes" else [(0, -1), (1, -1), (2, -1)]
    )
    a.close()
    b.close()


def test_a_trial_whose_worker_died_before_its_claim_skips_and_repeats_nothing(
    study_url: str,
) -> None:
    """A worker killed between Optuna creating its trial and the trial claiming a configuration:
    its retry claims the next one like any fresh trial (the old numbering skipped the default
    and ran proposal 1 twice)."""
    spec = StudySpec("d", study_url, heartbeat_seconds=1)
    args, options = family_args("random")
    shared = SharedSearch(spec, 0, "wait")
    fs = shared.family(*args, cap=3, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat ... supposed to be used with optimize"
        dead = fs.fixed.ask()
    shared.storage.record_heartbeat(dead._trial_id)
    time.sleep(spec.heartbeat_seconds * GRACE_BEATS + 1)  # its heartbeat is stale by now
    run_family(fs, time.monotonic() + 600)
    assert shape(fs.result) == shape(family_search(None, "random", trials=3))
    trials = kept("d/linear/fixed", shared.storage)
    assert [(t.state.name, t.user_attrs.get("proposal")) for t in trials] == [
        ("FAIL", None),
        ("COMPLETE", 0),
        ("COMPLETE", 1),
        ("COMPLETE", 2),
    ]
    shared.close()


def test_a_killed_worker_loses_one_trial_which_is_redone(study_url: str) -> None:
    import optuna

    victim = start_worker(study_url, "k", "random", 1, trials=4, slow=True)
    storage = SharedSearch(StudySpec("k", study_url, heartbeat_seconds=1)).storage
    deadline = time.monotonic() + 120
    running: list[Any] = []
    while not running:
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="k/tree/fixed", storage=storage)
        except KeyError:
            continue
        running = [t for t in study.trials if t.state.name == "RUNNING"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    shared = SharedSearch(StudySpec("k", study_url, heartbeat_seconds=1), 0, "wait")
    mine = family_search(shared, "random", trials=4, slow=True)
    alone = family_search(None, "random", trials=4, slow=True)
    study = optuna.load_study(study_name="k/tree/fixed", storage=storage)
    states = [t.state.name for t in study.trials if not t.user_attrs.get("stray")]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 4, states
    (failed,) = [t for t in study.trials if t.state.name == "FAIL" and "stray" not in t.user_attrs]
    assert failed.number == running[0].number
    # every configuration was evaluated once and the choice is the one-process choice
    assert sorted(shape(mine)) == sorted(shape(alone))
    assert mine.best is not None and alone.best is not None
    assert mine.best.params == alone.best.params
    shared.close()


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_redone(study_url: str) -> None:
    """A worker killed between creating its trial and its heartbeat's first beat (the CI run
    that hung for 600 s at load 10): Optuna's stale check passes over a trial without a
    heartbeat, so the finishing worker waited on it forever; it is now failed and redone."""
    import threading

    import optuna

    shared = SharedSearch(StudySpec("o", study_url, heartbeat_seconds=1), 0, "wait")
    with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize"
        warnings.simplefilter("ignore", UserWarning)
        orphan = shared._study("o/tree/fixed").ask()  # RUNNING, and no heartbeat ever written
    results: list[FamilyResult] = []
    waiting = threading.Thread(
        target=lambda: results.append(family_search(shared, "random", trials=3, slow=True)),
        daemon=True,  # on the old code it never ends: left behind, the test fails below
    )
    waiting.start()
    waiting.join(timeout=120)
    assert not waiting.is_alive(), "the finishing worker still waits on the orphaned trial"
    study = optuna.load_study(study_name="o/tree/fixed", storage=shared.storage)
    states = {t.number: t.state.name for t in study.trials if not t.user_attrs.get("stray")}
    assert states.pop(orphan.number) == "FAIL"
    assert sorted(states.values()) == ["COMPLETE"] * 3, states
    assert len(results[0].trials) == 3


def statements_per_trial(study_url: str, name: str, method: str, trials: int) -> float:
    """The SQL statements a one-worker search of `trials` trials sends, per trial (its setup, the
    studies' creation and signature, included)."""
    import sqlalchemy as sa

    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    shared = SharedSearch(StudySpec(name, study_url), 0, "wait")
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        result = family_search(shared, method, trials=trials)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
        shared.close()
    assert len(result.trials) == trials
    return len(sent) / trials


@pytest.mark.parametrize(("method", "most"), [("random", 22), ("bayes", 50)])
def test_a_trial_costs_the_storage_few_statements(method: str, most: int, study_url: str) -> None:
    """Optuna's trial loop reads each trial back twice (`Trial` and `tell`: six statements
    each), and the family's new trials after each (seven): before, 39-40 statements a random
    trial and 61 a Bayesian one; now this process's running trials are its own copies."""
    assert statements_per_trial(study_url, f"n{method}", method, 8) <= most


def test_the_own_copy_of_a_running_trial_is_what_the_database_holds(study_url: str) -> None:
    import optuna

    shared = SharedSearch(StudySpec("own", study_url), 0, "work")
    study = shared._study("own/x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat ... supposed to be used with optimize"
        trial = study.ask()
    trial.suggest_float("a", 0.0, 1.0)
    trial.suggest_categorical("c", ["x", "y"])
    trial.set_user_attr("claim", (1, 2))
    trial.report(0.5, 0)
    own = shared.storage.get_trial(trial._trial_id)
    stored = shared.storage._backend.get_trial(trial._trial_id)
    assert own == stored and own.user_attrs == {"claim": [1, 2]}
    # another worker fails it (its heartbeat stale): this worker's writes are refused
    other = SharedSearch(StudySpec("own", study_url), 1, "work")
    other.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr("result", 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study.tell(trial, 0.7)
    assert shared.storage.get_trial(trial._trial_id).state.name == "FAIL"
    other.close()
    shared.close()


def test_a_worker_with_another_config_or_data_is_refused(study_url: str) -> None:
    family_search(SharedSearch(StudySpec("c", study_url), 0, "wait"), "random")
    with pytest.raises(TrainingError, match="proposals or search rows differ"):
        family_search(SharedSearch(StudySpec("c", study_url), 1, "work"), "grid")


def test_the_storage_must_be_postgresql_and_the_name_plain(monkeypatch: Any) -> None:
    monkeypatch.delenv("SERVEWATCH_STUDY_STORAGE", raising=False)
    monkeypatch.setenv("SERVEWATCH_DATABASE_URL", "sqlite:///x.db")
    with pytest.raises(TrainingError, match="SERVEWATCH_STUDY_STORAGE.*sqlite:///x.db"):
        StudySpec.resolve("ok")
    monkeypatch.setenv("SERVEWATCH_STUDY_STORAGE", "postgresql://h/db")
    assert StudySpec.resolve("ok").url == "postgresql://h/db"
    with pytest.raises(TrainingError, match="--study 'a b'"):
        StudySpec.resolve("a b")
    monkeypatch.setenv("SERVEWATCH_STUDY_HEARTBEAT_SECONDS", "0")
    with pytest.raises(TrainingError, match="SERVEWATCH_STUDY_HEARTBEAT_SECONDS"):
        StudySpec.resolve("ok")


# --- end to end: `servewatch train --study` ----------------------------------------------------


def write_config(tmp_path: Path, task: str, method: str) -> Path:
    if task == "classification":
        frame, target = classification_frame(400).drop(columns=["when"]), "label"
        frame["label"] = frame["label"] == "yes"  # bool labels
    else:
        frame, target = regression_frame(300), "y"
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    config = {
        "name": "m",
        "data": str(data),
        "target": target,
        # two families: a study each, as many as the search spreads (hgb would double the fits)
        "models": list(FAMILIES),
        "seed": 3,
        # no budget: `trials` per family, as one process runs them (a budget spends time)
        "search": {"method": method, "trials": 4, "max_rows": 1000},
        "split": {"cv_folds": 2},
        "reference_rows": 100,
        "ensemble": {"enabled": False},
    }
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(
    config: Path, registry: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "servewatch", "train", "--config", str(config), "--registry",
         str(registry), "--json", *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def cli_train(config: Path, registry: Path, *extra: str, env: dict[str, str]) -> Result:
    """`servewatch train` in this process: for runs refused before any training (the refusals'
    exit codes and messages; a subprocess would add seconds of imports to each)."""
    args = ["train", "--config", str(config), "--registry", str(registry), *extra]
    return CliRunner().invoke(cli, args, env=env)


def one_process(config: Path, registry: Path) -> dict[str, Any]:
    """The manifest `servewatch train --json` prints for a run without a study, trained in this
    process (the reference the spread runs are compared with; a subprocess adds its imports)."""
    result = run_training(load_config(config, {}), Registry(registry))
    out: dict[str, Any] = json.loads(json.dumps(result.manifest, default=str))
    return out


def manifest(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def chosen(m: dict[str, Any]) -> tuple[Any, ...]:
    return m["model"]["family"], m["model"]["params"], m["metrics"]["cv"]["score"]


def test_two_finishers_at_once_publish_once_what_one_process_chooses(
    tmp_path: Path, study_url: str
) -> None:
    config = write_config(tmp_path, "classification", "random")
    alone = one_process(config, tmp_path / "one")
    env = {"SERVEWATCH_STUDY_STORAGE": study_url}
    both = [train(config, tmp_path / "shared", "--study", "e2e", env=env) for _ in range(2)]
    first, second = (manifest(p) for p in both)  # both are worker 0: both try to finish
    assert chosen(first) == chosen(alone)
    assert first == second  # the one that waited got the published version's manifest
    reg = Registry(tmp_path / "shared")
    assert reg.versions("m") == [1] and reg.aliases("m")["production"]["version"] == 1
    # a rerun of the finished study publishes nothing new
    assert manifest(train(config, tmp_path / "shared", "--study", "e2e", env=env)) == first
    assert reg.versions("m") == [1]


def test_workers_on_one_machine_regression_grid(tmp_path: Path, study_url: str) -> None:
    config = write_config(tmp_path, "regression", "grid")
    alone = one_process(config, tmp_path / "one")
    env = {"SERVEWATCH_STUDY_STORAGE": study_url}
    spread = manifest(train(config, tmp_path / "shared", "--study", "g", "--workers", "2", env=env))
    assert chosen(spread) == chosen(alone)
    assert Registry(tmp_path / "shared").versions("m") == [1]
    import optuna

    storage = SharedSearch(StudySpec("g", study_url)).storage
    for family in FAMILIES:
        study = optuna.load_study(study_name=f"g/{family}/fixed", storage=storage)
        # a worker that lost the race for the last configuration leaves a failed stray; every
        # configuration ran exactly once, none missed or left failed
        kept = [t for t in study.trials if not t.user_attrs.get("stray")]
        assert {t.state.name for t in kept} == {"COMPLETE"}
        assert sorted(int(t.user_attrs["proposal"]) for t in kept) == [0, 1, 2, 3]


def test_workers_on_a_parquet_dataset_search_its_sample_and_worker_0_reads_every_row(
    tmp_path: Path, study_url: str
) -> None:
    """Every worker searches the rows drawn in the source (the same on each: the study accepts
    them); worker 0 then reads every row for the final fit, the sample pinned to train."""
    frame = classification_frame(2400).drop(columns=["when"])
    frame["part"] = frame.index % 3
    frame.to_parquet(tmp_path / "rides", partition_cols=["part"], row_group_size=200)
    config = write_config(tmp_path, "classification", "random")
    raw = yaml.safe_load(config.read_text())
    raw.update(data=str(tmp_path / "rides"), target="label")
    raw["search"]["max_rows"] = 300
    config.write_text(yaml.safe_dump(raw))
    env = {"SERVEWATCH_STUDY_STORAGE": study_url}
    spread = manifest(train(config, tmp_path / "reg", "--study", "p", "--workers", "2", env=env))
    read = spread["data"]["read"]
    assert read["rows_read"] == 2400 and read["search_sample"]["in_train"] > 300
    assert spread["model"]["search"]["rows"] <= 300 and spread["data"]["rows"] == 2400
    assert Registry(tmp_path / "reg").versions("m") == [1]


def test_a_budgeted_search_spread_over_two_processes_publishes_once(
    tmp_path: Path, study_url: str
) -> None:
    config = write_config(tmp_path, "classification", "bayes")
    raw = yaml.safe_load(config.read_text())
    # bayes until the budget is spent; each family's first trial always runs (training.budget),
    # so three families draw at least three trials however loaded the machine
    raw["models"] = ["linear", "tree", "hgb"]
    raw["search"] = {"budget_seconds": 12, "max_rows": 1000}
    config.write_text(yaml.safe_dump(raw))
    env = {"SERVEWATCH_STUDY_STORAGE": study_url}
    spread = manifest(train(config, tmp_path / "reg", "--study", "t", "--workers", "2", env=env))
    assert Registry(tmp_path / "reg").versions("m") == [1]
    import optuna

    storage = SharedSearch(StudySpec("t", study_url)).storage
    drawn = 0
    for family in ("linear", "tree", "hgb"):
        for kind in ("fixed", "bayes"):
            study = optuna.load_study(study_name=f"t/{family}/{kind}", storage=storage)
            drawn += sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    # every trial of the study, whichever process ran it, is in the manifest's count
    assert drawn == sum(c["trials"] for c in spread["model"]["candidates"]) >= 3


def test_a_worker_that_is_not_index_0_publishes_nothing(tmp_path: Path, study_url: str) -> None:
    config = write_config(tmp_path, "classification", "bayes")
    env = {"SERVEWATCH_STUDY_STORAGE": study_url, "JOB_COMPLETION_INDEX": "1"}
    proc = train(config, tmp_path / "reg", "--study", "w1", env=env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "worker 1: no trial left in study w1" in err and out == ""
    assert not (tmp_path / "reg" / "m").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "2"], {}, "--workers and --worker-index need --study"),
        (["--study", "x"], {"SERVEWATCH_STUDY_STORAGE": "sqlite:///s.db"}, "PostgreSQL storage"),
    ],
)
def test_distributed_flags_fail_clearly(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    config = write_config(tmp_path, "regression", "random")
    res = cli_train(config, tmp_path / "reg", *args, env=env)
    assert res.exit_code == 2 and message in " ".join(res.stderr.split()), res.output
    assert isinstance(res.exception, SystemExit)  # a clear exit, no exception's traceback


def test_halving_is_refused_with_a_study(tmp_path: Path, study_url: str) -> None:
    config = write_config(tmp_path, "regression", "random")
    raw = yaml.safe_load(config.read_text())
    raw["search"]["halving"] = True
    config.write_text(yaml.safe_dump(raw))
    env = {"SERVEWATCH_STUDY_STORAGE": study_url}
    res = cli_train(config, tmp_path / "reg", "--study", "h", env=env)
    assert res.exit_code == 2 and "search.halving cannot be spread" in res.stderr, res.output
    assert isinstance(res.exception, SystemExit)


def test_local_workers_share_the_cores_out() -> None:
    """`train --workers N` on one machine: each worker's native thread pools get its share of
    the cores (at least one), so N workers' OpenMP threads do not oversubscribe them."""
    from threadpoolctl import threadpool_info

    from training.distributed import shared_cores, worker_threads

    assert worker_threads(2, cpus=2) == 1 and worker_threads(3, cpus=8) == 2
    assert worker_threads(4, cpus=2) == 1 and worker_threads(1, cpus=6) == 6
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime, when it has one)

    before = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
    with shared_cores(64):
        inside = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
    assert inside and all(n == 1 for n in inside.values())
    assert {i["internal_api"]: i["num_threads"] for i in threadpool_info()} == before
