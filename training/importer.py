"""import_pipeline(): a user's already-fitted scikit-learn pipeline becomes a registry version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from core import labels
from core import metrics as metric_contract
from core.decision import check_threshold
from core.decision import of as decided_by
from core.ecosystem import MissingModelPackage, load_model
from core.registry import (
    DataRecord,
    Decision,
    FeatureSchema,
    ManifestDraft,
    ModelInfo,
    Objective,
    ReferenceSample,
    Registry,
)
from training import data, evaluate
from training.config import TrainConfig
from training.errors import TrainingError
from training.manifest import library_versions, now
from training.prepare import quiet
from training.publishing import Release, publish, reference_frame
from training.schema import infer_schema


def import_pipeline(
    pipeline_path: Path,
    *,
    name: str,
    sample: str,
    target: str,
    registry: Registry,
    reference_rows: int = 5000,
    personal_data: list[str] | None = None,
    threshold: float | None = None,
    positive_label: str | None = None,
) -> int:
    """Load, check on the sample, derive schema/metrics/reference, publish; returns the version.

    `threshold` (binary classifiers only): `prediction` is the positive class (`positive_label`,
    default 1 / True, else the last class) when its probability is >= it; None: argmax."""
    model = _load(pipeline_path)
    frame = data.load_dataset(sample)
    data.require_columns(frame, [target], "target")
    personal = list(personal_data or [])
    data.require_columns(frame, personal, "personal-data")
    features = _features(model, frame, target, personal)
    task: Task = (
        "classification"
        if hasattr(model, "predict_proba") and hasattr(model, "classes_")
        else "regression"
    )
    config = TrainConfig.model_validate(
        {"name": name, "data": sample, "target": target, "task": task}
    )
    kinds = data.infer_feature_kinds(frame[features], config, excluded=set())
    x = data.coerce_types(frame[features], kinds)
    y = frame[target]
    if task == "classification":
        y = y.astype(type(model.classes_[0]) if len(model.classes_) else str)
    decision = _given_decision(model, task, threshold, positive_label)
    given, positive = decision["threshold"] if decision else None, 1
    if decision is not None:
        keys = [labels.key(c) for c in model.classes_]
        positive = decided_by(decision, keys)[1]
    metrics = _score_sample(model, x, y, task, given, positive)
    reference = reference_frame(
        model, x, y, task, reference_rows, seed=0, threshold=given, positive=positive
    )
    manifest = ManifestDraft(
        created_at=now(),
        task=task,
        target=target,
        **_label_fields(model, task),
        personal_data=personal,
        features=[
            FeatureSchema.model_validate(f.model_dump(exclude_none=True))
            for f in infer_schema(x, kinds)
        ],
        metrics={"sample": metrics},
        # What monitoring and the gates judge by: the task's default metric, scored on the
        # sample (which may hold training rows: an optimistic reference).
        objective=_sample_objective(model, task, metrics),
        model=ModelInfo.model_validate(
            {"family": type(model).__name__, "imported_from": str(pipeline_path)}
        ),
        decision=Decision.model_validate(decision) if decision is not None else None,
        # the sample may hold the pipeline's training rows: monitoring treats it as in-sample
        reference=ReferenceSample(
            drawn_from="import_sample", unseen=False, rows={"import_sample": len(reference)}
        ),
        data=DataRecord.model_validate(
            {"source": sample, "rows": len(frame), "fingerprint": data.fingerprint(frame)}
        ),
        config=json.loads(config.model_dump_json()),
        libraries=library_versions(),
    )
    # An imported version has no model card: its manifest lacks what the card describes.
    return publish(registry, name, Release(model, reference, manifest, card=False), quiet)


Task = Literal["classification", "regression"]


def _load(pipeline_path: Path) -> Any:
    """The pickled pipeline; TrainingError when it cannot be loaded or cannot predict."""
    try:
        model = load_model(pipeline_path)
    except FileNotFoundError:
        raise TrainingError(f"pipeline {pipeline_path}: no such file") from None
    except MissingModelPackage as exc:
        raise TrainingError(f"pipeline {pipeline_path}: {exc}") from None
    except Exception as exc:
        raise TrainingError(
            f"pipeline {pipeline_path}: cannot load ({type(exc).__name__})"
        ) from None
    if not hasattr(model, "predict"):
        raise TrainingError(f"pipeline {pipeline_path}: the object has no predict()")
    return model


def _features(model: Any, frame: pd.DataFrame, target: str, personal: list[str]) -> list[str]:
    """The pipeline's input columns (its `feature_names_in_`, else the sample's other columns);
    TrainingError when one is personal data or missing from the sample."""
    names = getattr(model, "feature_names_in_", None)
    features = (
        [str(c) for c in names]
        if names is not None
        else [c for c in frame.columns if c != target and c not in personal]
    )
    read = sorted(set(features) & set(personal))
    if read:
        raise TrainingError(
            f"personal-data column(s) {read} are features of the pipeline: their values would "
            "be logged; refit without them or do not declare them personal"
        )
    data.require_columns(frame, features, "feature")
    return features


def _score_sample(
    model: Any, x: pd.DataFrame, y: pd.Series, task: str, given: float | None, positive: int
) -> dict[str, float]:
    """The pipeline's metrics on the sample; TrainingError when it fails on it."""
    try:
        return evaluate.score_model(model, x, y, task, given, positive)
    except Exception as exc:
        raise TrainingError(
            f"the pipeline fails on the sample: {type(exc).__name__}: {exc}"
        ) from None


def _label_fields(model: Any, task: Task) -> dict[str, Any]:
    """The manifest's `classes` (None for a regressor) and `label_type` of the pipeline."""
    if task != "classification":
        return {"classes": None, "label_type": "float"}
    label_type = labels.label_type_of(list(model.classes_))
    classes = labels.native_classes(list(model.classes_), label_type)
    return {"classes": classes, "label_type": label_type}


def _sample_objective(model: Any, task: Task, metrics: dict[str, float]) -> Objective:
    """The task's default metric as the objective, scored on the sample."""
    metric = metric_contract.default_metric(task, len(getattr(model, "classes_", [])))
    return Objective(
        metric=metric, min_test_score=None, test_score=metrics[metric], scored_on="sample"
    )


def _given_decision(
    model: Any, task: str, threshold: float | None, positive_label: str | None
) -> dict[str, Any] | None:
    """The manifest's `decision` of an imported classifier: the threshold given on import, or
    argmax (None for a regressor). TrainingError names the option and the rule."""
    if task != "classification":
        if threshold is not None or positive_label is not None:
            raise TrainingError("--threshold: only a classifier has a decision threshold")
        return None
    classes = list(model.classes_)
    label_type = labels.label_type_of(classes)
    if len(classes) != 2 and threshold is None and positive_label is None:
        return {"threshold": None, "objective": "argmax", "why": "none given on import: argmax"}
    if len(classes) != 2:
        raise TrainingError(
            f"--threshold: a threshold needs a binary classifier; this one has {len(classes)} "
            "classes"
        )
    try:
        check_threshold(threshold, "--threshold")
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    keys = [labels.key(c) for c in classes]
    if positive_label is not None:
        if positive_label not in keys:
            raise TrainingError(
                f"--positive-label: {positive_label!r} is not one of the classes "
                f"({', '.join(keys)})"
            )
        pos = keys.index(positive_label)
    else:
        pos = next((keys.index(k) for k in ("1", "True") if k in keys), len(keys) - 1)
    native = labels.to_native(keys[pos], label_type)
    why = (
        f"given on import: P({native}) >= {threshold}"
        if threshold is not None
        else "none given on import: argmax"
    )
    return {
        "threshold": threshold,
        "positive_class": native,
        "objective": "given" if threshold is not None else "argmax",
        "why": why,
    }
