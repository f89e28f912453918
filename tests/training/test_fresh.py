"""Issue 32: the winner's curse. The top of many noisy trials beats the default on the folds it
was picked on; re-scored on fresh folds (training.fresh) it does not, and the default is kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from training import fresh, noise
from training.candidates import IntRange
from training.search import FamilyResult, FamilySearch, Trial, make_cv
from training.selection import pick


class Lucky(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A classifier whose quality is drawn at fit time from its `seed` and the rows it is fitted
    on: every seed is as good as any other on average, but a fold's score is luck, as an
    unstable model's is."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: pd.DataFrame, y: pd.Series) -> Lucky:
        rows = int(np.asarray(x.index).sum()) % 2**31
        self.quality_ = np.random.default_rng([self.seed, rows]).uniform(0.0, 1.0)
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray[Any, Any]:
        signal = np.asarray(x["signal"], dtype=float)
        noise_ = np.asarray(x["noise"], dtype=float)
        p = 1 / (1 + np.exp(-(self.quality_ * signal + (1 - self.quality_) * noise_)))
        return np.column_stack([1 - p, p])

    def predict(self, x: pd.DataFrame) -> np.ndarray[Any, Any]:
        return np.asarray(self.classes_[(self.predict_proba(x)[:, 1] > 0.5).astype(int)])


def _data(n: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    y = pd.Series(rng.integers(0, 2, n))
    signal = (2 * y - 1) * 1.0 + rng.normal(0, 1, n)
    x = pd.DataFrame({"signal": signal, "noise": rng.normal(0, 1, n)})
    return x, y


def _build(params: dict[str, Any]) -> Pipeline:
    return Pipeline([("model", Lucky(**params))])


def _searched(trials: int) -> FamilySearch:
    x, y = _data()
    fs = FamilySearch(
        "lucky", {"seed": IntRange(1, 10**6)}, _build, x, y, method="random", cap=trials,
        cv=make_cv("classification", 5, False, 0), scoring="roc_auc", seed=0, default={"seed": 0},
    )  # fmt: skip
    while not fs.done:
        fs.step()
    return fs


def _rescore(results: list[FamilyResult], data: dict[str, FamilySearch]) -> int:
    def sample(rows: int, family: str) -> tuple[pd.DataFrame, pd.Series, None]:
        fs = data[family]
        return fs.x.iloc[:rows], fs.y.iloc[:rows], None

    return fresh.rescore(
        results, dict.fromkeys(data, _build), sample,
        cv=fresh.fresh_cv("classification", 5, False, 0, True), scoring="roc_auc",
        deadline=float("inf"), say=lambda _m: None,
    )  # fmt: skip


def test_fresh_folds_expose_a_lucky_top_trial() -> None:
    fs = _searched(60)
    r = fs.result
    top, default = r.top, r.default_trial
    assert top is not None and default is not None and top is not default
    # on the folds it was picked on, the lucky top beats the default beyond one standard error
    assert noise.beats(top.folds, default.folds)
    assert _rescore([r], {"lucky": fs}) == 2
    again_top, again_default = r.fresh(top), r.fresh(default)
    assert again_top is not None and again_default is not None
    assert again_top.score < top.score - 0.05  # its luck does not carry to other folds
    assert not noise.beats(again_top.folds, again_default.folds)
    assert r.best is default  # the default is kept


def test_without_fresh_scores_the_search_folds_decide() -> None:
    fs = _searched(60)
    assert fs.result.best is fs.result.top  # what the fix corrects: the lucky top was kept


def test_families_are_compared_on_their_fresh_folds() -> None:
    """A family that leads on the search's folds by a lucky top but not on fresh folds is no
    longer the leader; when one family was not re-scored, the search's folds decide for all."""
    lucky = _searched(60)
    plain = _searched(1)  # its default only
    plain.result.family = "linear"
    lr, pr = lucky.result, plain.result
    data = {"lucky": lucky, "linear": plain}
    _, _, leader, _ = pick([lr, pr])
    assert leader is lr  # the lucky top's search score leads
    _rescore([lr, pr], data)
    chosen, best, leader, tied = pick([lr, pr])
    assert chosen is pr and best.default  # linear: simplest within noise, or the leader
    pr.rescored.clear()
    _, _, leader, _ = pick([lr, pr])
    assert leader is lr


def test_to_rescore_takes_the_top_and_the_default_once() -> None:
    a = Trial({"seed": 1}, 0.9, 0.0, 1.0, 10, folds=(0.9, 0.9), default=True)
    b = Trial({"seed": 2}, 0.8, 0.0, 2.0, 10, folds=(0.8, 0.8))
    assert fresh.to_rescore(FamilyResult("x", [a, b])) == [a]
    assert fresh.to_rescore(FamilyResult("x", [b])) == [b]
    assert fresh.to_rescore(FamilyResult("x", [])) == []
    c = Trial({"seed": 3}, 0.95, 0.0, 3.0, 10, folds=(0.95, 0.95))
    assert fresh.to_rescore(FamilyResult("x", [a, c])) == [c, a]
    assert fresh.seconds([FamilyResult("x", [a, c]), FamilyResult("y", [b])]) == 6.0


def test_fresh_folds_differ_from_the_search_folds_ordered_or_not() -> None:
    x, y = _data(60)
    for task, ordered in (("classification", False), ("regression", False), ("regression", True)):
        search = [te.tolist() for _, te in make_cv(task, 3, ordered, 0).split(x, y)]
        again = [te.tolist() for _, te in fresh.fresh_cv(task, 3, ordered, 0, True).split(x, y)]
        assert again != search, (task, ordered)
