"""The serving plan is one value chosen at load, not state a loaded model mutates."""

from __future__ import annotations

import dataclasses

import pytest
from sklearn.linear_model import LogisticRegression

from service.inference.model import LoadedModel
from service.inference.plan import Part, ServingPlan, everywhere
from tests.service.test_fastpath import KINDS, fitted, loaded


def test_the_plan_is_chosen_once_and_cannot_be_changed_in_place() -> None:
    pipe, frame = fitted(LogisticRegression(max_iter=200), "linear")
    model = loaded(pipe, frame, KINDS)
    before = model.serving
    assert before.path == "sklearn" and before.parts["estimator"].reason == "disabled"
    assert model.enable_fast_path(frame[KINDS.all].head(50))
    plan = model.serving
    assert plan is not before and isinstance(plan, ServingPlan)
    assert plan.path == model.serving_path == "numpy"
    assert plan.pre is not None and plan.estimator is not None and plan.members == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.estimator = None  # type: ignore[misc]
    shown = model.plan
    shown["estimator"] = Part("sklearn", "disabled")  # a copy: the plan serving stays
    assert model.plan["estimator"] == Part("numpy")


def test_a_plan_without_fast_parts_names_each_part_and_why() -> None:
    unchecked = Part("sklearn", "unchecked", "no reference rows")
    plan = everywhere(True, unchecked)
    assert dict(plan.parts) == {"preprocessing": unchecked, "estimator": unchecked}
    assert plan.path == "sklearn" and not plan.fast
    assert list(everywhere(False, unchecked).parts) == ["estimator"]


def test_a_loaded_model_holds_no_fast_path_state_of_its_own() -> None:
    pipe, frame = fitted(LogisticRegression(max_iter=200), "linear")
    model = loaded(pipe, frame, KINDS)
    model.enable_fast_path(frame[KINDS.all].head(50))
    for gone in ("_fast", "_fast_est", "_members", "_weights"):
        assert not hasattr(model, gone)
    assert not any(name.startswith("_same") for name in dir(LoadedModel))
