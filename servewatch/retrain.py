"""retrain(): the version's original data plus the labelled prediction log -> a gated challenger.

The most recent share of the labelled window is held out from retraining. The challenger is scored
against the champion on that recent window and on the original test split; it is promoted only when
the objective metric is not worse by more than `margin` on either and no fairness gap (demographic
parity difference) is wider by more than `fairness_margin`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np
import orjson
import pandas as pd
from sklearn.base import BaseEstimator

from core import labels
from core import metrics as metric_contract
from core.ecosystem import load_model
from core.registry import (
    MODEL_FILE,
    REFERENCE_FILE,
    DataRecord,
    Manifest,
    Registry,
    RowFingerprints,
)
from predlog.store import PredictionStore, WindowQuery
from training import data, fingerprints
from training.config import TrainConfig
from training.errors import TrainingError
from training.fingerprints import RowPrints
from training.gate import Gate, GateVerdict, Rows
from training.incremental import update, updated_manifest, updated_reference
from training.prepare import Progress, quiet
from training.publishing import Release, promote_through_gate, publish
from training.refit import ExtraRows
from training.train import TrainResult, train_candidate

# `from` is a Python keyword, hence the functional form.
LogWindow = TypedDict(
    "LogWindow",
    {
        "from": float,
        "to": float,
        "labelled_rows": int,
        "used_for_training": int,
        "held_out_for_gate": int,
    },
)


class OriginalData(TypedDict):
    """The parent's training data, which the retrain starts from again."""

    source: str | None
    rows: int
    test_rows: NotRequired[int]  # the parent's test rows found in it (kept out of training)
    test_rebuilt_from: NotRequired[Rebuilt]


class Lineage(TypedDict):
    """The manifest's `lineage`: where a retrained version came from."""

    parent_version: int
    original: OriginalData
    log_window: LogWindow
    incremental: NotRequired[bool]  # True for an incremental update


Rebuilt = Literal["fingerprints", "split"]
"""How the parent's test rows were found: its recorded row fingerprints, or (versions published
before them) by splitting the data again as its training run did."""


def original_test(
    prints: RowPrints | None,
    manifest: Manifest,
    original: pd.DataFrame,
    config: TrainConfig,
    kinds: data.FeatureKinds,
) -> tuple[pd.Index, Rebuilt]:
    """The rows of `original` (as read) that were the parent's test rows, by its fingerprints
    `prints` (None: published before them, split again)."""
    if prints is not None and all(c in original.columns for c in prints.columns):
        hit = np.isin(fingerprints.hashes(original, prints.columns), prints.of("test"))
        return original.index[hit], "fingerprints"
    target, task = manifest.target, manifest.task
    frame = data.coerce_types(original, kinds)
    frame = frame[frame[target].notna()]
    if task == "classification":  # training splits on the labels as text
        frame[target] = frame[target].astype(str)
    time_column = config.time_column
    keep = [*kinds.all, target]
    if time_column and time_column not in keep:
        frame[time_column] = pd.to_datetime(frame[time_column], errors="coerce")
        keep.append(time_column)
    return data.split(frame[keep], target, task, config).x_test.index, "split"


def _with_window(prints: RowPrints | None, window: pd.DataFrame) -> RowPrints | None:
    """The parent's fingerprints and the labelled window's rows (as logged) as training rows;
    None when the parent records none."""
    if prints is None or any(c not in window.columns for c in prints.columns):
        return None
    return fingerprints.with_rows(prints, window, "train")


def _learnt_test(parent: Manifest) -> bool:
    """Whether the parent's published model learnt its test rows (refitted on all rows)."""
    return "test" in fingerprints.learned(parent)


def _whole_test(prints: RowPrints | None, test_index: pd.Index) -> bool:
    """Whether the data file holds every one of the parent's test rows (a retrained parent's
    test split also drew on its log window, which the file lacks)."""
    return prints is None or len(test_index) >= len(prints.of("test"))


def _recorded_test(parent: Manifest, metric: str, *, whole: bool) -> dict[str, Any]:
    """The gate's recorded champion figures (`Gate.recorded`): a champion refitted on all rows
    learnt its original test rows, so its tested model's test score on them is compared there
    (with the challenger's tested model's). Only where the rows found are the ones that score
    covers (`whole`); otherwise the check is for information only (`Gate.partial`)."""
    tested = parent.metrics.get("test") or {}
    if not _learnt_test(parent) or metric not in tested:
        return {}
    if not whole:
        return {"partial": frozenset({"original_test"})}
    return {"recorded": {"original_test": float(tested[metric])}}


PARENT_TEST_ROWS = "the parent's test rows (its refit on all rows learnt them)"


@dataclass
class RetrainResult(TrainResult):
    """A TrainResult with the gate's verdict (also in `manifest["gate"]`)."""

    verdict: GateVerdict


LABELLED_CAP = 200_000
"""Most labelled log rows a retraining reads (the newest): its memory is bounded by it."""


def labelled_window(
    store: PredictionStore, model: str, target: str, *, since: float | None, time_column: str | None
) -> pd.DataFrame:
    """Logged inputs with their feedback labels, oldest first, one row per prediction id: the
    newest `LABELLED_CAP` labelled rows made at or after `since`, read by the log's window query
    (filtered and capped in the database)."""
    rows = store.read_log_window(WindowQuery(model, since=since), cap=LABELLED_CAP, outputs=False)
    records = []
    for r in reversed(rows):
        rec = orjson.loads(r["inputs"])
        rec[target] = orjson.loads(r["label"] or "null")  # a labelled window: never None
        rec["__id"] = r["id"]
        rec["__logged_at"] = r["created_at"]
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return frame
    frame = frame.drop_duplicates("__id").sort_values("__logged_at", kind="stable")
    if time_column:
        frame[time_column] = pd.to_datetime(frame["__logged_at"], unit="s")
    return frame.reset_index(drop=True)


def _usable_labels(window: pd.DataFrame, target: str, manifest: Manifest) -> pd.DataFrame:
    """The rows whose label is one of the parent's classes (in its label type) or, for a
    regressor, a finite number; others (logged before labels were checked) are left out."""
    if window.empty:
        return window
    classes = manifest.classes if manifest.task == "classification" else None
    label_type: labels.LabelType = manifest.label_type or (
        "string" if classes is not None else "float"
    )

    def typed(value: object) -> object:
        try:
            return labels.coerce(value, label_type, classes)
        except ValueError:
            return None

    values = window[target].map(typed)
    keep = values.notna()
    return window[keep].assign(**{target: values[keep]}).reset_index(drop=True)


def _enough_labels(
    store: PredictionStore,
    model: str,
    manifest: Manifest,
    since: float | None,
    time_column: str | None,
    min_rows: int,
) -> pd.DataFrame:
    """The labelled window's rows with usable labels; TrainingError below `min_rows`."""
    target = manifest.target
    window = labelled_window(store, model, target, since=since, time_column=time_column)
    window = _usable_labels(window, target, manifest)
    if len(window) < min_rows:
        raise TrainingError(
            f"only {len(window)} labelled predictions for {model}; "
            f"at least {min_rows} are needed to retrain"
        )
    return window


def retrain(
    *,
    registry: Registry,
    store: PredictionStore,
    model: str,
    since: float | None = None,
    holdout_share: float = 0.3,
    margin: float = 0.01,
    fairness_margin: float = 0.05,
    min_rows: int = 50,
    dry_run: bool = False,
    incremental: bool = False,
    overrides: dict[str, object] | None = None,
    progress: Progress | None = None,
) -> RetrainResult:
    """Retrain `model` from its production version's config; gate; promote when the gate passes."""

    parent = registry.resolve(model)
    raw = registry.manifest(model, parent)
    config = TrainConfig.model_validate({**(raw.config or {}), **(overrides or {})})
    target, task = raw.target, raw.task
    # versions imported before objectives were recorded: the task's default metric
    metric = (raw.objective and raw.objective.metric) or metric_contract.default_metric(
        raw.task, len(raw.classes or [])
    )
    features = [f.name for f in raw.features]
    if not config.data:
        raise TrainingError(f"{model} v{parent} records no training data to start from")
    original = data.load_dataset(config.data, config.source, config.seed)
    window = _enough_labels(store, model, raw, since, config.time_column, min_rows)
    n_hold = max(1, int(len(window) * holdout_share))
    recent = window.iloc[-n_hold:]
    fresh = window.iloc[:-n_hold]
    champion = load_model(registry.path(model, parent) / MODEL_FILE)
    champ_kinds = _kinds(raw)
    prints = fingerprints.load(registry.path(model, parent), raw)
    test_index, rebuilt = original_test(prints, raw, original, config, champ_kinds)
    orig = data.coerce_types(original.loc[test_index], champ_kinds)
    test, y_test_orig = orig[features], orig[target]
    recent_rows = Rows(data.coerce_types(recent, champ_kinds)[features], recent[target])
    sensitive = [c for c in config.fairness.sensitive if c in recent.columns]
    gate = Gate(
        champion=champion,
        task=task,
        metric=metric,
        margin=margin,
        fairness_margin=fairness_margin,
        checks={"recent_window": recent_rows, "original_test": Rows(test[features], y_test_orig)},
        fairness_rows=recent_rows,
        groups=recent[sensitive],
        champion_decision=raw.decided,
        **_recorded_test(raw, metric, whole=_whole_test(prints, test_index)),
    )
    lineage = _lineage(parent, config, original, (test_index, rebuilt), window, len(recent))
    # The recorded config names the original source: a later retrain starts from it again.
    extra = {"config": json.loads(config.model_dump_json()), "lineage": lineage}
    if incremental:
        x_fresh = data.coerce_types(fresh, champ_kinds)[features]
        lineage["incremental"] = True
        return _incremental(
            registry,
            model,
            parent,
            raw,
            champion,
            Rows(x_fresh, fresh[target]),
            gate,
            extra,
            dry_run=dry_run,
            rows=_with_window(prints, fresh),
        )
    combined = _training_rows(original, test_index, fresh, config)
    # A champion refitted on all rows learnt its test rows (on time-ordered data the newest before
    # the window): the challenger's refit learns them too, its tested model never does.
    learnt = ExtraRows(original.loc[test_index], PARENT_TEST_ROWS) if _learnt_test(raw) else None
    say = progress or quiet
    return _full(registry, config, combined, gate, extra, dry_run=dry_run, say=say, learnt=learnt)


def _kinds(manifest: Manifest) -> data.FeatureKinds:
    """The version's input features by kind, as its manifest records them."""
    return data.FeatureKinds(
        numeric=[f.name for f in manifest.features if f.kind == "numeric"],
        categorical=[f.name for f in manifest.features if f.kind == "categorical"],
        datetime=[f.name for f in manifest.features if f.kind == "datetime"],
    )


def _training_rows(
    original: pd.DataFrame, test_index: pd.Index, fresh: pd.DataFrame, config: TrainConfig
) -> pd.DataFrame:
    """The original rows but the parent's test rows, then the window's rows used for training.

    The challenger never trains on the rows it will be judged on: the original test split stays
    held out, as it was for the champion."""
    rest = original.drop(index=test_index)
    if config.time_column and not pd.api.types.is_datetime64_any_dtype(rest[config.time_column]):
        # parsed as training parses it (its time_format, or the reading that leaves fewer values
        # unread): the log's rows carry their times as timestamps
        times = original[config.time_column]
        parsed = data.parse_times(times, config.time_column, config.time_format).values
        rest[config.time_column] = parsed.loc[rest.index]
    return pd.concat([rest, fresh.drop(columns=["__id", "__logged_at"])], ignore_index=True)


def _lineage(
    parent: int,
    config: TrainConfig,
    original: pd.DataFrame,
    test: tuple[pd.Index, Rebuilt],
    window: pd.DataFrame,
    held_out: int,
) -> Lineage:
    """Where the retrained version comes from: the parent, its original data, the log window."""
    test_index, rebuilt = test
    return {
        "parent_version": parent,
        "original": {
            "source": config.data,
            "rows": len(original),
            "test_rows": len(test_index),
            "test_rebuilt_from": rebuilt,
        },
        "log_window": {
            "from": float(window["__logged_at"].min()),
            "to": float(window["__logged_at"].max()),
            "labelled_rows": len(window),
            "used_for_training": len(window) - held_out,
            "held_out_for_gate": held_out,
        },
    }


def _full(
    registry: Registry,
    config: TrainConfig,
    combined: pd.DataFrame,
    gate: Gate,
    extra: dict[str, Any],
    *,
    dry_run: bool,
    say: Progress,
    learnt: ExtraRows | None,
) -> RetrainResult:
    """Train a challenger on `combined` with the parent's config (its refit on all rows also
    learning `learnt`'s rows), gate it, publish and promote through the gate (`dry_run`: publish
    nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retrain.parquet"
        for col in combined.columns:
            if combined[col].dtype == object:
                combined[col] = combined[col].map(lambda v: None if v is None or v != v else v)
        combined.to_parquet(path, index=False)
        cfg = config.model_copy(update={"data": str(path)})
        candidate = train_candidate(cfg, registry, say, refit_extra=learnt)
        manifest = candidate.manifest
        manifest.config, manifest.lineage = extra["config"], extra["lineage"]
        say("promotion gate")
        tested = candidate.model if candidate.tested is None else candidate.tested
        verdict = gate.verdict(candidate.model, manifest.classes, manifest.decided, tested)
        manifest.gate = dict(verdict)
        if dry_run:
            return RetrainResult(cfg.name, None, manifest.body(), None, verdict)
        version = publish(registry, cfg.name, candidate.release(), say)
        promoted = promote_through_gate(registry, cfg.name, version, verdict["passed"])
    return RetrainResult(cfg.name, version, manifest.body(), promoted, verdict)


def summary_lines(result: RetrainResult) -> list[str]:
    """The gate's verdict as the lines `servewatch retrain` prints."""
    g = result.verdict
    lines = [
        f"gate {'PASSED' if g['passed'] else 'REFUSED'} on {g['metric']} (margin {g['margin']})"
    ]
    for label, c in g["checks"].items():
        lines.append(
            f"  {label}: champion {c['champion']:.4f}, challenger {c['challenger']:.4f} "
            f"on {c['rows']} rows -> {'ok' if c['passed'] else 'worse'}"
        )
    if g["fairness"]:
        lines.append(f"  fairness (demographic parity difference): {json.dumps(g['fairness'])}")
    return lines


def _incremental(
    registry: Registry,
    model: str,
    parent: int,
    raw: Manifest,
    champion: BaseEstimator,
    fresh: Rows,
    gate: Gate,
    extra: dict[str, Any],
    *,
    dry_run: bool,
    rows: RowPrints | None,
) -> RetrainResult:
    """Update the parent from the new window only, gate it like a full retrain, publish; its
    row fingerprints are the parent's and the window's (`rows`; None: it records none)."""
    if len(fresh.x) == 0:
        raise TrainingError("no labelled rows left for the update after the gate's hold-out")
    started = time.perf_counter()
    y_fresh = fresh.y
    if hasattr(champion, "classes_"):  # labels as the pipeline holds its classes (text or not)
        own = {labels.key(c): c for c in champion.classes_}
        y_fresh = y_fresh.map(lambda v: own[labels.key(v)])
    challenger = update(champion, fresh.x, y_fresh)
    seconds = time.perf_counter() - started
    test = gate.checks["original_test"]
    manifest = updated_manifest(
        raw, challenger, test.x, test.y, rows=len(fresh.x), seconds=seconds, extra=extra
    )
    verdict = gate.verdict(challenger, manifest.classes, manifest.decided)
    manifest.gate = dict(verdict)
    kept = raw.data.body() if raw.data is not None else {}
    manifest.data = DataRecord.model_validate(
        {k: v for k, v in kept.items() if k != "row_fingerprints"}
    )
    if rows is not None:
        manifest.data.row_fingerprints = RowFingerprints.model_validate(rows.record())
    if dry_run:
        return RetrainResult(model, None, manifest.body(), None, verdict)
    features = [f.name for f in raw.features]
    parent_reference = pd.read_parquet(registry.path(model, parent) / REFERENCE_FILE)
    reference = updated_reference(
        challenger,
        parent_reference,
        features,
        raw.task,
        raw.decided,
    )
    release = Release(challenger, reference, manifest, rows=rows)
    version = publish(registry, model, release, quiet)
    promoted = promote_through_gate(registry, model, version, verdict["passed"])
    return RetrainResult(model, version, manifest.body(), promoted, verdict)
