"""An MLP trained with early stopping (any fold of 1,000 rows or more) can be updated incrementally
(issue 34): scikit-learn's partial_fit refuses early_stopping=True, so the update learns with it
off, restores it, and the manifest says so."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.registry import Manifest
from training import data, incremental
from training.config import TrainConfig
from training.errors import TrainingError
from training.selection import candidate_pipeline

KINDS = data.FeatureKinds(numeric=["a", "b"], categorical=["c"], datetime=[])


def rows(n: int, seed: int, shift: float = 0.0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["p", "q"], n)}
    )
    y = (x["a"] + 0.5 * x["b"] + shift + rng.normal(0, 0.5, n) > 0).map({True: "yes", False: "no"})
    return x, y


def mlp(calibrate: str | None) -> Any:
    """The MLP training builds for a fold of 1,500 rows: with early stopping."""
    config = TrainConfig.model_validate({"models": ["mlp"]})
    size = data.DataSize(rows=1500, features=3, n_classes=2, smallest_class=700)
    return candidate_pipeline(KINDS, "mlp", {}, "classification", config, calibrate, size=size)


@pytest.mark.parametrize("calibrate", [None, "sigmoid"])
def test_an_mlp_fitted_with_early_stopping_learns_an_update(calibrate: str | None) -> None:
    x, y = rows(2000, 0)
    pipe = mlp(calibrate).fit(x, y)
    members = incremental._members(pipe.steps[-1][1])
    assert all(m.early_stopping for m in members)  # as training fits it on this many rows
    # new rows where "yes" is far more frequent: the update must move towards them
    x_new, y_new = rows(600, 1, shift=1.5)
    before = pipe.predict_proba(x_new)[:, 1].mean()
    updated = incremental.update(pipe, x_new, y_new)
    after = updated.predict_proba(x_new)[:, 1].mean()
    assert after > before + 0.02, (before, after)
    assert pipe.predict_proba(x_new)[:, 1].mean() == before  # the parent is untouched
    assert all(m.early_stopping for m in incremental._members(updated.steps[-1][1]))
    again = incremental.update(updated, x_new, y_new)  # restored: a second update works too
    assert np.isfinite(again.predict_proba(x_new)).all()
    parent = Manifest.model_validate({
        "name": "m", "version": 1, "created_at": "2024-01-01T00:00:00Z", "target": "label",
        "task": "classification", "classes": ["no", "yes"], "model": {"family": "mlp"},
        "objective": {"metric": "roc_auc"}, "metrics": {}, "features": [],
    })  # fmt: skip
    manifest = incremental.updated_manifest(
        parent, updated, x_new, y_new, rows=600, seconds=0.1, extra={}
    )
    assert manifest.model.incremental_update is not None
    assert manifest.model.incremental_update["note"] == incremental.EARLY_STOPPING_NOTE
    assert "name" not in manifest.body() and manifest.objective is not None
    assert manifest.objective.test_score == manifest.metrics["test"]["roc_auc"]
    with pytest.raises(TrainingError, match="records no objective"):
        incremental.updated_manifest(
            parent.model_copy(update={"objective": None}), updated, x_new, y_new,
            rows=600, seconds=0.1, extra={},
        )  # fmt: skip
