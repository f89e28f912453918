"""Check request instances against a version's input schema and build the model's columns.

Hand-written on purpose: a pydantic model per instance costs several times more. Two passes:
a column-at-a-time check of the common case (every instance has exactly the schema's fields, of
the expected JSON types) made of C-level builtins (`map`, `set`, `sum`, `min`, `max`), about 20x
cheaper per row than looking at each value in Python; anything it does not accept (a problem, a
coercion such as "0.5" for a number) goes to the careful per-value pass, which names every
problem and is the reference for what is valid.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from types import NoneType
from typing import Any

from core.features import EXPECTS, MAX_TEXT
from core.registry import FeatureSchema


@dataclass
class Problem:
    instance: int
    feature: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "feature": self.feature,
            "rule": self.rule,
            "message": self.message,
        }


@dataclass
class Checked:
    columns: dict[str, list[Any]]
    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    coerced: bool = False
    """A value was converted (a number sent for a category, text for a number): the columns,
    not the request's instances, say what the model read (and what is logged)."""


FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: a tree model that reads float32 refuses anything beyond it."""


class Validator:
    """Built once per loaded version; `check(instances)` returns columns or problems."""

    def __init__(
        self,
        features: list[FeatureSchema],
        personal: set[str] | None = None,
        *,
        float32: bool = False,
    ) -> None:
        self.features = features
        self.float32 = float32
        """The model reads numbers as float32: a value beyond its range is a problem."""
        self.names = [f.name for f in features]
        self.personal = personal or set()
        self.known = set(self.names) | self.personal
        self._cats = {f.name: set(f.categories) for f in features if f.categories is not None}
        self._specs = [
            (f.name, f.kind, f.nullable, f.min, f.max, self._cats.get(f.name)) for f in features
        ]
        # every feature's value of an instance in one C call (a 1-tuple when there is one)
        # as many keys as features, all found: no other key (feature names are unique)
        self._by_count = len(set(self.names)) == len(self.names)
        self._values: Callable[[Any], Any] = (
            itemgetter(*self.names) if len(self.names) > 1 else _one(self.names)
        )

    def check(self, instances: list[Any]) -> Checked | list[Problem]:
        """Columns for the model (with out-of-range and unseen counts), or every problem."""
        fast = self._check_common(instances)
        return fast if fast is not None else self._check_each(instances)

    def _check_common(self, instances: list[Any]) -> Checked | None:
        """The columns when every value is plainly valid; None sends the request to
        `_check_each` (which finds the problem, or applies a coercion)."""
        if len(instances) == 1:
            return self._check_one(instances[0])
        if set(map(type, instances)) != {dict}:
            return None
        counted = self._by_count and set(map(len, instances)) == {len(self.names)}
        if not counted and not all(map(self.known.issuperset, instances)):
            return None
        columns: dict[str, list[Any]] = {}
        out_of_range: dict[str, int] = {}
        unseen: dict[str, int] = {}
        try:
            # the instances' values, transposed to one tuple per feature, in two C calls
            by_feature = zip(*map(self._values, instances), strict=True)
            for f, values in zip(self.features, by_feature, strict=True):
                col = list(values)
                types = set(map(type, col))
                present = col
                if NoneType in types:
                    if not f.nullable:
                        return None
                    types.discard(NoneType)
                    present = [v for v in col if v is not None]
                if f.kind == "numeric":
                    if not types <= _NUMBER_TYPES:
                        return None
                    floats = list(map(float, present))
                    if present:
                        if not math.isfinite(sum(floats)):
                            return None  # an infinite value (or a sum that overflows): look closer
                        if self.float32 and max(map(abs, present)) > FLOAT32_MAX:
                            return None
                        low = f.min is not None and min(present) < f.min
                        high = f.max is not None and max(present) > f.max
                        if low or high:
                            out_of_range[f.name] = _count_outside(present, f.min, f.max)
                    if int in types:  # the model reads floats: 3 -> 3.0 (each value once)
                        col = floats if present is col else _with_none(col, floats)
                elif f.kind == "categorical":
                    if not types <= {str} or (present and max(map(len, present)) > MAX_TEXT):
                        return None
                    cats = self._cats.get(f.name)
                    if cats is not None:
                        known = sum(map(cats.__contains__, present))
                        if known < len(present):
                            unseen[f.name] = len(present) - known
                else:
                    if not types <= {str} or any(_as_datetime(v) is None for v in present):
                        return None
                columns[f.name] = col
        except (KeyError, OverflowError):
            return None  # a missing feature, or a number too large for a float
        return Checked(columns, out_of_range, unseen)

    def _check_one(self, inst: Any) -> Checked | None:
        """`_check_common` for a single instance: a plain loop beats a dozen C calls per feature
        on one value."""
        if type(inst) is not dict or not self.known.issuperset(inst):
            return None
        columns: dict[str, list[Any]] = {}
        out_of_range: dict[str, int] = {}
        unseen: dict[str, int] = {}
        for name, kind, nullable, low, high, cats in self._specs:
            if name not in inst:
                return None
            value = inst[name]
            kind_of = type(value)
            if value is None:
                if not nullable:
                    return None
            elif kind == "numeric":
                if kind_of is int:
                    try:
                        value = float(value)
                    except OverflowError:
                        return None
                elif kind_of is not float or not math.isfinite(value):
                    return None
                if self.float32 and abs(value) > FLOAT32_MAX:
                    return None
                if (low is not None and value < low) or (high is not None and value > high):
                    out_of_range[name] = 1
            elif kind_of is not str:
                return None
            elif kind == "categorical":
                if len(value) > MAX_TEXT:
                    return None
                if cats is not None and value not in cats:
                    unseen[name] = 1
            elif _as_datetime(value) is None:
                return None
            columns[name] = [value]
        return Checked(columns, out_of_range, unseen)

    def _check_each(self, instances: list[Any]) -> Checked | list[Problem]:
        problems: list[Problem] = []
        columns: dict[str, list[Any]] = {n: [] for n in self.names}
        tally = _Tally()
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                problems.append(Problem(i, "", "type", "each instance must be a JSON object"))
                continue
            problems += [
                Problem(i, str(key), "unknown", f"{short_repr(key)} is not a feature of this model")
                for key in inst
                if key not in self.known
            ]
            for f in self.features:
                value, problem = self._field(i, f, inst, tally)
                if problem is not None:
                    problems.append(problem)
                if value is not _NOTHING:
                    columns[f.name].append(value)
        if problems:
            return problems
        return Checked(columns, tally.out_of_range, tally.unseen, tally.coerced)

    def _field(
        self, i: int, f: FeatureSchema, inst: dict[str, Any], tally: _Tally
    ) -> tuple[Any, Problem | None]:
        """One feature of instance `i`: the value the model reads (`_NOTHING`: none) and the
        problem with it, if any."""
        name = f.name
        if name not in inst:
            why = getattr(f, "required_for", None)  # e.g. postprocess: thresholds per group
            because = f" (the model's {why} step reads it)" if why else ""
            return _NOTHING, Problem(i, name, "required", f"{name!r} is required{because}")
        value = inst[name]
        if value is None:
            problem = (
                None if f.nullable else Problem(i, name, "not_null", f"{name!r} may not be null")
            )
            return None, problem
        if f.kind == "numeric":
            return self._number(i, f, value, tally)
        if f.kind == "categorical":
            return self._category(i, f, value, tally)
        if not isinstance(value, str) or _as_datetime(value) is None:
            return _NOTHING, Problem(i, name, "type", f"{name!r} must be {EXPECTS[f.kind]}")
        return value, None

    def _number(
        self, i: int, f: FeatureSchema, value: Any, tally: _Tally
    ) -> tuple[Any, Problem | None]:
        name = f.name
        num = _as_number(value)
        if num is None:
            got = f"{name!r} must be {EXPECTS[f.kind]}, got {short_repr(value)}"
            return _NOTHING, Problem(i, name, "type", got)
        if self.float32 and abs(num) > FLOAT32_MAX:
            too_large = (
                f"{name!r} is {num:g}; this model reads float32, which holds "
                f"numbers up to {FLOAT32_MAX:.7g} in magnitude"
            )
            return _NOTHING, Problem(i, name, "float32_range", too_large)
        if (f.min is not None and num < f.min) or (f.max is not None and num > f.max):
            tally.out_of_range[name] = tally.out_of_range.get(name, 0) + 1
        tally.coerced = tally.coerced or isinstance(value, str)
        return num, None

    def _category(
        self, i: int, f: FeatureSchema, value: Any, tally: _Tally
    ) -> tuple[Any, Problem | None]:
        name = f.name
        if not isinstance(value, str | int | float):  # bool is an int
            got = f"{name!r} must be {EXPECTS[f.kind]}, got {short_repr(value)}"
            return _NOTHING, Problem(i, name, "type", got)
        text = value if isinstance(value, str) else _num_to_str(value)
        tally.coerced = tally.coerced or text is not value
        if len(text) > MAX_TEXT:
            too_long = f"{name!r} is longer than {MAX_TEXT} characters"
            return _NOTHING, Problem(i, name, "max_length", too_long)
        cats = self._cats.get(name)
        if cats is not None and text not in cats:
            tally.unseen[name] = tally.unseen.get(name, 0) + 1
        return text, None


_NOTHING = object()
"""No value for the column (the problem says why)."""


@dataclass
class _Tally:
    """What checking the instances one by one counts: values out of the training range and
    unseen categories per feature, and whether a value was converted."""

    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    coerced: bool = False


_NUMBER_TYPES = {int, float}


def _one(names: list[str]) -> Callable[[Any], tuple[Any]]:
    """An instance's values as a 1-tuple (`itemgetter` of one name returns the bare value)."""
    (name,) = names or [""]
    return lambda inst: (inst[name],)


def _with_none(col: list[Any], floats: list[float]) -> list[Any]:
    """`col` with its values replaced by `floats` (in order), its Nones kept."""
    it = iter(floats)
    return [None if v is None else next(it) for v in col]


def _count_outside(values: list[Any], low: float | None, high: float | None) -> int:
    return sum(
        1 for v in values if (low is not None and v < low) or (high is not None and v > high)
    )


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            num = float(value)  # an integer beyond a float's range overflows: not a number
        elif isinstance(value, str) and len(value) <= 64:
            num = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return num if math.isfinite(num) else None


def _num_to_str(value: int | float) -> str:
    """A number or boolean sent for a category, as training writes it (`training.data.as_text`):
    3 and 3.0 as "3", true as "True"."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _as_datetime(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def short_repr(value: Any) -> str:
    """A value as shown in a message: a few levels, a few items, 40 characters (reprlib never
    recurses past its level, so a body nested 1,000 deep cannot overflow the stack)."""
    text = _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
