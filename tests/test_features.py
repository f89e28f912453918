"""core.features: the one feature-kind table the service and monitoring read."""

from __future__ import annotations

import math

import pandas as pd

from core.features import EXPECTS, KINDS, category, example_value, names_of, typed
from core.registry import FeatureSchema
from service.validation import Validator

FEATURES = [
    FeatureSchema(name="x", kind="numeric", dtype="float64", nullable=True, min=1.0, max=4.0),
    FeatureSchema(name="c", kind="categorical", dtype="object", nullable=True, categories=["b"]),
    FeatureSchema(name="t", kind="datetime", dtype="datetime", nullable=True),
    FeatureSchema(name="y", kind="numeric", dtype="float64", nullable=False),
]


def test_every_kind_has_its_words_and_the_schema_allows_no_other() -> None:
    assert set(EXPECTS) == set(KINDS)
    assert names_of(FEATURES, "numeric") == ["x", "y"]
    assert names_of(FEATURES, "categorical") == ["c"]
    assert names_of(FEATURES, "datetime") == ["t"]


def test_a_category_is_text_and_a_gap_is_none() -> None:
    assert [category(v) for v in ["a", 3, 2.5, None, float("nan")]] == ["a", "3", "2.5", None, None]


def test_a_logged_column_takes_its_kinds_type() -> None:
    numbers = typed(pd.Series([1, "2.5", None, "x"], dtype=object), "numeric")
    assert numbers.tolist()[:2] == [1.0, 2.5] and math.isnan(numbers[2]) and math.isnan(numbers[3])
    texts = typed(pd.Series([1, None, "a"], dtype=object), "categorical")
    assert texts.tolist() == ["1", None, "a"]
    stamps = pd.Series(["2024-01-01"], dtype=object)
    assert typed(stamps, "datetime") is stamps


def test_the_example_of_each_kind_passes_validation() -> None:
    example = {f.name: example_value(f) for f in FEATURES}
    assert example == {"x": 2.5, "c": "b", "t": "2024-01-01T12:00:00", "y": 0.0}
    assert not isinstance(Validator(FEATURES).check([example]), list)


def test_validation_words_each_kind_from_the_table() -> None:
    bad = {"x": "many", "c": [1], "t": "yesterday", "y": 1.0}
    problems = Validator(FEATURES).check([bad])
    assert isinstance(problems, list)
    assert [p.message for p in problems] == [
        "'x' must be a number, got 'many'",
        "'c' must be a string, got [1]",
        "'t' must be an ISO 8601 timestamp",
    ]
