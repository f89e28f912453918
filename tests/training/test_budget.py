"""Issue 32: the budget is the search's budget (training/budget.py).

Every trial here "takes" a set time on a clock the test owns (the pipeline's build advances it),
so what is asserted is counts of trials, never a wall-clock time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.dummy import DummyClassifier

from tests.conftest import fast_config
from tests.data import classification_frame
from training.budget import (
    RESERVE_FITS,
    after_seconds,
    baseline_copies,
    baseline_fits,
    calibrate,
    chosen_fits,
    mitigation_fits,
    reserve_seconds,
    rungs_for,
    spend,
)
from training.candidates import Choice, FloatRange, make_estimator
from training.config import Preprocessing
from training.data import FeatureKinds
from training.errors import TrainingError
from training.pipeline import build_pipeline
from training.prepare import prepare
from training.search import FamilyResult, FamilySearch, Trial, make_cv
from training.selection import search

SPACE = {"alpha": FloatRange(1e-5, 1e-1), "l1_ratio": Choice((0.0, 0.5, 1.0))}
KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["color"], datetime=[])
FRAME = classification_frame(150)


class Clock:
    """A clock that only moves when a trial "takes" its time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _family(
    name: str, clock: Clock, *, cost: float = 1.0, useless: bool = False, **kw: Any
) -> FamilySearch:
    """A family whose every trial takes `cost` on `clock`: a real linear model, or (`useless`) a
    model that predicts the class shares whatever the features (ROC AUC 0.5 on every fold)."""

    def build(params: dict[str, Any]) -> Any:
        clock.now += cost
        est = (
            DummyClassifier() if useless else make_estimator("linear", "classification", params, 0)
        )
        return build_pipeline(KINDS, est, family="linear", prep=Preprocessing())

    args: dict[str, Any] = {
        "method": "random",
        "cap": None,
        "cv": make_cv("classification", 2, False, 0),
        "scoring": "roc_auc",
        "seed": 0,
        "default": {"alpha": 1e-4, "l1_ratio": 0.15},
        "clock": clock,
        **kw,
    }
    x, y = FRAME[["x1", "x2", "color"]], FRAME["label"]
    return FamilySearch(name, SPACE, build, x, y, **args)


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_trials_keep_coming_until_the_budget_is_spent(method: str) -> None:
    clock = Clock()
    good = _family("good", clock, method=method)
    bad = _family("bad", clock, method=method, useless=True)
    said: list[str] = []
    rungs = spend([good, bad], lambda: 20.0, clock=clock, say=said.append)
    counts = {s.result.family: len(s.result.trials) for s in (good, bad)}
    assert sum(counts.values()) == 20 and clock.now == 20.0  # every second of it, no more
    # the promising family gets the time: the useless one is dropped after the first rung
    assert rungs == [["good", "bad"], ["good"]]
    assert counts == {"good": 15, "bad": 5}
    assert said[0] == "search rung 1: good, bad (20s left)"
    assert said[1] == "search rung 2: good (10s left)"


def test_the_end_is_recomputed_before_every_trial() -> None:
    """The search's end moves (the reserve grows with what the trials measure): no trial starts
    that would end after it."""
    clock = Clock()
    fam = _family("good", clock, cost=2.0)
    spend([fam], lambda: 16.0 - clock.now / 2, clock=clock)
    assert len(fam.result.trials) == 5 and clock.now == 10.0  # 10 + 2 > 16 - 5


def test_the_trial_cap_ends_the_search_before_the_budget() -> None:
    clock = Clock()
    fams = [_family("a", clock, cap=3), _family("b", clock, cap=3, useless=True)]
    spend(fams, lambda: 1000.0, clock=clock)
    assert [len(f.result.trials) for f in fams] == [3, 3] and clock.now == 6.0


def test_a_capped_leader_leaves_its_time_to_the_others() -> None:
    clock = Clock()
    good, bad = _family("good", clock, cap=4), _family("bad", clock, useless=True)
    spend([good, bad], lambda: 16.0, clock=clock)
    assert len(good.result.trials) == 4 and len(bad.result.trials) == 12


def test_families_within_noise_of_each_other_share_the_budget() -> None:
    """Two families of the same model: neither beats the other beyond noise, so both race to the
    end (halving drops only families the leader beats beyond noise, or the worse half)."""
    clock = Clock()
    a, b = _family("a", clock), _family("b", clock)
    spend([a, b], lambda: 20.0, clock=clock)
    assert clock.now == 20.0
    assert min(len(a.result.trials), len(b.result.trials)) >= 8  # a dropped one: 5


def test_a_trial_that_would_overrun_the_end_never_starts_but_the_first_always_runs() -> None:
    clock = Clock()
    fams = [_family("a", clock, cost=5.0), _family("b", clock, cost=5.0)]
    spend(fams, lambda: 3.0, clock=clock)  # less than one trial: each family's default only
    assert [len(f.result.trials) for f in fams] == [1, 1]
    assert all(f.result.trials[0].default for f in fams)
    clock = Clock()
    fams = [_family("a", clock), _family("b", clock)]
    spend(fams, lambda: -1.0, clock=clock)  # spent before the search began (a slow read)
    assert [len(f.result.trials) for f in fams] == [1, 1]


def test_budgeted_search_is_reproducible_with_a_seed_where_the_budget_does_not_bind() -> None:
    runs = []
    for _ in range(2):
        clock = Clock()
        fams = [_family("a", clock, method="bayes", cap=5), _family("b", clock, cap=5)]
        spend(fams, lambda: 1e9, clock=clock)
        runs.append([[(t.params, t.score) for t in f.result.trials] for f in fams])
    assert runs[0] == runs[1] and [len(r) for r in runs[0]] == [5, 5]


def test_rungs_halve_down_to_one_family() -> None:
    assert [rungs_for(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 3, 3, 4, 4, 5]


def _result(family: str, score: float, seconds: float, rows: int = 300) -> FamilyResult:
    trial = Trial({}, score, 0.0, seconds, rows, folds=(score, score, score))
    return FamilyResult(family, [trial])


def test_the_reserve_is_measured_fits_of_the_best_families_on_every_row() -> None:
    # a 3-fold trial of 3 s on 300 rows: three 1-s fits on 200 rows, so 5 s a fit on 1000 rows
    results = [_result("a", 0.9, 3.0), _result("b", 0.8, 6.0), _result("c", 0.7, 300.0)]
    # plus what fits nothing (`after`) and re-scoring each family's top trial on fresh folds
    rescore = 3.0 + 6.0 + 300.0
    one = reserve_seconds(results, folds=3, rows=1000, members=1, after=7.0)
    assert one == pytest.approx(RESERVE_FITS * 5.0 + 7.0 + rescore)
    two = reserve_seconds(results, folds=3, rows=1000, members=2, after=7.0)
    assert two == pytest.approx(RESERVE_FITS * (5.0 + 10.0) + 7.0 + rescore)
    assert reserve_seconds([], folds=3, rows=1000, members=3, after=7.0) == 7.0


def test_the_reserve_keeps_back_the_baselines_copies() -> None:
    """publish.baseline_folds: k copies of the tested configuration, each calibrated (three
    fits) on (k - 1) / k of the rows: 3 (k - 1) fits more; none without a baseline."""
    results = [_result("a", 0.9, 3.0)]
    plain = reserve_seconds(results, folds=3, rows=1000, members=1, after=0.0)
    with_five = reserve_seconds(results, folds=3, rows=1000, members=1, after=0.0, baseline_folds=5)
    assert with_five - plain == pytest.approx(12 * 5.0)
    assert baseline_fits(0) == baseline_fits(1) == 0 and baseline_fits(2) == 3


def test_what_fits_nothing_grows_with_features_and_the_machines_slowdown_not_rows() -> None:
    """The passes' overhead (after_seconds) grows with the features and the slowdown; the part
    that grows with the test rows is the chosen model's own predictions, measured in its trials
    (budget.predict_seconds: tests/training/test_reserve.py)."""
    assert after_seconds(500, 20, 2.0) == pytest.approx(2 * after_seconds(500, 20, 1.0))
    assert after_seconds(500, 40, 1.0) > after_seconds(500, 20, 1.0) > after_seconds(0, 0, 1.0) > 0
    assert after_seconds(1000, 20, 1.0) == after_seconds(500, 20, 1.0)
    # a pass over the test rows costs mostly its overhead: per feature, not per cell (digits'
    # 360 x 64 and the mitigation test's flights 1,200 x 16 were reserved 35 and 30 s at 1.5 ms a
    # cell where their steps took about 6 and 2 s)
    assert after_seconds(360, 64, 1.0) < 15 and after_seconds(1200, 16, 1.0) < 6
    assert calibrate() > 0


def test_the_fits_after_the_search_are_counted_by_the_configuration() -> None:
    """On the training rows the plain fit and one calibrated fit (three folds on two thirds:
    two fits) per calibration tried, then the final fit and the refit, calibrated when a
    calibration may be kept: a regressor makes a fraction of a classifier's fits."""
    shares = {"fit_share": 0.8, "train_share": 0.64}
    regressor = chosen_fits(calibration="auto", classification=False, refit=True, **shares)
    assert regressor == pytest.approx(0.64 + 0.8 + 1.0)
    auto = chosen_fits(calibration="auto", classification=True, refit=True, **shares)
    assert auto == pytest.approx(0.64 * 5 + 2 * 0.8 + 2 * 1.0) and auto < RESERVE_FITS
    plain = chosen_fits(calibration="none", classification=True, refit=False, **shares)
    assert plain == pytest.approx(0.64 + 0.8)
    one = chosen_fits(calibration="sigmoid", classification=True, refit=True, **shares)
    assert plain < one < auto
    results = [_result("a", 0.9, 3.0)]
    counted = reserve_seconds(results, folds=3, rows=1000, members=1, after=0.0, fits=auto)
    assert counted == pytest.approx(auto * 5.0 + 3.0)  # and the fresh re-scoring


def test_the_reserve_keeps_back_the_mitigations_fits() -> None:
    results = [_result("a", 0.9, 3.0), _result("b", 0.8, 6.0)]
    plain = reserve_seconds(results, folds=3, rows=1000, members=2, after=0.0)
    resampled = reserve_seconds(results, folds=3, rows=1000, members=2, after=0.0, mitigation=1)
    assert resampled - plain == pytest.approx(5.0)  # one fit of the best family on every row
    assert mitigation_fits("none") == mitigation_fits("adversarial") == 0
    assert mitigation_fits("resample") == mitigation_fits("reweight") == 1
    assert mitigation_fits("reductions") == 51


# --- search() end to end: the configuration decides the mode --------------------------------
def _prepared(tmp_path: Path, **search_cfg: Any) -> Any:
    path = tmp_path / "clf.csv"
    classification_frame(300).to_csv(path, index=False)
    cfg = fast_config(data=str(path), target="label", models=["linear", "tree"],
                      search={"max_rows": 1000, **search_cfg})  # fmt: skip
    return prepare(cfg, lambda _m: None)


def test_search_spends_the_run_budget_on_a_ticking_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every look at this clock moves it 0.01 s (a trial looks at it before and after each
    fold's fit and scoring, budget.rates): the search runs until its end, far past the 8 trials
    a family gets without a budget, and records what it spent (the machine's slowdown taken as
    1: the reserve for what fits nothing is then 1.5 s of the 5)."""
    from training import budget

    monkeypatch.setattr(budget, "calibrate", lambda: 1.0)
    ticks = [0.0]

    def clock() -> float:
        ticks[0] += 0.01
        return ticks[0]

    prepared = _prepared(tmp_path, budget_seconds=5, method="random")
    said: list[str] = []
    selection = search(prepared, said.append, started=0.0, clock=clock)
    spent = selection.spent
    assert spent is not None and spent["budget_seconds"] == 5
    assert spent["schedule"] == "halving over families" and spent["trial_cap"] is None
    assert sum(len(r.trials) for r in selection.results) > 2 * 8
    assert 0 < spent["reserved_seconds"] < 5 and spent["seconds"] <= 5
    assert any("s of the search left" in m for m in said)  # progress shows the time left
    assert spent["rungs"][0] == ["linear", "tree"]


def test_without_a_budget_each_family_runs_its_trials(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path, budget_seconds=None, trials=3)
    selection = search(prepared, lambda _m: None)
    assert [len(r.trials) for r in selection.results] == [3, 3]
    assert selection.spent is not None and selection.spent["schedule"] == "equal shares"
    assert prepared.config.search.resolved_method == "random"


def test_a_budget_means_bayes_unless_set_and_halving_needs_trials() -> None:
    cfg = fast_config(search={"budget_seconds": 5, "method": None, "trials": None})
    assert cfg.search.resolved_method == "bayes" and cfg.search.cap is None
    cfg = fast_config(search={"budget_seconds": None, "method": None, "trials": None})
    assert cfg.search.resolved_method == "random" and cfg.search.cap == 8
    with pytest.raises(TrainingError, match="search.halving races a fixed number"):
        from training.config import load_config

        load_config(None, {"search.halving": True, "search.budget_seconds": 30})


def test_the_baseline_fits_copies_only_when_there_will_be_a_baseline() -> None:
    """publish.baseline_folds copies, but none without a baseline (a fairness mitigation, fewer
    than two rows a fold, folds below 2) or with a time column (the test rows alone)."""
    assert baseline_copies(5, 1000) == 5 and baseline_copies(3, 6) == 3
    assert baseline_copies(5, 1000, mitigated=True) == 0
    assert baseline_copies(5, 1000, ordered=True) == 0
    assert baseline_copies(5, 9) == baseline_copies(1, 1000) == baseline_copies(0, 1000) == 0


@pytest.mark.parametrize(
    ("overrides", "copies"),
    [
        ({}, 5),
        ({"fairness": {"sensitive": ["group"], "mitigation": "postprocess"}}, 0),
        ({"time_column": "when"}, 0),
        ({"publish": {"refit_all": False, "baseline_folds": 0}}, 0),
    ],
    ids=["baseline", "mitigated", "time-ordered", "no-baseline"],
)
def test_the_search_reserves_the_baselines_fits_only_when_they_will_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], copies: int
) -> None:
    """A budgeted search keeps back the baseline's copies' fits, not when none will be fitted:
    with a fairness mitigation the version has no baseline, with a time column it is the test
    rows alone."""
    from training import budget, selection

    path = tmp_path / "clf.csv"
    classification_frame(300).to_csv(path, index=False)
    cfg = fast_config(data=str(path), target="label", search={"budget_seconds": 30}, **overrides)
    prepared = prepare(cfg, lambda _m: None)
    seen: list[int] = []

    def reserve(*_a: Any, baseline_folds: int = 0, **_k: Any) -> float:
        seen.append(baseline_folds)
        return 0.0

    monkeypatch.setattr(budget, "calibrate", lambda: 1.0)
    monkeypatch.setattr(budget, "reserve_seconds", reserve)
    run = selection._SearchRun.plan(prepared, lambda _m: None, 0.0, lambda: 0.0, False)
    assert run.reserve() == 0.0 and seen == [copies]
