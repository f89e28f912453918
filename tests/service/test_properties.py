"""Hypothesis property tests of what parses a request: the Open Inference Protocol decoder, the
validator and feedback label coercion. Whatever the input, each answers or raises its own
documented error (never a RecursionError, OverflowError, KeyError...), and what it accepts keeps
the documented shape. `make fuzz` runs them with many more examples."""

from __future__ import annotations

import math
import os
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import labels
from core.registry import FeatureSchema
from service.protocols import oip
from service.validation import FLOAT32_MAX, Checked, Problem, Validator

EXAMPLES = int(os.environ.get("SERVEWATCH_FUZZ_EXAMPLES", "15"))
PROPERTY = settings(
    max_examples=EXAMPLES * 5,
    deadline=None,
    database=None,
    derandomize=EXAMPLES <= 50,
    suppress_health_check=list(HealthCheck),
)

FEATURES = [
    FeatureSchema(name="x1", kind="numeric", dtype="float64", nullable=False, min=0.0, max=1.0),
    FeatureSchema(name="x2", kind="numeric", dtype="float64", nullable=True),
    FeatureSchema(
        name="color", kind="categorical", dtype="object", nullable=False, categories=["1", "red"]
    ),
    FeatureSchema(name="when", kind="datetime", dtype="datetime64[ns]", nullable=True),
]
NAMES = [f.name for f in FEATURES]

# Values a client can send: the hostile ones (huge, tiny, Unicode digits, NUL, long text) and
# nesting; JSON-representable (orjson writes them; NaN and infinity never reach the service).
HOSTILE_TEXT = st.sampled_from(
    ["²", "٣", "１２", "1_000", "\x00", "a\x00b", "1e39", " 0.5 ", "NaN", "-inf", "Z" * 2000, ""]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e39, -1e39, 3.4028236e38, FLOAT32_MAX, 1e308, 5e-324, -0.0]),
    st.text(max_size=20),
    HOSTILE_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def deep(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


INSTANCE = st.fixed_dictionaries(
    {},
    optional={
        "x1": VALUES,
        "x2": VALUES,
        "color": VALUES,
        "when": st.one_of(VALUES, st.sampled_from(["2024-01-01", "9999-12-31T23:59:59-01:00"])),
        "extra": VALUES,
    },
)
INSTANCES = st.lists(st.one_of(INSTANCE, VALUES), min_size=1, max_size=4)


@PROPERTY
@given(instances=INSTANCES, float32=st.booleans(), depth=st.sampled_from([0, 1, 999]))
def test_the_validator_answers_columns_or_problems_for_anything(
    instances: list[Any], float32: bool, depth: int
) -> None:
    if depth and isinstance(instances[0], dict):
        instances[0]["x2"] = deep(depth)
    got = Validator(FEATURES, {"email"}, float32=float32).check(instances)
    if isinstance(got, Checked):
        assert set(got.columns) == set(NAMES)
        assert all(len(col) == len(instances) for col in got.columns.values())
        for name in ("x1", "x2"):
            for v in got.columns[name]:
                assert v is None or (type(v) is float and math.isfinite(v))
                assert not float32 or v is None or abs(v) <= FLOAT32_MAX
        assert all(isinstance(v, str) for v in got.columns["color"])
    else:
        assert got and all(isinstance(p, Problem) and p.rule for p in got)
        assert all(len(p.message) < 400 for p in got)  # values are shown short


def tensor(name: Any, datatype: Any, shape: Any, data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


TENSORS = st.lists(
    st.builds(
        tensor,
        st.one_of(st.sampled_from(NAMES), st.text(max_size=5), VALUES),
        st.one_of(st.sampled_from(sorted(oip.DATATYPES)), VALUES),
        st.one_of(st.lists(st.integers(-1, 3), max_size=3), VALUES),
        st.one_of(st.lists(VALUES, max_size=4), VALUES),
    ),
    max_size=6,
)


@PROPERTY
@given(
    inputs=st.one_of(TENSORS, VALUES),
    extra=st.dictionaries(st.sampled_from(["id", "outputs", "parameters"]), VALUES),
    header=st.one_of(st.none(), st.sampled_from(["²", "12", "0", "-1", "٣", "99999"])),
    tail=st.binary(max_size=16),
    depth=st.sampled_from([0, 40, 1000]),
)
def test_the_oip_decoder_answers_rows_or_its_own_errors(
    inputs: Any, extra: dict[str, Any], header: str | None, tail: bytes, depth: int
) -> None:
    body: dict[str, Any] = {"inputs": inputs, **extra}
    nest = depth and isinstance(inputs, list) and inputs and isinstance(inputs[0], dict)
    if nest:
        inputs[0]["data"] = "DEEP"
    raw = orjson.dumps(body)
    if nest:  # written by hand: orjson writes at most 255 levels
        raw = raw.replace(b'"DEEP"', b"[" * depth + b"1.0" + b"]" * depth, 1)
    if header is not None:
        raw += tail
    validator = Validator(FEATURES, {"email"})
    try:
        req, rows = oip.decode(raw, header, validator)
    except (oip.Malformed, oip.Rejected) as exc:
        assert str(exc)
        return
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    assert all(set(r) <= validator.known for r in rows)
    assert req.outputs is None or all(o in oip.OUTPUTS for o in req.outputs)


CLASSES = st.sampled_from(
    [
        ("string", ["no", "yes"]),
        ("integer", [0, 1, 2]),
        ("boolean", [False, True]),
        ("float", [0.5, 1.0]),
        ("float", None),  # regression
    ]
)


@PROPERTY
@given(
    value=st.one_of(
        SCALARS,
        st.integers(min_value=10**300, max_value=10**400),
        st.text(alphabet="0123456789.e+-²٣ ", max_size=30),
    ),
    kind=CLASSES,
)
def test_label_coercion_answers_a_class_or_names_the_rule(value: Any, kind: Any) -> None:
    label_type, classes = kind
    try:
        got = labels.coerce(value, label_type, classes)
    except ValueError as exc:
        rule, _, message = str(exc).partition(": ")
        assert rule in {"max_length", "not_a_class", "type", "finite"} and message
        return
    if classes is None:
        assert type(got) is float and math.isfinite(got)
    else:
        assert got in classes and type(got) is type(classes[0])
