"""Issue 32: a budgeted run ends near its budget: the steps after the search fit what is left,
optional work dropped in a documented order, and a budget below the run's floor said early
(training/shortfall.py). Costs and clocks are injected; no wall-clock time is asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_wine

from core.registry import Registry
from tests.conftest import fast_config
from training.budget import spend
from training.search import FamilyResult, Trial
from training.shortfall import DROP_ORDER, AfterCosts, costs, plan
from training.train import train_candidate

COSTS = AfterCosts(required=10.0, optional={"baseline": 5.0, "ensemble": 20.0, "calibration": 4.0})


def _steps(skipped: list[dict[str, Any]]) -> list[str]:
    return [s["step"] for s in skipped]


@pytest.mark.parametrize(
    ("left", "dropped"),
    [
        (39.0, []),  # 10 + 5 + 20 + 4: everything fits
        (38.0, ["baseline"]),
        (34.0, ["baseline"]),  # 10 + 20 + 4
        (33.0, ["baseline", "ensemble"]),
        (14.0, ["baseline", "ensemble"]),
        (13.0, DROP_ORDER),
        (-5.0, DROP_ORDER),  # spent already: every optional step, what is required still runs
    ],
)
def test_optional_steps_are_dropped_in_order_until_the_rest_fits(
    left: float, dropped: list[str]
) -> None:
    skipped = plan(left, COSTS)
    assert _steps(skipped) == list(dropped)
    assert all("search.budget_seconds left" in s["reason"] for s in skipped)


def test_a_step_that_would_not_run_is_never_recorded_as_skipped() -> None:
    """No baseline (a time column) and no ensemble (disabled): calibration goes first."""
    costs_ = AfterCosts(10.0, {"baseline": 0.0, "ensemble": 0.0, "calibration": 4.0})
    assert _steps(plan(13.0, costs_)) == ["calibration"]
    assert plan(14.0, costs_) == []


def _wine(tmp_path: Path) -> Path:
    """scikit-learn's wine (178 rows, 13 features, 3 classes): a small multi-class data set."""
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    return path


def _trial(family: str, score: float, seconds: float, rows: int) -> FamilyResult:
    return FamilyResult(family, [Trial({}, score, 0.0, seconds, rows, folds=(score,) * 2)])


def test_the_costs_count_each_member_and_calibration_on_a_multiclass_run(tmp_path: Path) -> None:
    """From measured trials (a 2-fold trial of `s` seconds: s / 2 a fit on half the rows): the
    ensemble's members, a stack's folds, the baseline's copies of every member and the
    calibrated fits are counted; a trial ten times slower (a tree per class and round) costs
    ten times more."""
    from training.prepare import prepare
    from training.selection import Selection

    cfg = fast_config(
        data=str(_wine(tmp_path)), target="cultivar", ensemble={"enabled": True},
        publish={"refit_all": True}, search={"budget_seconds": 60, "max_rows": 1000},
    )  # fmt: skip
    prepared = prepare(cfg, lambda _m: None)
    rows = len(prepared.splits.x_train)

    def selection(slow: float) -> Selection:
        results = [_trial("linear", 0.9, 1.0, rows), _trial("hgb", 0.8, slow, rows)]
        best = results[0].best
        assert best is not None
        return Selection(results=results, family="linear", best=best, skipped=[],
                         scoring="accuracy", rows=rows, rungs=[rows], folds=2,
                         size=None, leader="linear", within_noise=(), spent={})  # type: ignore[arg-type]  # fmt: skip

    def of(sel: Selection, p: Any = prepared) -> Any:
        return costs(p, sel.results, sel.family, sel.folds, 0.0)

    fast, slow = of(selection(1.0)), of(selection(10.0))
    assert set(fast.optional) == {"baseline", "ensemble", "calibration"}
    # the chosen family alone in what is required and in calibration: hgb's cost does not move it
    assert slow.required == pytest.approx(fast.required)
    assert slow.optional["calibration"] == pytest.approx(fast.optional["calibration"])
    # every member counts in the ensemble and the baseline's copies (of the ensemble)
    for step in ("ensemble", "baseline"):
        assert slow.optional[step] > 4 * fast.optional[step] > 0
    # the assessment of a 2-member ensemble predicts through both: `after` once more
    slower = costs(prepared, selection(1.0).results, "linear", 2, 5.0)
    assert slower.optional["ensemble"] == pytest.approx(fast.optional["ensemble"] + 5.0)
    assert slower.required == pytest.approx(fast.required + 5.0)
    alone = fast_config(**{**cfg.model_dump(), "ensemble": {"enabled": False}})
    single = of(selection(10.0), prepare(alone, lambda _m: None))
    assert single.optional["ensemble"] == 0.0
    assert single.optional["baseline"] < slow.optional["baseline"] / 5


def test_a_budgeted_multiclass_run_below_its_floor_says_so_and_records_what_it_skipped(
    tmp_path: Path,
) -> None:
    """A budget far below what wine's steps need: the floor is said early (naming
    search.budget_seconds), the first trials still run, and the optional steps after the search
    are skipped, in order, and recorded in the manifest."""
    cfg = fast_config(
        data=str(_wine(tmp_path)), target="cultivar", models=["linear", "tree"],
        search={"budget_seconds": 0.5, "max_rows": 1000, "method": "random"},
        ensemble={"enabled": True}, publish={"refit_all": True},
    )  # fmt: skip
    said: list[str] = []
    candidate = train_candidate(cfg, Registry(tmp_path / "registry"), said.append)
    manifest = candidate.manifest.body()
    budget = manifest["model"]["search"]["budget"]
    shortfall = budget["shortfall"]
    # the ensemble and calibration before the fits; the baseline, dropped first, decided last
    assert _steps(shortfall["skipped"]) == ["ensemble", "calibration", "baseline"]
    assert shortfall["floor_estimate_seconds"] > 0.5
    floor = [m for m in said if "below this run's floor" in m]
    assert len(floor) == 2 and all("search.budget_seconds 0.5" in m for m in floor)
    assert "first trials of" in floor[0] and "every family's first trial took" in floor[1]
    assert said.index(floor[0]) < min(i for i, m in enumerate(said) if m.startswith("skipped"))
    assert all(r["trials"] >= 1 for r in manifest["model"]["candidates"])
    assert "baseline" not in manifest["reference"]
    assert manifest["model"]["ensemble"]["published"] is False
    assert "budget" in manifest["model"]["ensemble"]["reason"]
    assert manifest["model"]["calibration"] == "none"
    assert manifest["model"]["refit"]["all_rows"] is True  # what is required still runs


def test_the_floor_is_heard_once_before_the_first_trial_past_the_end() -> None:
    """spend: a family's first trial runs past the end, and `floor` hears which still wait."""
    from tests.training.test_budget import Clock, _family

    clock = Clock()
    fams = [_family(n, clock, cost=2.0) for n in ("a", "b", "c")]
    heard: list[list[str]] = []
    spend(fams, lambda: 3.0, clock=clock, floor=heard.append)
    # a and b ran within 3 s of search, c's first trial past the end; then every first trial is in
    assert heard == [["c"], []]
    assert all(f.result.trials for f in fams)


def test_an_ensemble_without_the_chosen_family_counts_every_member(tmp_path: Path) -> None:
    """The noise rule may choose a family the ensemble's best-scored members leave out: each
    member is then fitted (its cost never goes below zero, the step is still dropped)."""
    from training.prepare import prepare

    cfg = fast_config(
        data=str(_wine(tmp_path)), target="cultivar", ensemble={"enabled": True, "size": 2},
        search={"budget_seconds": 60, "max_rows": 1000},
    )  # fmt: skip
    prepared = prepare(cfg, lambda _m: None)
    rows = len(prepared.splits.x_train)
    results = [_trial("linear", 0.9, 1.0, rows), _trial("tree", 0.85, 1.0, rows),
               _trial("hgb", 0.8, 50.0, rows)]  # fmt: skip
    estimate = costs(prepared, results, "hgb", 2, 0.0)
    assert estimate.optional["ensemble"] > 0
    assert _steps(plan(estimate.required + 1.0, estimate)) == list(DROP_ORDER)


def test_the_baseline_gets_what_is_left_last_on_an_injected_clock(tmp_path: Path) -> None:
    """keep_baseline: the copies of the model as it came out (its members, calibrated or not)
    run when what is left pays for them and the refit; else skipped and recorded."""
    from training.prepare import prepare
    from training.selection import Selection
    from training.shortfall import keep_baseline

    cfg = fast_config(
        data=str(_wine(tmp_path)), target="cultivar", publish={"refit_all": True},
        search={"budget_seconds": 60, "max_rows": 1000},
    )  # fmt: skip
    prepared = prepare(cfg, lambda _m: None)
    rows = len(prepared.splits.x_train)
    results = [_trial("linear", 0.9, 2.0, rows), _trial("hgb", 0.8, 20.0, rows)]
    best = results[0].best
    assert best is not None
    sel = Selection(results=results, family="linear", best=best, skipped=[],
                    scoring="accuracy", rows=rows, rungs=[rows], folds=2,
                    size=None, leader="linear", within_noise=(), spent={})  # type: ignore[arg-type]  # fmt: skip

    def keep(members: list[str], now: float) -> bool:
        return keep_baseline(prepared, sel, members, True, 0.0, lambda _m: None, lambda: now)

    # linear: about 3 s a fit on every row, 6.6 calibrated: 5 copies and the refit about 28 s
    assert keep(["linear"], 20.0)
    assert sel.spent == {} or sel.spent["shortfall"]["skipped"] == []
    assert not keep(["linear", "hgb"], 20.0)  # an ensemble's copies: 11x the fits
    assert _steps(sel.spent["shortfall"]["skipped"]) == ["baseline"]
    assert not keep(["linear"], 59.0)  # one second left
    unbudgeted = Selection(**{**sel.__dict__, "spent": None})
    assert keep_baseline(prepared, unbudgeted, ["hgb"], True, 0.0, print, lambda: 1e9)
