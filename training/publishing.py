"""Publish a version folder to the registry and promote it: the last two steps of every run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator

from core import labels
from core import metrics as metric_contract
from core.decision import decide
from core.missing import as_trained
from core.registry import (
    LABEL_COL,
    MODEL_FILE,
    PREDICTION_COL,
    PROBA_PREFIX,
    REFERENCE_FILE,
    Manifest,
    Registry,
)
from training import card
from training.assessment import Champion
from training.budget import baseline_copies
from training.errors import TrainingError
from training.fingerprints import RowPrints
from training.prepare import Progress
from training.search import make_cv

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
    published; `reports(folder, manifest)` writes further files (and may set manifest fields)."""

    model: BaseEstimator  # a fitted scikit-learn-compatible estimator, usually a Pipeline
    reference: pd.DataFrame
    manifest: Manifest
    reports: Callable[[Path, Manifest], None] | None = None
    card: bool = True  # write model_card.md
    rows: RowPrints | None = None  # the row fingerprints (manifest's `data.row_fingerprints`)


def publish(registry: Registry, name: str, release: Release, say: Progress) -> int:
    """Stage the files and rename them into place as the next version; returns its number."""

    def stage(folder: Path) -> Manifest:
        joblib.dump(release.model, folder / MODEL_FILE, compress=3)
        release.reference.to_parquet(folder / REFERENCE_FILE, index=False)
        if release.rows is not None:
            release.rows.save(folder)
        if release.reports is not None:
            release.reports(folder, release.manifest)
        if release.card:
            (folder / "model_card.md").write_text(
                card.render({**release.manifest.body(), "name": name})
            )
        return release.manifest

    say("publishing to the registry")
    return registry.publish(name, stage)


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


REFERENCE_MIN_UNSEEN = 1000
"""A test set smaller than this (or than `reference_rows`) is topped up to it with out-of-fold
predictions of train and validation rows, so drift tests and noise bands have rows to go on."""
OUT_OF_FOLD_FOLDS = 5


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
    """A sample of inputs with `model`'s predictions (classes decided by the version's threshold,
    `core.decision.decide`) and the labels, in the layout of `reference.parquet`."""
    if len(x) > rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))
        x, y = x.iloc[idx], y.iloc[idx]
    fed = as_trained(x, model)  # gaps as the model was trained with them
    if task == "classification":
        return _frame(
            x,
            y,
            task,
            np.asarray(model.predict_proba(fed), dtype=float),
            list(model.classes_),
            threshold,
            positive,
        )
    return _frame(x, y, task, np.asarray(model.predict(fed), dtype=float))


def _frame(
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    predicted: npt.NDArray[np.float64],
    classes: list[Any] | None = None,
    threshold: float | None = None,
    positive: int = 1,
) -> pd.DataFrame:
    """Inputs, predictions (probabilities per class for a classifier) and labels."""
    ref = x.reset_index(drop=True).copy()
    if task == "classification" and classes is not None:
        picked = decide(predicted, threshold, positive)
        ref[PREDICTION_COL] = np.asarray(classes, dtype=object)[picked]
        for i, c in enumerate(classes):
            ref[f"{PROBA_PREFIX}{c}"] = predicted[:, i]
        ref[PREDICTION_COL] = ref[PREDICTION_COL].astype(str)
        ref[LABEL_COL] = y.astype(str).to_numpy()
    else:
        ref[PREDICTION_COL] = predicted
        ref[LABEL_COL] = y.to_numpy(dtype=float)
    return ref


def unseen_reference(
    model: BaseEstimator,
    test: tuple[pd.DataFrame, pd.Series],
    fitted_on: tuple[pd.DataFrame, pd.Series],
    task: str,
    rows: int,
    seed: int,
    *,
    threshold: float | None = None,
    positive: int = 1,
    validation: tuple[BaseEstimator, pd.DataFrame, pd.Series] | None = None,
    say: Progress | None = None,
    ordered: bool = False,
    keep_copies: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`reference.parquet` from rows the model never trained on, and the manifest's `reference`
    record saying what it was drawn from.

    The test rows (up to `rows`). When there are fewer than min(rows, REFERENCE_MIN_UNSEEN), topped
    up with the validation rows as predicted by the same model fitted on the training rows only
    (`validation`: that model, x, y; it never saw them, and costs no fit), then with out-of-fold
    predictions of rows the final model was fitted on (`fitted_on`): each predicted by a copy of
    the model refitted without its fold, the folds split as the search's (`_out_of_fold`:
    copies together unless not `keep_copies`, forward in time when `ordered`), only as many folds
    as needed. A model that cannot be refitted (some mitigations) keeps what it has."""
    x_test, y_test = test
    parts = [
        reference_frame(
            model, x_test, y_test, task, rows, seed, threshold=threshold, positive=positive
        )
    ]
    record: dict[str, Any] = {"drawn_from": "test", "unseen": True, "rows": {"test": len(parts[0])}}
    wanted = min(rows, REFERENCE_MIN_UNSEEN) - len(parts[0])
    if wanted > 0 and validation is not None and len(validation[1]):
        on_train, x_val, y_val = validation
        parts.append(
            reference_frame(
                on_train, x_val, y_val, task, wanted, seed, threshold=threshold, positive=positive
            )
        )
        record["rows"]["validation"] = len(parts[-1])
        wanted -= len(parts[-1])
    x_fit, y_fit = fitted_on
    if wanted > 0 and len(x_fit) >= OUT_OF_FOLD_FOLDS * 2:
        used = validation[1].index if validation is not None else pd.Index([])
        folds = Folds(OUT_OF_FOLD_FOLDS, ordered, keep_copies)
        try:
            held, split = _out_of_fold(
                model, x_fit, y_fit, task, wanted, seed, threshold, positive, folds, exclude=used
            )
            parts.append(held)
            record["rows"]["out_of_fold"] = len(held)
            record["folds"] = split
        except Exception as exc:  # what there is is still honest
            if say is not None:
                say(f"reference: no out-of-fold rows ({type(exc).__name__} refitting the model)")
            record["out_of_fold_error"] = f"{type(exc).__name__}: {exc}"[:300]
    record["drawn_from"] = "+".join(record["rows"])
    return pd.concat(parts, ignore_index=True), record


BASELINE_NOTE = (
    "the watched metrics on rows the tested model was scored on without fitting it: the test "
    "rows (the tested model) and out-of-fold predictions of the train and validation rows "
    "(copies, each fitted without one fold, the folds split as the search's cross-validation: "
    "a row's duplicates in its fold, publish.baseline_folds): the realised-performance alerts' "
    "baseline, measured on more rows than the test score (a 1,000-row window's drop is "
    "otherwise blurred by the test rows' own sampling error)"
)
ORDERED_BASELINE_NOTE = (
    "the watched metrics on the test rows alone (the tested model): with a time column no "
    "out-of-fold copy is honest. Shuffled folds predict past rows from later ones (0.789 where "
    "the test rows read 0.717 on a drifting relation); forward folds are other models, fitted "
    "on fewer rows, each predicting the period right after its rows: a shorter horizon than the "
    "tested model's to its test rows (0.765 there, with the test rows). The test "
    "rows are the only ones the tested model predicts as it will predict live traffic: after "
    "every row it learnt"
)


def unseen_baseline(
    model: BaseEstimator,
    test: tuple[pd.DataFrame, pd.Series],
    fitted_on: tuple[pd.DataFrame, pd.Series],
    task: str,
    seed: int,
    *,
    threshold: float | None = None,
    positive: int = 1,
    say: Progress | None = None,
    folds: int = OUT_OF_FOLD_FOLDS,
    ordered: bool = False,
    keep_copies: bool = True,
) -> dict[str, Any] | None:
    """The manifest's `reference.baseline`: every metric on the test rows as `model` predicts
    them plus every fitted row predicted out of fold (`_out_of_fold` over all folds, split as the
    search's: a row's copies in its fold unless not `keep_copies`), with the rows each part
    holds; with a time column (`ordered`) the test rows alone (ORDERED_BASELINE_NOTE says why).
    None when there is no baseline (`budget.baseline_copies`: folds below 2, too few rows) or
    the copies cannot be fitted (some mitigations)."""
    x_fit, y_fit = fitted_on
    if not baseline_copies(folds, len(x_fit)):
        return None
    x_test, y_test = test
    on_test = reference_frame(
        model, x_test, y_test, task, len(x_test), seed, threshold=threshold, positive=positive
    )
    plan = Folds(folds, ordered, keep_copies)
    if ordered:
        return _baseline_record(model, task, [on_test], threshold, positive, plan, 0)
    try:
        if say is not None:
            say(f"baseline: out-of-fold predictions of {len(x_fit):,} rows")
        held, split = _out_of_fold(
            model, x_fit, y_fit, task, len(x_fit), seed, threshold, positive, plan
        )
    except Exception as exc:  # the test score stays the baseline
        if say is not None:
            say(f"baseline: none ({type(exc).__name__} refitting the model)")
        return None
    return _baseline_record(model, task, [on_test, held], threshold, positive, plan, split)


def _baseline_record(
    model: BaseEstimator,
    task: str,
    parts: list[pd.DataFrame],
    threshold: float | None,
    positive: int,
    plan: Folds,
    split: int,
) -> dict[str, Any]:
    """`reference.baseline` from its parts (the test rows, then any out-of-fold rows): every
    metric over them, the rows of each, the folds split (0: none), how they were split
    (`copies_together`, `ordered`: monitoring trusts the out-of-fold rows of a record that says)
    and the note."""
    rows = pd.concat(parts, ignore_index=True)
    if task == "classification":
        classes = list(model.classes_)
        proba = rows[[f"{PROBA_PREFIX}{c}" for c in classes]].to_numpy(float)
        scores = metric_contract.classification_metrics(
            rows[LABEL_COL], proba, [str(c) for c in classes], threshold, positive
        )
    else:
        scores = metric_contract.regression_metrics(rows[LABEL_COL], rows[PREDICTION_COL])
    counts = dict(zip(("test", "out_of_fold"), map(len, parts), strict=False))
    return {
        "metrics": {k: float(v) for k, v in scores.items()},
        "rows": counts,
        "folds": split,
        "copies_together": plan.keep_copies,
        "ordered": plan.ordered,
        "note": ORDERED_BASELINE_NOTE if plan.ordered else BASELINE_NOTE,
    }


@dataclass(frozen=True)
class Folds:
    """How out-of-fold copies are split: as the search's cross-validation
    (`training.search.make_cv`), `folds` of them (fewer on small data), a row's copies (identical
    feature rows) in its fold unless not `keep_copies`, forward in time when `ordered`."""

    folds: int = OUT_OF_FOLD_FOLDS
    ordered: bool = False
    keep_copies: bool = True

    def split(
        self, x: pd.DataFrame, y: pd.Series, task: str, seed: int
    ) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        """(train, held out) positions of each fold; forward folds latest first (the copies
        fitted on the most rows; the earliest rows are never held out)."""
        cv = make_cv(task, self.folds, self.ordered, seed, self.keep_copies)
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(x, y)]
        return splits[::-1] if self.ordered else splits


def _out_of_fold(
    model: BaseEstimator,
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    rows: int,
    seed: int,
    threshold: float | None,
    positive: int,
    folds: Folds,
    exclude: pd.Index | None = None,
) -> tuple[pd.DataFrame, int]:
    """Up to `rows` rows of `x` (none whose index is in `exclude`: already in the reference), each
    predicted by `model` refitted on its fold's training part (`folds`: a plain shuffled KFold
    fitted a row's duplicates beside it, its baseline read 0.957 where the test rows read
    0.630); only as many folds are fitted as it takes to reach `rows` (one, when a fold holds
    enough). Returns the rows and the folds split."""
    from sklearn.base import clone

    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(x), dtype=bool)
    classes = list(model.classes_) if task == "classification" else None
    predicted = np.zeros((len(x), len(classes))) if classes is not None else np.zeros(len(x))
    splits = folds.split(x, y, task, seed)
    for train_idx, held_idx in splits:
        missing = rows - int(chosen.sum())
        if missing <= 0:
            break
        if exclude is not None and len(exclude):
            held_idx = held_idx[~x.index[held_idx].isin(exclude)]
        held_idx = np.sort(rng.permutation(held_idx)[:missing])
        if len(held_idx) == 0:
            continue
        chosen[held_idx] = True
        copy = clone(model).fit(x.iloc[train_idx], y.iloc[train_idx])
        held = as_trained(x.iloc[held_idx], copy)
        if classes is None:
            predicted[held_idx] = copy.predict(held)
            continue
        proba = np.asarray(copy.predict_proba(held), dtype=float)
        own = [labels.key(c) for c in copy.classes_]
        for j, c in enumerate(classes):  # a class the fold never saw keeps probability 0
            if labels.key(c) in own:
                predicted[held_idx, j] = proba[:, own.index(labels.key(c))]
    idx = np.flatnonzero(chosen)
    frame = _frame(x.iloc[idx], y.iloc[idx], task, predicted[idx], classes, threshold, positive)
    return frame, len(splits)
