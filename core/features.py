"""The feature kinds, and what each means for a column: one rule for the service and monitoring."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

    from core.registry import FeatureSchema

FeatureKind = Literal["numeric", "categorical", "datetime"]
KINDS: tuple[FeatureKind, ...] = ("numeric", "categorical", "datetime")
EXAMPLE_TIMESTAMP = "2024-01-01T12:00:00"
EXPECTS: dict[FeatureKind, str] = {
    "numeric": "a number",
    "categorical": "a string",
    "datetime": "an ISO 8601 timestamp",
}
"""What a value of each kind must be, in the words of a validation problem."""
MAX_TEXT = 1000
"""The longest category a request may send, in characters."""


def names_of(features: Iterable[FeatureSchema], kind: FeatureKind) -> list[str]:
    """The names of the features of one kind, in the schema's order."""
    return [f.name for f in features if f.kind == kind]


def category(value: Any) -> str | None:
    """A categorical value as it is compared: its text, or None for a gap (None or NaN)."""
    return None if value is None or value != value else str(value)


def typed(column: pd.Series, kind: FeatureKind) -> pd.Series:
    """A logged column in its kind's type: numbers (NaN where a value is none), categories as
    text (None for a gap), timestamps as they were sent."""
    if kind == "numeric":
        import pandas as pd

        return pd.to_numeric(column, errors="coerce")
    if kind == "categorical":
        return column.map(category)
    return column


def example_value(feature: FeatureSchema) -> Any:
    """A valid value for the feature: the middle of its training range, its first category, or
    a timestamp."""
    if feature.kind == "numeric":
        low = feature.min if feature.min is not None else 0.0
        high = feature.max if feature.max is not None else 0.0
        return round((low + high) / 2, 3)
    if feature.kind == "categorical":
        return feature.categories[0] if feature.categories else "a"
    return EXAMPLE_TIMESTAMP
