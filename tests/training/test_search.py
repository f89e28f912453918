import time

import numpy as np
import pytest

from tests.data import classification_frame
from training.candidates import Choice, FloatRange, IntRange, grid_values, make_estimator, sample
from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline
from training.search import halving_rungs, make_cv, search_family

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


# --- issue 19: default first, pruning, halving, the budget as a bound on evaluations ---------
def _search(**kw):  # type: ignore[no-untyped-def]
    frame = classification_frame(kw.pop("rows", 300))
    args = {
        "method": "random",
        "trials": 4,
        "deadline": time.monotonic() + 120,
        "cv": make_cv("classification", 3, False, 0),
        "scoring": "roc_auc",
        "seed": 0,
        **kw,
    }
    return search_family(
        "linear", SPACE, build, frame[["x1", "x2", "color"]], frame["label"], **args
    )


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
def test_the_default_is_the_first_trial_and_counts_within_trials(method: str) -> None:
    default = {"alpha": 1e-4, "l1_ratio": 0.15}
    res = _search(method=method, default=default)
    assert res.trials[0].params == default
    assert len(res.trials) == 4  # the default is one of `trials`, never an extra
    assert res.best is not None and res.best.score >= res.trials[0].score


def test_the_search_never_ends_below_the_default() -> None:
    """Every point of this space is far worse than the default (alpha 10 flattens the model):
    the result is the default's."""
    bad = {"alpha": FloatRange(5.0, 10.0), "l1_ratio": Choice((1.0,))}
    frame = classification_frame(300)
    default = {"alpha": 1e-4, "l1_ratio": 0.15}
    res = search_family(
        "linear", bad, build, frame[["x1", "x2", "color"]], frame["label"], method="random",
        trials=4, deadline=time.monotonic() + 120, cv=make_cv("classification", 3, False, 0),
        scoring="roc_auc", seed=0, default=default,
    )  # fmt: skip
    assert all(t.score < res.trials[0].score for t in res.trials[1:])
    assert res.best is res.trials[0]


def test_a_passed_deadline_leaves_only_the_default() -> None:
    res = _search(trials=50, deadline=time.monotonic() - 1, default={"alpha": 1e-3})
    assert [t.params for t in res.trials] == [{"alpha": 1e-3}]


def test_bayes_prunes_and_a_pruned_trial_never_wins() -> None:
    res = _search(method="bayes", trials=12, rows=400)
    assert len(res.trials) <= 12
    pruned = [t for t in res.trials if t.pruned]
    assert pruned, [t.score for t in res.trials]  # the MedianPruner stopped some trial
    assert res.best is not None and not res.best.pruned


def test_halving_rungs() -> None:
    assert halving_rungs(24, 20_000) == [(24, 740), (8, 2222), (3, 6666), (1, 20_000)]
    assert halving_rungs(24, 1000) == [(24, 333), (8, 1000)]
    assert halving_rungs(24, 300) == [(24, 300)]  # too few rows to race on less


def test_halving_races_more_configurations_on_a_bounded_number_of_evaluations() -> None:
    default = {"alpha": 1e-4, "l1_ratio": 0.15}
    res = _search(halving=True, trials=3, rows=1500, default=default)
    rungs = halving_rungs(3 * 3, 1500)
    assert len(res.trials) == 1 + sum(n for n, _ in rungs)  # the default, then every rung
    assert len({str(t.params) for t in res.trials}) == 1 + 9  # three times `trials` configs
    assert [t.rows for t in res.trials[1 : 1 + rungs[0][0]]] == [rungs[0][1]] * rungs[0][0]
    assert res.best is not None and res.best.rows == 1500  # only last-rung trials compete
    assert res.best.score >= res.trials[0].score
