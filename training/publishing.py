"""Publish a version folder to the registry and promote it: the last two steps of every run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from core import metrics as metric_contract
from core.decision import decide
from core.missing import as_trained
from core.registry import (
    LABEL_COL,
    MODEL_FILE,
    PREDICTION_COL,
    PROBA_PREFIX,
    REFERENCE_FILE,
    Registry,
)
from training import card
from training.assessment import Champion
from training.errors import TrainingError
from training.fingerprints import RowPrints
from training.prepare import Progress

Promote = Literal["auto", "always", "never"]
"""auto: production when there is none or the new version beats it, else staging."""
Alias = Literal["production", "staging"]
PROMOTE_MODES: tuple[Promote, ...] = ("auto", "always", "never")


def promote_mode(value: str) -> Promote:
    """`value` as a Promote; TrainingError for anything else (there is no fourth mode)."""
    for mode in PROMOTE_MODES:
        if value == mode:
            return mode
    raise TrainingError(f"--promote must be auto, always or never, not {value!r}")


@dataclass
class Release:
    """What a version folder is made of. `manifest` gains `name`, `version` and `files` when
    published; `reports(folder, manifest)` writes further files (and may add manifest keys)."""

    model: BaseEstimator  # a fitted scikit-learn-compatible estimator, usually a Pipeline
    reference: pd.DataFrame
    manifest: dict[str, Any]
    reports: Callable[[Path, dict[str, Any]], None] | None = None
    card: bool = True  # write model_card.md
    rows: RowPrints | None = None  # the row fingerprints (manifest's `data.row_fingerprints`)


def publish(registry: Registry, name: str, release: Release, say: Progress) -> int:
    """Stage the files and rename them into place as the next version; returns its number."""

    def stage(folder: Path) -> dict[str, Any]:
        joblib.dump(release.model, folder / MODEL_FILE, compress=3)
        release.reference.to_parquet(folder / REFERENCE_FILE, index=False)
        if release.rows is not None:
            release.rows.save(folder)
        if release.reports is not None:
            release.reports(folder, release.manifest)
        if release.card:
            (folder / "model_card.md").write_text(card.render({**release.manifest, "name": name}))
        return release.manifest

    say("publishing to the registry")
    version = registry.publish(name, stage)
    release.manifest["version"] = version
    return version


def promote(
    registry: Registry,
    name: str,
    version: int,
    mode: Promote,
    champion: Champion | None,
    metric: str,
) -> Alias | None:
    """Move an alias to `version` as `mode` says, judging by the objective's metric."""
    if mode == "never":
        return None
    if mode == "always" or champion is None:
        registry.set_alias(name, "production", version)
        return "production"
    if "champion_score" in champion and metric_contract.get(metric).better(
        champion["challenger_score"], champion["champion_score"]
    ):
        registry.set_alias(name, "production", version)
        return "production"
    registry.set_alias(name, "staging", version)
    return "staging"


def promote_through_gate(registry: Registry, name: str, version: int, passed: bool) -> Alias | None:
    """A retrained version becomes production only when its gate passed; else no alias moves."""
    if not passed:
        return None
    registry.set_alias(name, "production", version)
    return "production"


def reference_frame(
    model: BaseEstimator,
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    rows: int,
    seed: int,
    *,
    threshold: float | None = None,
    positive: int = 1,
) -> pd.DataFrame:
    """`reference.parquet`: a sample of inputs with the model's predictions (classes decided
    by the version's threshold, `core.decision.decide`) and the labels."""
    if len(x) > rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))
        x, y = x.iloc[idx], y.iloc[idx]
    ref = x.reset_index(drop=True).copy()
    x = as_trained(x, model)  # gaps as the model was trained with them
    if task == "classification":
        proba = model.predict_proba(x)
        classes = list(model.classes_)
        picked = decide(np.asarray(proba, dtype=float), threshold, positive)
        ref[PREDICTION_COL] = np.asarray(classes, dtype=object)[picked]
        for i, c in enumerate(classes):
            ref[f"{PROBA_PREFIX}{c}"] = proba[:, i]
        ref[PREDICTION_COL] = ref[PREDICTION_COL].astype(str)
        ref[LABEL_COL] = y.astype(str).to_numpy()
    else:
        ref[PREDICTION_COL] = model.predict(x)
        ref[LABEL_COL] = y.to_numpy(dtype=float)
    return ref
