import numpy as np
import pandas as pd
import pytest

from tests.data import classification_frame
from training.config import Quality
from training.data import FeatureKinds
from training.errors import TrainingError
from training.quality import check


def run(
    frame: pd.DataFrame, kinds: FeatureKinds, declared: set[str] | None = None, **rules: object
):  # type: ignore[no-untyped-def]
    return check(
        frame,
        target="label",
        task="classification",
        kinds=kinds,
        declared=declared or set(),
        rules=Quality(**rules),
        seed=0,
    )  # type: ignore[arg-type]


def kinds(numeric: list[str], categorical: list[str] | None = None) -> FeatureKinds:
    return FeatureKinds(numeric=numeric, categorical=categorical or [], datetime=[])


def rules_of(report) -> set[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    return {(f.rule, f.column) for f in report.findings}


def test_clean_data_passes() -> None:
    report = run(classification_frame(), kinds(["x1", "x2"], ["color"]))
    assert not report.failures
    report.raise_if_failed()


def test_leaking_feature_fails_the_gate_naming_the_column() -> None:
    frame = classification_frame()
    frame["leak"] = (frame["label"] == "yes").astype(float) + np.random.default_rng(0).normal(
        0, 0.01, len(frame)
    )
    report = run(frame, kinds(["x1", "leak"]))
    assert ("leakage", "leak") in rules_of(report)
    with pytest.raises(TrainingError, match="'leak' alone predicts 'label'"):
        report.raise_if_failed()


def test_mostly_missing_column_fails_and_threshold_is_configurable() -> None:
    frame = classification_frame()
    frame.loc[frame.index[:300], "x2"] = np.nan
    assert ("missing", "x2") in {(f.rule, f.column) for f in run(frame, kinds(["x2"])).failures}
    assert not run(frame, kinds(["x2"]), max_missing_share=0.9).failures


def test_inferred_constant_and_identifier_columns_are_dropped_with_a_warning() -> None:
    frame = classification_frame()
    frame["const"] = 1.0
    frame["row_id"] = [f"id{i}" for i in range(len(frame))]
    report = run(frame, kinds(["x1", "const"], ["row_id"]))
    assert set(report.dropped_columns) == {"const", "row_id"}
    assert not report.failures


def test_declared_identifier_is_a_failure_not_a_silent_drop() -> None:
    frame = classification_frame()
    frame["row_id"] = [f"id{i}" for i in range(len(frame))]
    report = run(frame, kinds(["x1"], ["row_id"]), declared={"row_id"}, fail_on=["identifier"])
    assert ("identifier", "row_id") in {(f.rule, f.column) for f in report.failures}


def test_single_class_target_always_fails() -> None:
    frame = classification_frame()
    frame["label"] = "yes"
    with pytest.raises(TrainingError, match="single class"):
        run(frame, kinds(["x1"])).raise_if_failed()


def test_duplicates_outliers_and_imbalance_are_reported() -> None:
    frame = classification_frame()
    frame = pd.concat([frame, frame.iloc[:200]], ignore_index=True)
    frame.loc[:60, "x1"] = 1e6
    frame.loc[:5, "label"] = "rare"
    report = run(
        frame,
        kinds(["x1"]),
        max_duplicate_share=0.1,
        max_outlier_share=0.05,
        min_class_share=0.02,
        fail_on=[],
    )
    found = rules_of(report)
    assert ("duplicates", None) in found
    assert ("outliers", "x1") in found
    assert ("class_imbalance", "label") in found
    assert not report.failures


def test_too_few_rows() -> None:
    with pytest.raises(TrainingError, match="only 10 rows"):
        run(classification_frame(10), kinds(["x1"])).raise_if_failed()
