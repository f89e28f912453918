import numpy as np
import pandas as pd
import pytest

from tests.data import classification_frame
from training.config import Quality
from training.data import FeatureKinds
from training.errors import TrainingError
from training.quality import QualityReport, check


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


def leak_check(
    frame: pd.DataFrame,
    target: str,
    task: str,
    numeric: list[str],
    categorical: tuple[str, ...] = (),
) -> QualityReport:
    """The gate on `frame` with every rule but leakage quiet."""
    return check(
        frame,
        target=target,
        task=task,
        kinds=FeatureKinds(numeric=numeric, categorical=list(categorical), datetime=[]),
        declared=set(),
        rules=Quality(fail_on=["leakage"]),
        seed=0,
    )


def test_a_multi_class_leak_fails_the_gate() -> None:
    """A column equal to label x 10 + noise on a three-class table (the score was NaN)."""
    rng = np.random.default_rng(1)
    y = rng.choice(["a", "b", "c"], 600)
    code = pd.Series(y).map({"a": 0, "b": 1, "c": 2}).to_numpy()
    frame = pd.DataFrame({"x": rng.normal(0, 1, 600), "leak": code * 10 + rng.normal(0, 1, 600)})
    frame["label"] = y
    report = leak_check(frame, "label", "classification", ["x", "leak"])
    assert {(f.rule, f.column) for f in report.failures} == {("leakage", "leak")}


def test_a_categorical_code_that_fixes_the_label_fails_the_gate() -> None:
    """25 levels, each always one class: a depth-4 tree on the codes scored 0.655; per-category
    target rates, cross-fitted, tell it."""
    rng = np.random.default_rng(2)
    level = rng.integers(0, 25, 600)
    frame = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 600),
            "code": [f"c{v:02d}" for v in level],
            "honest": rng.choice(["p", "q", "r"], 600),
        }
    )
    frame["label"] = np.where(np.isin(level, [0, 3, 4, 8, 9, 11, 15, 17, 20, 21, 24]), "y", "n")
    report = leak_check(frame, "label", "classification", ["x"], ("code", "honest"))
    assert {(f.rule, f.column) for f in report.failures} == {("leakage", "code")}


def test_a_file_sorted_by_target_does_not_hide_a_leak() -> None:
    """Regression, rows sorted by the target, a column = target + N(0, 1): unshuffled folds
    scored 0.595 (each fold's targets outside the others' range)."""
    rng = np.random.default_rng(3)
    y = np.sort(rng.normal(100, 85, 600))
    frame = pd.DataFrame({"x": rng.normal(0, 1, 600), "leak": y + rng.normal(0, 1, 600), "y": y})
    report = leak_check(frame, "y", "regression", ["x", "leak"])
    assert {(f.rule, f.column) for f in report.failures} == {("leakage", "leak")}


def test_an_integer_identifier_is_dropped_by_its_values() -> None:
    """Numeric columns are float64 by the time the gate runs: a row number 1..n is still an
    identifier (its values are whole and all distinct); whole numbers that repeat are not."""
    frame = classification_frame().sample(frac=1.0, random_state=0)
    frame["row"] = np.arange(1, len(frame) + 1, dtype="float64")
    frame["count"] = np.random.default_rng(0).integers(0, 20, len(frame)).astype("float64")
    report = run(frame, kinds(["x1", "row", "count"]))
    assert report.dropped_columns == ["row"]
    assert ("identifier", "row") in rules_of(report)


def test_honest_strong_features_of_the_packaged_data_sets_are_not_leaks() -> None:
    """No false flags: iris's petal length (one class apart, two overlapping), the breast cancer
    table's strongest columns, the diabetes regression's."""
    from sklearn import datasets

    iris = datasets.load_iris(as_frame=True).frame
    iris["target"] = iris["target"].astype(str)
    for seed in range(5):
        report = check(
            iris,
            target="target",
            task="classification",
            kinds=FeatureKinds(numeric=list(iris.columns[:4]), categorical=[], datetime=[]),
            declared=set(),
            rules=Quality(),
            seed=seed,
        )
        assert not report.failures, report.failures
    for loader, task in (
        (datasets.load_breast_cancer, "classification"),
        (datasets.load_diabetes, "regression"),
    ):
        frame = loader(as_frame=True).frame
        if task == "classification":
            frame["target"] = frame["target"].astype(str)
        report = check(
            frame,
            target="target",
            task=task,
            kinds=FeatureKinds(numeric=list(frame.columns[:-1]), categorical=[], datetime=[]),
            declared=set(),
            rules=Quality(fail_on=["leakage"]),
            seed=0,
        )
        assert not report.failures, report.failures


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_the_leakage_checks_auc_is_roc_auc_score_with_ties(classes: int) -> None:
    """The leakage check scores features with a rank-based AUC (sklearn's costs ~5 ms a call
    in input checks); it must equal roc_auc_score, ties (a shallow tree's few distinct
    outputs) counted a half."""
    from sklearn.metrics import roc_auc_score

    from training.quality import _aucs, _score

    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, size=400)
    t = np.eye(classes)[labels]
    pred = np.round(rng.random((400, classes)) + 0.3 * t, 1)  # few distinct values: ties
    want = [roc_auc_score(t[:, j], pred[:, j]) for j in range(classes)]
    np.testing.assert_allclose(_aucs(pred, t), want, rtol=0, atol=1e-12)
    if classes == 2:
        assert _score(pred, t, "classification") == pytest.approx(max(want[1], 1 - want[1]))
        assert _score(1 - pred, t, "classification") == pytest.approx(max(want[1], 1 - want[1]))
    else:
        assert _score(pred, t, "classification") == pytest.approx(min(want))
