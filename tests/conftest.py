"""Shared fixtures: tiny data files, a tiny trained registry, settings for the service; helpers for
tests that need an outside tool or an optional package."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from core.registry import Registry
from tests import parallel
from tests.data import classification_frame
from training.config import TrainConfig
from training.train import run_training

REQUIRE_TOOLS = "SERVEWATCH_REQUIRE_TOOLS"
# Tests log rows and monitor them at once: windows reach up to now (in production they end
# SERVEWATCH_MONITOR_SETTLE_S before the run so rows still in a store transaction are not skipped).
os.environ.setdefault("SERVEWATCH_MONITOR_SETTLE_S", "0")


_PG_SERVER: list[str] = []  # this xdist worker's server URL, when it made a database of its own


def pytest_configure(config: pytest.Config) -> None:
    """On an xdist worker: its own PostgreSQL database (tests/parallel.py)."""
    server = parallel.create_worker_database(config)
    if server is not None:
        _PG_SERVER.append(server)


def pytest_unconfigure() -> None:
    while _PG_SERVER:
        parallel.drop_worker_database(_PG_SERVER.pop())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadgroup` (pyproject's addopts): whole files, and xdist_group marks, per worker."""
    if config.getvalue("dist") == "loadgroup":
        return parallel.make_scheduler(config, log)
    return None


def _missing(what: str, hint: str) -> None:
    """Skip on a developer machine; fail where SERVEWATCH_REQUIRE_TOOLS is set (CI sets it)."""
    if os.environ.get(REQUIRE_TOOLS):
        pytest.fail(f"{what} is required ({REQUIRE_TOOLS} is set) but missing; {hint}")
    pytest.skip(f"{what} missing ({hint}); CI requires it", allow_module_level=True)


def require_tool(name: str) -> str:
    """The path of command `name` (on PATH or beside this Python), else skip or fail."""
    beside = Path(sys.executable).parent / name
    path = shutil.which(name) or (str(beside) if beside.exists() else None)
    if path is None:
        _missing(f"the command {name!r}", ".ci/run installs it")
    assert path is not None
    return path


def require_module(name: str) -> ModuleType:
    """Import optional package `name` (e.g. shap, from the dev extra), else skip or fail."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"the Python package {name!r}", f"pip install -e '.[dev]' installs it: {exc}")
        raise


FAST = {
    "models": ["linear", "hgb"],
    # no budget_seconds: `trials` per family (a budget would spend itself, issue 32)
    "search": {"method": "random", "trials": 2, "max_rows": 1000},
    "split": {"cv_folds": 2},
    "reference_rows": 200,
    # issue 19: ensembles cost more fits; tests/training/test_ensemble.py turns them on
    "ensemble": {"enabled": False},
    # issue 32: the tested model is published, so that tests can check the published model
    # against its test figures; the refit on all rows: tests/training/test_refit_all.py and the
    # shape matrix (tests/matrix/test_every_shape.py)
    "publish": {"refit_all": False},
}


def fast_config(**overrides: object) -> TrainConfig:
    raw: dict[str, object] = {**FAST, **overrides}
    return TrainConfig.model_validate(raw)


@pytest.fixture(scope="session")
def clf_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clf.csv"
    classification_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory, clf_csv: Path) -> Path:
    """A registry with model `demo` v1 (production), trained once per test session."""
    root = tmp_path_factory.mktemp("registry")
    cfg = fast_config(
        name="demo",
        data=str(clf_csv),
        target="label",
        fairness={"sensitive": ["group"]},
        features={"datetime": ["when"]},
        # the trials drawn before native category splits were searched (the manifest fixtures
        # of tests/training/test_manifest_typed.py were written by them)
        preprocessing={"categorical_splits": "ordinal"},
    )
    run_training(cfg, Registry(root))
    return root


@pytest.fixture
def registry_copy(tmp_path: Path, trained_registry: Path) -> Path:
    """A private copy of the trained registry that a test may change."""
    dest = tmp_path / "registry"
    shutil.copytree(trained_registry, dest)
    return dest


@pytest.fixture(autouse=True)
def _evidently_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Evidently snapshots unless a test asks for them: a snapshot costs about 1.6 s a run
    (10 s for the first in a process), which over the suite's monitoring runs is minutes, and it
    must never land in the checkout's var/evidently. tests/monitoring/test_workspace.py and the
    summary-shape test set a workspace of their own."""
    monkeypatch.setenv("SERVEWATCH_EVIDENTLY_WORKSPACE", "")
