"""Prepare: read the data (a source: the search's sample first), check, infer, gate, split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from core import labels
from core import metrics as metric_contract
from training import data, quality, sources
from training.config import TrainConfig
from training.errors import TrainingError
from training.sources import Loaded

Progress = Callable[[str], None]


def quiet(_message: str) -> None:
    """A Progress that shows nothing."""


@dataclass(frozen=True)
class Prepared:
    """The data a run trains on, checked and split, and what was decided about it."""

    config: TrainConfig  # with the objective's metric filled in
    frame: pd.DataFrame  # every row read, types coerced
    raw: pd.DataFrame  # the same rows as read (the fingerprints hash them; never read twice)
    task: str
    label_type: labels.LabelType
    classes: list[str] | None  # classification: the labels as text, sorted
    metric: str
    kinds: data.FeatureKinds  # the model's input features (quality drops removed)
    keep: list[str]  # the columns split: features, target, sensitive, time
    report: quality.QualityReport
    splits: data.Splits
    source: dict[str, Any] = field(default_factory=dict)  # where the rows came from (sources)

    @property
    def target(self) -> str:
        assert self.config.target is not None
        return self.config.target

    @property
    def features(self) -> list[str]:
        return self.kinds.all

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0


def search_rows(config: TrainConfig, say: Progress) -> Prepared | None:
    """The search's rows drawn in the source (a PostgreSQL query or table, a Parquet dataset),
    checked like every row, when the final fit reads more (`prepare(config, say, rows)` then
    reads them all, these pinned to train); None for a file, a demo, a time column (its search
    takes the latest rows), a budgeted search (its reserve for the final steps is sized on
    every row), svm among the families (skipped on more than svm_max_rows training rows), a
    source too small for the sample and a hold-out from the other rows, and a sample that does
    not stand for the whole (`_stands_for`: its gate fails, or its task, classes or metric
    differ from every row's): the search then runs on every row read, as before."""
    if not config.data or not sources.is_source(config.data):
        return None
    if config.time_column or config.search.budget_seconds or "svm" in config.models:
        return None
    keep = (1 - config.split.test_size) * (1 - config.split.validation_size)
    wanted = math.ceil(config.search.max_rows / keep)  # the sample's train part: max_rows
    counts, classes = _strata(config)
    loaded = sources.search_sample(
        config.data, config.source, wanted, config.seed, held=1 - keep, classes=classes
    )
    if loaded is None:
        return None
    say(f"the search's {len(loaded.frame):,} rows drawn in {config.data}")
    _check_columns(loaded.frame, config)  # a missing column fails here, not after a read
    if counts is None:
        assert config.target is not None
        counts = sources.target_counts(config.data, config.source, config.target)
    try:
        sample = _prepared(config, say, loaded)
        differs = _stands_for(sample, config, counts)
    except TrainingError as exc:
        differs = f"it fails a check every row may pass ({exc})"
    if differs is None:
        return sample
    say(f"the search's sample is not used: {differs}; the search runs on every row read")
    return None


def _strata(config: TrainConfig) -> tuple[pd.Series | None, tuple[str, pd.Series] | str]:
    """The target's rows per value in the source (None when they cannot be read: a missing
    column is named once the sample is read), and what stratifies the search's sample: a
    classification's target and its counts, else why not."""
    assert config.data is not None and config.target is not None
    try:
        counts = sources.target_counts(config.data, config.source, config.target)
    except TrainingError as exc:
        return None, f"the target's classes could not be counted ({exc})"
    task = _source_task(counts, config)
    if task != "classification":
        return counts, f"the task is {task}"
    if len(counts) > sources.TARGET_VALUES:
        return counts, f"the target has over {sources.TARGET_VALUES:,} classes"
    return counts, (config.target, counts)


def _source_task(counts: pd.Series, config: TrainConfig) -> str:
    """The task every row of the source gives, from the target's counts in it."""
    values = pd.Series(counts.index)
    return config.task or (
        "regression"  # more values than a classifier lists: numbers only (data.infer_task)
        if len(counts) > sources.TARGET_VALUES and pd.api.types.is_numeric_dtype(values)
        else data.infer_task(values)
    )


def _stands_for(sample: Prepared, config: TrainConfig, counts: pd.Series) -> str | None:
    """What the search's sample gets wrong about every row of the source, or None: the task,
    the classes and the metric read from the target's counts in the source (`counts`, one
    column), and for each class enough rows outside the sample for validation and test (every
    sample row goes to train)."""
    values = pd.Series(counts.index)
    task = _source_task(counts, config)
    if task != sample.task:
        return f"its target reads as {sample.task}, every row's as {task}"
    if task != "classification":
        return None
    if len(counts) > sources.TARGET_VALUES:
        return f"the target has over {sources.TARGET_VALUES:,} classes"
    whole = pd.Series(counts.to_numpy(), index=values.where(values.isna(), values.astype(str)))
    whole = whole[whole.index.notna()]
    if apart := sorted(set(whole.index) ^ set(sample.classes or [])):
        return f"its classes and every row's differ in {apart[:5]}"
    metric = config.objective.metric or metric_contract.default_metric(task, len(whole))
    if metric != sample.metric:
        return f"its metric is {sample.metric}, every row's {metric}"
    drawn = sample.frame[sample.target].value_counts()
    short = [c for c in whole.index if whole[c] - drawn.get(c, 0) < quality.MIN_CLASS_ROWS]
    if short:
        return (
            f"class {short[0]!r} keeps fewer than {quality.MIN_CLASS_ROWS} rows outside it "
            "for validation and test"
        )
    return None


def prepare(config: TrainConfig, say: Progress, search: Prepared | None = None) -> Prepared:
    """Everything before any fitting; `search` (search_rows'): its rows go to train, never to
    validation or test. When they are not all found among the rows read (and `source.max_rows`
    did not draw a sample of its own), or these rows' task, classes or metric differ from the
    sample's, nothing is pinned, the manifest's `data.read.search_sample` says why and
    `sample_pinned` is False: the search runs again, on these rows. Raises TrainingError naming
    the column or rule."""
    if not config.data:
        raise TrainingError("no data: pass --data FILE (or data: in the config)")
    if not config.target:
        raise TrainingError("no target: pass --target COLUMN (or target: in the config)")
    say(f"reading {config.data}")
    loaded = data.read_data(config.data, config.source, config.seed)
    if search is None:
        return _prepared(config, say, loaded)
    keys, drawn = data.row_keys(loaded.frame), data.row_keys(search.raw)
    pinned = np.isin(keys, drawn)
    found = int(np.isin(drawn, keys).sum())
    if found < len(drawn) and "sampled_in_source" not in loaded.record:
        why = f"only {found:,} of its {len(drawn):,} rows are among the rows read"
    else:
        prepared = _prepared(config, say, loaded, pinned)
        got = (prepared.task, prepared.classes, prepared.metric)
        had = (search.task, search.classes, search.metric)
        if got == had:
            taken = {"rows": len(drawn), "in_train": int(pinned.sum()), **_stratified(search)}
            return replace(prepared, source={**prepared.source, "search_sample": taken})
        why = f"the rows read give task, classes, metric {got}, the sample {had}"
    say(f"the search's sample is not used: {why}; the search runs again on every row read")
    record = {"rows": len(drawn), "found": found, "not_used": why}
    return _prepared(config, say, Loaded(loaded.frame, {**loaded.record, "search_sample": record}))


def _stratified(search: Prepared) -> dict[str, Any]:
    """The search sample's `stratified` record (sources.search_sample), for the manifest."""
    drawn = search.source.get("sampled_in_source", {})
    return {"stratified": drawn["stratified"]} if "stratified" in drawn else {}


def sample_pinned(prepared: Prepared) -> bool:
    """True when `prepare(..., search)` pinned the search's sample to train (the search on it
    stands); False without a sample or when it was not used."""
    return "in_train" in prepared.source.get("search_sample", {})


def _prepared(
    config: TrainConfig, say: Progress, loaded: Loaded, pinned: np.ndarray | None = None
) -> Prepared:
    """prepare's checks, inference, gate and split of the rows `loaded`."""
    assert config.target is not None
    frame = loaded.frame.copy()  # the typed copy; loaded.frame stays as read
    target = config.target
    declared = _check_columns(frame, config)
    task, label_type = _label(frame, config)
    kinds = data.infer_feature_kinds(frame, config, _excluded(config))
    if not kinds.all:
        raise TrainingError("no feature columns left after excluding target, drop and personal")
    frame = data.coerce_types(frame, kinds)
    times = None
    if config.time_column:  # a datetime feature is parsed by now; its missing times still count
        times = data.parse_times(frame[config.time_column], config.time_column, config.time_format)
        frame[config.time_column] = times.values

    say("data-quality gate")
    report = quality.check(
        frame,
        target=target,
        task=task,
        kinds=kinds,
        declared=declared,
        rules=config.quality,
        seed=config.seed,
        sensitive=config.fairness.sensitive,
        min_group_rows=config.fairness.min_group_rows,
        times=times,
    )
    report.raise_if_failed()
    dropped = set(report.dropped_columns)
    kinds = data.FeatureKinds(
        numeric=[c for c in kinds.numeric if c not in dropped],
        categorical=[c for c in kinds.categorical if c not in dropped],
        datetime=[c for c in kinds.datetime if c not in dropped],
    )
    classes = sorted(frame[target].unique().tolist()) if task == "classification" else None
    config, metric = _with_metric(config, task, classes)
    keep = [*kinds.all, target, *[c for c in config.fairness.sensitive if c not in kinds.all]]
    if config.time_column and config.time_column not in keep:
        keep.append(config.time_column)
    return Prepared(
        config=config,
        frame=frame,
        raw=loaded.frame,
        task=task,
        label_type=label_type,
        classes=classes,
        metric=metric,
        kinds=kinds,
        keep=keep,
        report=report,
        splits=data.split(frame[keep], target, task, config, pinned),
        source=loaded.record,
    )


def _check_columns(frame: pd.DataFrame, config: TrainConfig) -> set[str]:
    """TrainingError naming a configured column the data lacks; the declared feature columns."""
    assert config.target is not None
    data.require_columns(frame, [config.target], "target")
    feats = config.features
    declared = [*(feats.numeric or []), *(feats.categorical or []), *feats.datetime]
    data.require_columns(frame, declared + feats.drop + feats.personal, "feature")
    data.require_columns(frame, config.fairness.sensitive, "sensitive")
    if config.time_column:
        data.require_columns(frame, [config.time_column], "time")
    return set(declared)


def _label(frame: pd.DataFrame, config: TrainConfig) -> tuple[str, labels.LabelType]:
    """The task (configured or inferred) and the labels' type; a classifier's labels become text
    in `frame`. TrainingError for a regression on a non-numeric target."""
    target = config.target
    assert target is not None
    task = config.task or data.infer_task(frame[target])
    label_type: labels.LabelType = "float"
    if task == "classification":
        label_type = labels.label_type_of(frame[target].dropna().unique().tolist())
        frame[target] = frame[target].where(frame[target].isna(), frame[target].astype(str))
    elif not pd.api.types.is_numeric_dtype(frame[target]):
        raise TrainingError(f"target {target!r} must be numeric for regression")
    return task, label_type


def _excluded(config: TrainConfig) -> set[str]:
    """The columns that are never features: target, drop, personal, the time column unless it
    is a datetime feature, and the sensitive ones unless fairness includes them in the model."""
    feats = config.features
    excluded = {str(config.target), *feats.drop, *feats.personal}
    if not config.fairness.include_in_model:
        excluded |= set(config.fairness.sensitive)
    if config.time_column and config.time_column not in feats.datetime:
        excluded.add(config.time_column)
    return excluded


def _with_metric(
    config: TrainConfig, task: str, classes: list[str] | None
) -> tuple[TrainConfig, str]:
    """The config with the objective's metric filled in (the task's default when unset), and
    that metric; TrainingError when it does not fit the task."""
    metric = config.objective.metric or metric_contract.default_metric(
        task, len(classes) if classes else 0
    )
    if config.objective.metric is None:
        config = config.model_copy(
            update={"objective": config.objective.model_copy(update={"metric": metric})}
        )
    TrainConfig.model_validate({**config.model_dump(), "task": task})  # metric fits the task
    return config, metric
