"""Issue 32: the reserve kept after a budgeted search scales with the chosen model's own measured
fit and predict seconds a row (training/budget.py `rates`, `predict_seconds`). A test double
estimator "takes" seconds per row it fits and predicts on a clock the test owns; the whole run
is measured on that clock, never on the wall clock."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from core.registry import Registry
from tests.conftest import fast_config
from tests.data import classification_frame
from training import budget, selection, shortfall
from training.search import FamilyResult, Trial
from training.train import train_candidate


class Ticks:
    """The test's clock: it moves only when the double fits or predicts."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


TICKS = Ticks()
FIT_PER_ROW = 5e-3
"""Seconds the double takes per row it fits."""


class SlowPredictor(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A logistic regression that takes FIT_PER_ROW a row it fits and `per_row` a row it
    predicts, on TICKS (a forest of many trees on many features, scaled down)."""

    def __init__(self, per_row: float = 0.01) -> None:
        self.per_row = per_row

    def fit(self, x: Any, y: Any, sample_weight: Any = None) -> SlowPredictor:
        TICKS.now += FIT_PER_ROW * len(x)
        self.inner_ = LogisticRegression().fit(x, y, sample_weight=sample_weight)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, x: Any) -> np.ndarray[Any, Any]:
        TICKS.now += self.per_row * len(x)
        return np.asarray(self.inner_.predict_proba(x))

    def predict(self, x: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.classes_[self.predict_proba(x).argmax(axis=1)])


BUDGET = 120.0
TOLERANCE = 0.15
"""The run may end this share past its budget on the test's clock: the reserve is an estimate
(the reference sample's and the baseline's predictions, a few passes, are not counted row by
row)."""


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_row: float) -> dict[str, Any]:
    """A budgeted run of the double alone; the test's clock at its end and its manifest."""
    TICKS.now = 0.0

    def estimator(*_a: Any, **_k: Any) -> Any:
        return SlowPredictor(per_row)

    monkeypatch.setattr(selection, "make_estimator", estimator)
    monkeypatch.setattr(budget, "calibrate", lambda: 1.0)
    for name in ("decide", "keep_baseline"):
        monkeypatch.setattr(shortfall, name, partial(getattr(shortfall, name), clock=TICKS))
    tmp_path.mkdir()
    path = tmp_path / "clf.csv"
    classification_frame(400).to_csv(path, index=False)
    cfg = fast_config(data=str(path), target="label", models=["mlp"],
                      search={"budget_seconds": BUDGET, "method": "random", "max_rows": 1000},
                      publish={"refit_all": True})  # fmt: skip
    select = partial(selection.search, clock=TICKS)
    candidate = train_candidate(cfg, Registry(tmp_path / "r"), select=select, started=0.0)
    spent = candidate.manifest.body()["model"]["search"]["budget"]
    return {"end": TICKS.now, "budget": spent}


def test_a_slow_predicting_model_reserves_more_and_the_run_ends_within_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model slower to predict than to fit a row: its assessment (permutation
    importance, sampled contributions, the reference sample) predicts thousands of rows, so the
    search keeps back that much more, and the run still ends within its budget."""
    fast = _run(tmp_path / "fast", monkeypatch, per_row=1e-4)
    slow = _run(tmp_path / "slow", monkeypatch, per_row=0.003)
    assert slow["budget"]["reserved_seconds"] > 2 * fast["budget"]["reserved_seconds"]
    assert slow["budget"]["seconds"] < fast["budget"]["seconds"]  # the search stopped earlier
    for run in (fast, slow):
        assert run["end"] <= BUDGET * (1 + TOLERANCE), run


def _result(family: str, score: float, *, fit: float, scoring: float) -> FamilyResult:
    """A family whose 3-fold trial on 300 rows fitted 600 rows in `fit` s and predicted 300 in
    `scoring` s."""
    trial = Trial({}, score, 0.0, fit + scoring, 300, folds=(score,) * 3, fit_seconds=fit,
                  score_seconds=scoring, fit_rows=600, scored_rows=300)  # fmt: skip
    return FamilyResult(family, [trial])


def test_the_reserve_counts_each_leading_familys_predictions_of_the_assessments_rows() -> None:
    """Two families that fit alike: the one that predicts slower keeps back its measured seconds
    a row (a pass's overhead aside) times the rows the assessment predicts, which grow with the
    features; fits are counted on their own measure."""
    quick = _result("forest", 0.9, fit=3.0, scoring=budget.PASS_SECONDS * 3)
    slow = _result("forest", 0.9, fit=3.0, scoring=budget.PASS_SECONDS * 3 + 3.0)
    common = {"folds": 3, "rows": 1000, "members": 1, "after": 0.0, "test_rows": 500}
    # (less the re-scoring of the top trial on fresh folds: its measured seconds)
    base = budget.reserve_seconds([quick], features=10, **common) - quick.trials[0].seconds
    more = budget.reserve_seconds([slow], features=10, **common) - slow.trials[0].seconds
    rows = budget.predicted_rows("forest", 500, 10)
    assert base == pytest.approx(budget.RESERVE_FITS * 5.0)  # 3 s for 600 rows: 5 s a fit
    assert more - base == pytest.approx(rows * 3.0 / 300)  # 10 ms a row
    wider = budget.reserve_seconds([slow], features=40, **common) - slow.trials[0].seconds
    assert wider - base == pytest.approx(budget.predicted_rows("forest", 500, 40) / 100)
    assert budget.predicted_rows("forest", 500, 40) > rows
    # a trial without the fit and scoring split counts all of it as fits and predicts for nothing
    old = FamilyResult("forest", [Trial({}, 0.9, 0.0, 6.0, 300, folds=(0.9,) * 3)])
    assert budget.rates(old, 3) == budget.Rates(6.0 / 600, 0.0)
    assert budget.rates(FamilyResult("x"), 3) == budget.Rates(0.0, 0.0)


def test_the_explanation_counts_by_how_the_family_is_explained() -> None:
    """Exact for a linear model (one pass), TreeSHAP for trees, sampled for the others."""
    linear, tree, mlp = (budget.predicted_rows(f, 1000, 10) for f in ("linear", "hgb", "mlp"))
    assert linear < tree and linear < mlp
    assert mlp - linear == pytest.approx(300 * (budget.SAMPLED_PERMUTATIONS * 11 - 1))
    assert tree - linear == pytest.approx(300 * (budget.TREE_SHAP_PREDICTS - 1))
    # permutation importance passes over at most IMPORTANCE_ROWS test rows
    far = budget.predicted_rows("linear", 100_000, 10) - budget.predicted_rows("linear", 2000, 10)
    assert far == budget.TEST_PASSES * 98_000


def test_the_baselines_copies_count_their_predictions_of_the_rows_they_held_out(
    tmp_path: Path,
) -> None:
    """shortfall.keep_baseline: five copies of a model that fits fast but predicts slowly
    (10 ms a row) predict every train and validation row once; with 2 s left they do not fit,
    where their fits alone would; with the time they need, they run."""
    from training.prepare import prepare
    from training.selection import Selection

    path = tmp_path / "clf.csv"
    classification_frame(400).to_csv(path, index=False)
    cfg = fast_config(data=str(path), target="label", search={"budget_seconds": 100},
                      publish={"refit_all": False, "baseline_folds": 5})  # fmt: skip
    prepared = prepare(cfg, lambda _m: None)
    n_fit = len(prepared.splits.x_train) + len(prepared.splits.x_val)
    assert n_fit * 0.01 > 2  # the copies' predictions alone: more than is left

    def keeps(left: float, scoring: float) -> tuple[bool, dict[str, Any]]:
        result = _result("forest", 0.9, fit=0.01, scoring=scoring)
        best = result.best
        assert best is not None
        spent: dict[str, Any] = {"calibration_slowdown": 1.0}
        sel = Selection(results=[result], family="forest", best=best, skipped=[],
                        scoring="roc_auc", rows=300, rungs=[300], folds=3, size=None,  # type: ignore[arg-type]
                        spent=spent)  # fmt: skip
        kept = shortfall.keep_baseline(prepared, sel, ["forest"], False, 0.0, lambda _m: None,
                                       clock=lambda: 100.0 - left)  # fmt: skip
        return kept, spent

    quick = budget.PASS_SECONDS * 3  # the overhead alone: no seconds a row
    assert keeps(2.0, quick)[0]
    kept, spent = keeps(2.0, quick + 3.0)  # 3 s for 300 rows
    assert not kept
    assert [s["step"] for s in spent["shortfall"]["skipped"]] == ["baseline"]
    assert keeps(n_fit * 0.01 + 1.0, quick + 3.0)[0]
