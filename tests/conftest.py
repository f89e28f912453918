"""Shared fixtures: tiny data files, a tiny trained registry, settings for the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data import classification_frame
from training.config import TrainConfig
from training.registry import Registry
from training.train import run_training

FAST = {
    "models": ["linear", "hgb"],
    "search": {"method": "random", "trials": 2, "budget_seconds": 10, "max_rows": 1000},
    "split": {"cv_folds": 2},
    "reference_rows": 200,
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
    )
    run_training(cfg, Registry(root))
    return root


@pytest.fixture
def registry_copy(tmp_path: Path, trained_registry: Path) -> Path:
    """A private copy of the trained registry that a test may change."""
    import shutil

    dest = tmp_path / "registry"
    shutil.copytree(trained_registry, dest)
    return dest
