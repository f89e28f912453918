"""Label types: how a model's labels are typed in answers, accepted as feedback and compared.

A classifier's classes are compared by their text (`str` of the native value: "1", "True",
"setosa"), which is also how the pipeline of a trained model holds them. The manifest records the
label type so that answers and stored feedback carry the type the user trained with.
Light on purpose (numpy only): the service imports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

LabelType = Literal["string", "integer", "boolean", "float"]
MAX_LABEL_CHARS = 256

TRUE_WORDS = {"true": True, "false": False}


def label_type_of(values: Iterable[Any]) -> LabelType:
    """The type of a column of labels (missing values ignored): boolean, integer, float or string.

    Floats that are all whole numbers stay float: the user's data says 1.0, so the answer does.
    """
    kinds: set[LabelType] = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool | np.bool_):
            kinds.add("boolean")
        elif isinstance(v, int | np.integer):
            kinds.add("integer")
        elif isinstance(v, float | np.floating):
            kinds.add("float")
        else:
            kinds.add("string")
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {"integer", "float"}:
        return "float"
    return "string"


def key(value: Any) -> str:
    """The text a label is compared by ("1", "True", "setosa")."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars: np.int64(1) -> 1
    return str(value)


def to_native(text: str, label_type: LabelType) -> Any:
    """A class back in its type, from the text it is compared by."""
    if label_type == "integer":
        return int(text)
    if label_type == "boolean":
        return text == "True"
    if label_type == "float":
        return float(text)
    return text


def native_classes(classes: Sequence[Any], label_type: LabelType) -> list[Any]:
    """The classes as JSON values of the label type (for the manifest)."""
    return [to_native(key(c), label_type) for c in classes]


def coerce(value: Any, label_type: LabelType | None, classes: Sequence[Any] | None) -> Any:
    """A feedback label as the model's type, or ValueError naming the rule it breaks.

    Classification: the value must be one of the classes after this coercion: a whole number
    (1, 1.0 or "1") for integer classes; true/false, "true"/"false" or 0/1 for boolean classes;
    a string, or an integer written as one, for string classes. Regression: a finite number
    (or a string holding one).
    """
    if isinstance(value, str) and len(value) > MAX_LABEL_CHARS:
        raise ValueError(f"max_length: a label has at most {MAX_LABEL_CHARS} characters")
    if classes is None:
        return _number(value)
    native = _as_type(value, label_type or "string")
    keys = {key(c): c for c in classes}
    if native is None or key(native) not in keys:
        shown = ", ".join(repr(c) for c in list(keys.values())[:20])
        raise ValueError(f"not_a_class: {value!r} is not one of the model's classes ({shown})")
    return keys[key(native)]


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("type: a regression label is a number, not a boolean")
    try:
        number = float(value)
    except OverflowError:  # an integer past a float's range
        raise ValueError(
            "finite: a regression label is a finite number, got a larger one"
        ) from None
    except (TypeError, ValueError):
        raise ValueError(f"type: a regression label is a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"finite: a regression label is a finite number, got {value!r}")
    return number


def _as_type(value: Any, label_type: LabelType) -> Any:
    """`value` in the label type, or None when it cannot be one."""
    if label_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            return TRUE_WORDS.get(value.strip().lower())
        return None
    if isinstance(value, bool):
        return None  # true is no integer, float or string class
    if label_type == "integer":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                return None
        return None
    if label_type == "float":
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None
