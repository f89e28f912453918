import time

import numpy as np
import pytest

from tests.data import classification_frame
from training.candidates import Choice, FloatRange, IntRange, grid_values, make_estimator, sample
from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline
from training.search import make_cv, search_family

SPACE = {"alpha": FloatRange(1e-5, 1e-1), "l1_ratio": Choice((0.0, 0.5, 1.0))}


def build(params):  # type: ignore[no-untyped-def]
    kinds = FeatureKinds(numeric=["x1", "x2"], categorical=["color"], datetime=[])
    est = make_estimator("linear", "classification", params, 0)
    return build_pipeline(kinds, est, family="linear", prep=Preprocessing())


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
def test_search_is_reproducible_with_a_seed(method: str) -> None:
    frame = classification_frame(200)
    x, y = frame[["x1", "x2", "color"]], frame["label"]
    cv = make_cv("classification", 2, False, 0)
    runs = [
        search_family(
            "linear",
            SPACE,
            build,
            x,
            y,
            method=method,
            trials=3,
            deadline=time.monotonic() + 60,
            cv=cv,
            scoring="roc_auc",
            seed=7,
        )
        for _ in range(2)
    ]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]
    assert len(runs[0].trials) == 3
    assert runs[0].best is not None and runs[0].best.score > 0.6


def test_time_budget_stops_the_search_after_the_first_trial() -> None:
    frame = classification_frame(200)
    res = search_family(
        "linear",
        SPACE,
        build,
        frame[["x1", "x2", "color"]],
        frame["label"],
        method="random",
        trials=50,
        deadline=time.monotonic() - 1,
        cv=make_cv("classification", 2, False, 0),
        scoring="roc_auc",
        seed=0,
    )
    assert len(res.trials) == 1


def test_space_helpers() -> None:
    rng = np.random.default_rng(0)
    point = sample({"a": FloatRange(1e-3, 1.0), "b": IntRange(1, 3), "c": Choice(("x",))}, rng)
    assert 1e-3 <= point["a"] <= 1.0 and point["b"] in {1, 2, 3} and point["c"] == "x"
    assert grid_values(FloatRange(0.01, 1.0)) == pytest.approx([0.01, 0.1, 1.0])
    assert grid_values(IntRange(1, 5, log=False)) == [1, 3, 5]
