"""The validator's quick column-wise pass agrees with the careful per-value pass on any input:
whatever it accepts, it accepts with the same columns and counts; it never accepts a problem."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.registry import FeatureSchema
from service.validation import Checked, Validator

FEATURES = [
    FeatureSchema(name="x", kind="numeric", dtype="float64", nullable=True, min=0.0, max=10.0),
    FeatureSchema(name="n", kind="numeric", dtype="int64", nullable=False, min=-5.0, max=5.0),
    FeatureSchema(name="c", kind="categorical", dtype="object", nullable=True, categories=["a"]),
    FeatureSchema(name="t", kind="datetime", dtype="datetime64[ns]", nullable=False),
]
VALIDATOR = Validator(FEATURES, personal={"email"})

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.sampled_from(["a", "b", "0.5", "2024-01-01T00:00:00", "x" * 1001]),
    st.lists(st.integers(), max_size=2),
)
instance = st.fixed_dictionaries(
    {},
    optional={
        "x": anything,
        "n": anything,
        "c": anything,
        "t": anything,
        "email": anything,
        "other": anything,
    },
)
plausible = st.fixed_dictionaries(
    {
        "x": st.one_of(st.none(), st.floats(-5, 15), st.integers(-5, 15)),
        "n": st.one_of(st.integers(-8, 8), st.floats(-8, 8)),
        "c": st.one_of(st.none(), st.sampled_from(["a", "b"])),
        "t": st.sampled_from(["2024-01-01T00:00:00", "2024-05-06"]),
    }
)

one_off = st.builds(  # a plausible instance with one field set to anything (or deleted)
    lambda base, key, value, drop: {k: v for k, v in {**base, key: value}.items() if k != drop},
    plausible,
    st.sampled_from(["x", "n", "c", "t", "email", "other"]),
    st.one_of(
        st.sampled_from([None, True, float("inf"), -float("inf"), float("nan"), 10**400, 7]),
        st.sampled_from(["0.5", "b", "x" * 1001, "yesterday", "", "2024-13-01"]),
        anything,
    ),
    st.sampled_from(["", "x", "n", "c", "t"]),
)


def agree(instances: list[Any], validator: Validator = VALIDATOR) -> None:
    quick = validator._check_common(instances)
    careful = validator._check_each(instances)
    if quick is None:
        return
    assert isinstance(careful, Checked), careful  # the quick pass never accepts a problem
    typed = lambda cols: {k: [(type(v), v) for v in vs] for k, vs in cols.items()}  # noqa: E731
    assert typed(quick.columns) == typed(careful.columns)
    assert quick.out_of_range == careful.out_of_range
    assert quick.unseen == careful.unseen


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(instance, plausible, one_off, st.integers()), min_size=1, max_size=6))
def test_the_quick_pass_agrees_with_the_careful_one(instances: list[Any]) -> None:
    agree(instances)


@settings(max_examples=200, deadline=None)
@given(st.lists(plausible, min_size=1, max_size=8))
def test_plain_valid_requests_take_the_quick_pass(instances: list[Any]) -> None:
    assert VALIDATOR._check_common(instances) is not None
    agree(instances)


@settings(max_examples=500, deadline=None)
@given(st.lists(one_off, min_size=1, max_size=3))
def test_one_bad_field_is_never_let_through(instances: list[Any]) -> None:
    agree(instances)


ONE_FEATURE = Validator(FEATURES[:1], personal={"email"})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({}, optional={"x": anything, "email": anything, "other": anything}),
        min_size=1,
        max_size=6,
    )
)
def test_a_model_of_one_feature_agrees_too(instances: list[Any]) -> None:
    """One feature: the quick pass reads each instance's value as a 1-tuple."""
    agree(instances, ONE_FEATURE)


def test_many_plain_rows_take_the_quick_pass_and_others_do_not() -> None:
    """The quick pass's key check by count: an unknown key among as many keys as features (one
    feature missing) and a personal field beside every feature are told apart."""
    rows = [{"x": 1.0, "n": 2, "c": "a", "t": "2024-01-01T00:00:00"} for _ in range(3)]
    assert VALIDATOR._check_common(rows) is not None
    swapped = [*rows[:2], {"x": 1.0, "n": 2, "c": "a", "other": 1}]
    assert VALIDATOR._check_common(swapped) is None
    assert isinstance(VALIDATOR._check_each(swapped), list)
    personal = [*rows[:2], {**rows[2], "email": "a@b.c"}]
    checked = VALIDATOR._check_common(personal)
    assert checked is not None and checked.columns["n"] == [2.0, 2.0, 2.0]
    assert ONE_FEATURE._check_common([{"x": 1}, {"x": None}]) is not None
    # a schema naming a feature twice: as many keys as names no longer means no other key
    twice = Validator([FEATURES[0], FEATURES[0]])
    assert twice._check_common([{"x": 1.0, "zzz": 2}] * 2) is None
    assert isinstance(twice._check_each([{"x": 1.0, "zzz": 2}] * 2), list)
