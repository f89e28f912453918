"""Check request instances against a version's input schema and build the model's columns.

Hand-written on purpose: one pass over plain dicts is several times cheaper than a pydantic
model per instance, and it yields column lists that become a DataFrame without a copy per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from training.registry import FeatureSchema


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


class Validator:
    """Built once per loaded version; `check(instances)` returns columns or problems."""

    def __init__(self, features: list[FeatureSchema], personal: set[str] | None = None) -> None:
        self.features = features
        self.names = [f.name for f in features]
        self.personal = personal or set()
        self.known = set(self.names) | self.personal
        self._cats = {f.name: set(f.categories) for f in features if f.categories is not None}

    def check(self, instances: list[Any]) -> Checked | list[Problem]:
        problems: list[Problem] = []
        columns: dict[str, list[Any]] = {n: [] for n in self.names}
        out_of_range: dict[str, int] = {}
        unseen: dict[str, int] = {}
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                problems.append(Problem(i, "", "type", "each instance must be a JSON object"))
                continue
            for key in inst:
                if key not in self.known:
                    problems.append(
                        Problem(i, str(key), "unknown", f"{key!r} is not a feature of this model")
                    )
            for f in self.features:
                name = f.name
                if name not in inst:
                    problems.append(Problem(i, name, "required", f"{name!r} is required"))
                    continue
                value = inst[name]
                if value is None:
                    if not f.nullable:
                        problems.append(Problem(i, name, "not_null", f"{name!r} may not be null"))
                    columns[name].append(None)
                    continue
                if f.kind == "numeric":
                    num = _as_number(value)
                    if num is None:
                        problems.append(
                            Problem(
                                i, name, "type", f"{name!r} must be a number, got {_short(value)}"
                            )
                        )
                        continue
                    if (f.min is not None and num < f.min) or (f.max is not None and num > f.max):
                        out_of_range[name] = out_of_range.get(name, 0) + 1
                    columns[name].append(num)
                elif f.kind == "categorical":
                    if isinstance(value, bool) or not isinstance(value, str | int | float):
                        problems.append(
                            Problem(
                                i, name, "type", f"{name!r} must be a string, got {_short(value)}"
                            )
                        )
                        continue
                    text = value if isinstance(value, str) else _num_to_str(value)
                    if len(text) > 1000:
                        problems.append(
                            Problem(
                                i, name, "max_length", f"{name!r} is longer than 1000 characters"
                            )
                        )
                        continue
                    cats = self._cats.get(name)
                    if cats is not None and text not in cats:
                        unseen[name] = unseen.get(name, 0) + 1
                    columns[name].append(text)
                else:
                    if not isinstance(value, str) or _as_datetime(value) is None:
                        problems.append(
                            Problem(i, name, "type", f"{name!r} must be an ISO 8601 timestamp")
                        )
                        continue
                    columns[name].append(value)
        if problems:
            return problems
        return Checked(columns, out_of_range, unseen)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        num = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            num = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return num if math.isfinite(num) else None


def _num_to_str(value: int | float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _as_datetime(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
