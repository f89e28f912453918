"""The lightgbm and xgboost families (issue 32): early stopping, labels of any type, their spaces
and defaults, and a missing extra named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.base import clone

from core import boosters, ecosystem
from tests.conftest import require_module
from training import candidates
from training.candidates import default_params, make_estimator, model_space, unavailable
from training.data import DataSize

FAMILIES = ["lightgbm", "xgboost"]


def _trees(est: Any) -> int:
    """The boosting rounds the fitted model holds."""
    if ecosystem.is_lightgbm(est):
        return int(est.booster_.current_iteration())
    return int(est.get_booster().num_boosted_rounds())


@pytest.mark.parametrize("family", FAMILIES)
def test_a_searched_configuration_stops_early_and_holds_exactly_its_best_rounds(
    family: str,
) -> None:
    require_module(family)
    x, y = datasets.make_classification(3000, 10, n_informative=4, random_state=0)
    labels = np.where(y == 1, "yes", "no")
    est = make_estimator(family, "classification", {"learning_rate": 0.3}, seed=0)
    assert est.n_estimators == candidates.BOOSTER_CEILING
    est.fit(x, labels)
    assert 1 <= est.rounds_ < candidates.BOOSTER_CEILING  # it stopped
    assert _trees(est) == est.rounds_  # refitted with the best rounds: no trees beyond them
    assert est.n_estimators == candidates.BOOSTER_CEILING  # the ceiling is kept for clones
    assert list(est.classes_) == ["no", "yes"]
    assert set(est.predict(x[:50])) <= {"no", "yes"}
    assert clone(est).get_params()["n_estimators"] == candidates.BOOSTER_CEILING


@pytest.mark.parametrize("family", FAMILIES)
def test_below_a_thousand_rows_every_round_is_boosted_on_every_row(family: str) -> None:
    require_module(family)
    x, y = datasets.make_regression(500, 5, noise=5.0, random_state=0)
    size = DataSize(rows=500, features=5)
    space = model_space(family, "regression", size)
    assert "n_estimators" in space  # searched instead of stopped
    est = make_estimator(family, "regression", {"n_estimators": 40}, seed=0, size=size)
    est.fit(x, y)
    assert est.rounds_ == 40 == _trees(est)


@pytest.mark.parametrize("labels", ["str", "int", "bool"])
def test_xgboost_takes_labels_of_any_type_as_its_classes(labels: str) -> None:
    require_module("xgboost")
    raw = datasets.load_iris()
    y = {"str": raw.target_names[raw.target], "int": raw.target + 1, "bool": raw.target == 2}[
        labels
    ]
    est = make_estimator("xgboost", "classification", {}, seed=0).fit(raw.data, y)
    assert list(est.classes_) == sorted(set(y.tolist()))
    predicted = est.predict(raw.data)
    assert (predicted == y).mean() > 0.9
    proba = est.predict_proba(raw.data)
    assert np.array_equal(est.classes_[proba.argmax(axis=1)], predicted)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_default_is_the_librarys_own_and_the_space_its_tuning_guides(family: str) -> None:
    require_module(family)
    space = model_space(family, "classification")
    assert default_params(family, "classification", space) == {}
    est = make_estimator(family, "classification", {}, seed=0)
    assert est.n_estimators == 100  # the library's default rounds
    lr = space["learning_rate"]
    assert isinstance(lr, candidates.FloatRange) and (lr.low, lr.high) == (0.01, 0.3)
    assert {"subsample", "colsample_bytree", "reg_lambda"} <= set(space)
    assert ("num_leaves" if family == "lightgbm" else "max_depth") in space
    assert est.n_jobs == 1


def test_a_family_whose_extra_is_missing_is_skipped_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert unavailable("lightgbm") is None or "servewatch[lightgbm]" in str(unavailable("lightgbm"))
    # as on a machine without the package: its module cannot be found
    monkeypatch.setitem(candidates.BOOSTERS, "xgboost", "xgboost_absent_here")
    reason = unavailable("xgboost")
    assert reason is not None
    assert reason.startswith("family xgboost skipped: xgboost_absent_here not installed")
    assert "pip install 'servewatch[xgboost_absent_here]'" in reason


def test_the_held_out_tenth_is_stratified_and_seeded() -> None:
    y = np.array([0] * 900 + [1] * 100)
    x = pd.DataFrame({"a": np.arange(1000)})
    parts = boosters.holdout(x, y, None, 3, stratify=True)
    again = boosters.holdout(x, y, None, 3, stratify=True)
    assert len(parts[1]) == 100 and parts[3].sum() == 10  # a tenth, a tenth of each class
    assert parts[1].index.equals(again[1].index)
