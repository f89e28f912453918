"""The metric contract and label typing: directions, bounds, and labels of every type."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import labels
from core import metrics as mc


def test_every_metric_points_one_way_and_knows_its_scorer() -> None:
    lower = {n for n, m in mc.METRICS.items() if not m.higher_is_better}
    assert lower == {"log_loss", "brier", "rmse", "mae"}
    assert mc.get("roc_auc").scorer(3) == "roc_auc_ovr" and mc.get("f1").scorer(2) == "f1"
    assert mc.get("rmse").scorer(0) == "neg_root_mean_squared_error"
    with pytest.raises(ValueError, match="unknown metric 'auc'.*roc_auc"):
        mc.get("auc")


def test_worse_by_better_meets_and_limit_follow_the_direction() -> None:
    auc, brier, rmse = mc.get("roc_auc"), mc.get("brier"), mc.get("rmse")
    assert auc.worse_by(0.80, 0.70) == pytest.approx(0.10)
    assert brier.worse_by(0.10, 0.20) == pytest.approx(0.10)
    assert brier.worse_by(0.20, 0.10) == pytest.approx(-0.10)
    assert auc.better(0.9, 0.8) and not brier.better(0.9, 0.8) and brier.better(0.1, 0.2)
    assert auc.meets(0.8, 0.8) and not auc.meets(0.79, 0.8) and auc.meets(0.1, None)
    assert brier.meets(0.1, 0.2) and not brier.meets(0.3, 0.2)
    assert not auc.meets(math.nan, 0.5)
    assert auc.limit(0.8, 0.05) == pytest.approx(0.75)
    assert brier.limit(0.1, 0.05) == pytest.approx(0.15)
    # in the target's units: a share of the reference
    assert rmse.worse_by(20.0, 25.0) == pytest.approx(0.25)
    assert rmse.limit(20.0, 0.05) == pytest.approx(21.0)
    assert auc.strictest([0.7, 0.75]) == 0.75 and brier.strictest([0.2, 0.15]) == 0.15


def test_classification_metrics_on_integer_labels_in_object_arrays() -> None:
    """An imported model's classes are ints; labels may come as objects, ints or text."""
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    as_objects = np.array([0, 1, 1, 1], dtype=object)
    out = mc.classification_metrics(as_objects, proba, [np.int64(0), np.int64(1)])
    assert out["accuracy"] == pytest.approx(0.75) and out["roc_auc"] == pytest.approx(1.0)
    assert mc.classification_metrics(["0", "1", "1", "1"], proba, [0, 1]) == out


def test_labels_that_are_no_class_are_left_out_not_fatal() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    out = mc.classification_metrics(["no", "yes", "maybe"], proba, ["no", "yes"])
    assert out["accuracy"] == 1.0
    assert math.isnan(mc.classification_metrics(["maybe"], proba[:1], ["no", "yes"])["f1"])


def test_multiclass_auc_needs_every_class_and_probabilities_are_renormalised() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert math.isnan(mc.classification_metrics(["a", "b"], proba, ["a", "b", "c"])["roc_auc"])
    rounded = np.array([[0.333333, 0.333333, 0.333333]] * 3)
    out = mc.classification_metrics(["a", "b", "c"], rounded, ["a", "b", "c"])
    assert out["log_loss"] == pytest.approx(math.log(3), abs=1e-6)


def test_regression_metrics_skip_non_finite_rows() -> None:
    out = mc.regression_metrics([1.0, 2.0, np.nan], [1.0, 4.0, 3.0])
    assert out["mae"] == pytest.approx(1.0) and out["rmse"] == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a", "b"], "string"),
        ([0, 1, 2], "integer"),
        (list(np.array([0, 1])), "integer"),
        ([True, False], "boolean"),
        (list(np.array([True, False])), "boolean"),
        ([0.5, 1.0], "float"),
        ([1, 2.5], "float"),
        ([1, "a"], "string"),
    ],
)
def test_label_type_of(values: list[object], expected: str) -> None:
    assert labels.label_type_of(values) == expected


@pytest.mark.parametrize(
    ("value", "label_type", "classes", "expected"),
    [
        (1, "string", ["0", "1"], "1"),
        ("1", "string", ["0", "1"], "1"),
        ("1", "integer", [0, 1], 1),
        (1.0, "integer", [0, 1], 1),
        (True, "boolean", [False, True], True),
        ("false", "boolean", [False, True], False),
        (0, "boolean", [False, True], False),
        (3, None, None, 3.0),
        ("2.5", None, None, 2.5),
    ],
)
def test_feedback_labels_are_coerced_to_the_model_type(
    value: object,
    label_type: labels.LabelType | None,
    classes: list[object] | None,
    expected: object,
) -> None:
    got = labels.coerce(value, label_type, classes)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "label_type", "classes", "rule"),
    [
        ("maybe", "string", ["0", "1"], "not_a_class"),
        (1.0, "string", ["0", "1"], "not_a_class"),
        (True, "string", ["0", "1"], "not_a_class"),
        (True, "integer", [0, 1], "not_a_class"),
        (2, "integer", [0, 1], "not_a_class"),
        (2, "boolean", [False, True], "not_a_class"),
        ("yes", "boolean", [False, True], "not_a_class"),
        (True, None, None, "type"),
        ("abc", None, None, "type"),
        ("nan", None, None, "finite"),
        ("x" * 300, "string", ["a"], "max_length"),
    ],
)
def test_feedback_labels_that_are_refused(
    value: object, label_type: labels.LabelType | None, classes: list[object] | None, rule: str
) -> None:
    with pytest.raises(ValueError, match=f"^{rule}: "):
        labels.coerce(value, label_type, classes)
