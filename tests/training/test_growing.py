"""Issue 19: search on more rows when time allows (`search.grow_rows`).

Deterministic: every budget here is one no machine hits (3600 s), already spent, or judged against
costs and a clock the test sets; nothing asserts a wall-clock time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import fast_config
from tests.data import classification_frame, regression_frame
from training.candidates import make_estimator
from training.card import render
from training.config import Preprocessing
from training.data import FeatureKinds
from training.growing import finalists, grow, rungs, sample_rows
from training.pipeline import build_pipeline
from training.prepare import prepare
from training.search import FamilyResult, Trial, make_cv
from training.selection import search
from training.train import run_training

ROWS = 1000  # 640 training rows (test 20%, validation 20% of the rest)
START = 160  # search.max_rows: the rungs are 160, 320, 640


def _frame(task: str) -> tuple[pd.DataFrame, str]:
    if task == "regression":
        return regression_frame(ROWS), "y"
    frame = classification_frame(ROWS)
    if task == "multiclass":  # int labels, three classes (noisy: x1 alone must not fix them)
        noisy = frame["x1"] + np.random.default_rng(1).normal(0, 0.3, len(frame))
        frame["label"] = pd.cut(noisy, [-np.inf, -0.5, 0.5, np.inf], labels=[0, 1, 2])
        frame["label"] = frame["label"].astype(int)
    return frame, "label"


def _config(tmp_path: Path, task: str, **search: Any) -> Any:
    frame, target = _frame(task)
    path = tmp_path / f"{task}.csv"
    frame.to_csv(path, index=False)
    return fast_config(
        name=f"grow-{task}",
        data=str(path),
        target=target,
        models=["linear", "tree"],  # no OpenMP: HGB's threads crawl on a loaded machine
        search={
            "method": "random",
            "trials": 3,
            "budget_seconds": 3600,
            "max_rows": START,
            "default_first": True,
            **search,
        },
    )


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_rows_grow_to_every_training_row_when_the_budget_allows(tmp_path: Path, task: str) -> None:
    said: list[str] = []
    prepared = prepare(_config(tmp_path, task), said.append)
    total = len(prepared.splits.x_train)
    assert total == 640
    selection = search(prepared, said.append)
    assert selection.rows == START and selection.rungs == [START, 320, total]
    count = 0
    for r in selection.results:
        searched = [t for t in r.trials if t.rows == START]
        assert len(searched) == 3  # the search itself: `trials` on max_rows rows
        grown = [t for t in r.trials if t.rows > START]
        # the family's best two configurations, and its default when it is not one of them
        best_two = sorted(searched, key=lambda t: -t.score)[:2]
        kept = {str(t.params) for t in best_two} | {str(searched[0].params)}
        assert searched[0].default and {str(t.params) for t in grown} == kept
        assert sorted(t.rows for t in grown) == [320] * len(kept) + [total] * len(kept)
        assert [t.default for t in grown if t.rows == total].count(True) == 1
        assert r.best is not None and r.best.rows == total  # scores on the most rows win
        count += len(kept)
    # the finalist's reported score is its score on every training row
    assert selection.best.rows == total
    assert selection.best in [r.best for r in selection.results]
    line = f"search on more rows: {count} finalists on {total} rows"
    assert line in _trimmed(said)
    assert any(m.startswith("search tree on 320 rows: cv ") for m in said)
    assert said[-1].endswith(f" on {total} rows)") and said[-1].startswith("best family: ")


def _trimmed(said: list[str]) -> list[str]:
    return [m.split(" (about")[0] for m in said]


def test_the_manifest_and_card_say_how_many_rows_each_score_is_on(tmp_path: Path) -> None:
    from core.registry import Registry

    cfg = _config(tmp_path, "binary")
    manifest = run_training(cfg, Registry(tmp_path / "reg")).manifest
    assert manifest["model"]["search"]["rows"] == START
    assert manifest["model"]["search"]["grown_rows"] == [320, 640]
    assert [c["cv_rows"] for c in manifest["model"]["candidates"]] == [640, 640]
    assert manifest["metrics"]["cv"]["rows"] == 640
    card = render(manifest)
    assert "(scores on 640 rows, re-scored on more rows)" in card


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_switch_off_restores_the_search_on_max_rows(tmp_path: Path, task: str) -> None:
    prepared = prepare(_config(tmp_path, task, grow_rows=False), lambda _: None)
    off = search(prepared, lambda _: None)
    assert off.rungs == [START]
    assert all(t.rows == START for r in off.results for t in r.trials)
    on = search(prepare(_config(tmp_path, task), lambda _: None), lambda _: None)
    for a, b in zip(off.results, on.results, strict=True):  # the same search, then more rows
        assert [(t.params, t.score) for t in a.trials] == [
            (t.params, t.score) for t in b.trials[: len(a.trials)]
        ]
        assert a.best is not None and a.best.rows == START


def test_no_growth_when_the_budget_is_spent(tmp_path: Path) -> None:
    said: list[str] = []
    prepared = prepare(_config(tmp_path, "binary", budget_seconds=0.001), said.append)
    selection = search(prepared, said.append)
    assert selection.rungs == [START]
    assert all(t.rows == START for r in selection.results for t in r.trials)
    assert any(m.startswith(f"search on more rows: stays at {START} rows") for m in said)


# --- grow() itself, with costs and a clock the test sets ------------------------------------
def _build(params: dict[str, Any]) -> Any:
    kinds = FeatureKinds(numeric=["x1", "x2"], categorical=["color"], datetime=[])
    est = make_estimator("linear", "classification", params, 0)
    return build_pipeline(kinds, est, family="linear", prep=Preprocessing())


FRAME = classification_frame(800)


def _sample(n: int, _family: str) -> tuple[pd.DataFrame, pd.Series, None]:
    rows = FRAME.iloc[:n]
    return rows[["x1", "x2", "color"]], rows["label"], None


def _searched(seconds: float) -> list[FamilyResult]:
    """One family searched on 100 rows: three configurations, each costing `seconds`."""
    trials = [
        Trial({"alpha": a}, score, 0.0, seconds, 100)
        for a, score in ((1e-4, 0.8), (1e-2, 0.7), (1e-1, 0.6))
    ]
    return [FamilyResult("linear", trials)]


def _grow(results: list[FamilyResult], deadline: float, **kw: Any) -> tuple[list[int], list[str]]:
    said: list[str] = []
    sample = kw.pop("sample", _sample)
    args: dict[str, Any] = {
        "start": 100,
        "total": 800,
        "per_family": 2,
        "deadline": deadline,
        "cv": make_cv("classification", 2, False, 0),
        "scoring": "roc_auc",
        "say": said.append,
        "clock": lambda: 0.0,
        **kw,
    }
    return grow(results, {"linear": _build}, sample, **args), said


def test_grow_stops_before_a_rung_the_measured_cost_says_will_not_fit() -> None:
    results = _searched(seconds=10.0)  # two finalists: the 200-row rung needs about 40 s
    reached, said = _grow(results, deadline=39.0)
    assert reached == [100] and len(results[0].trials) == 3
    assert said == [
        "search on more rows: stays at 100 rows (the 200-row rung needs about 40s, "
        "39s of the budget left)"
    ]
    reached, _ = _grow(results, deadline=1e9)
    assert reached == [100, 200, 400, 800]
    assert [t.rows for t in results[0].trials[3:]] == [200, 200, 400, 400, 800, 800]
    assert results[0].best is not None and results[0].best.rows == 800


def test_grow_drops_a_rung_the_deadline_cuts_short() -> None:
    now = [0.0]

    def slow(n: int, family: str) -> tuple[pd.DataFrame, pd.Series, None]:
        now[0] += 100.0  # every evaluation "takes" 100 s of the test's clock
        return _sample(n, family)

    results = _searched(seconds=0.001)
    reached, said = _grow(results, deadline=50.0, clock=lambda: now[0], sample=slow)
    assert reached == [100] and len(results[0].trials) == 3  # half a rung never counts
    assert said[-1] == "search on more rows: the 200-row rung did not finish; scores stay on 100"
    assert results[0].best is not None and results[0].best.rows == 100


def test_finalists_are_each_familys_best_distinct_configurations() -> None:
    res = _searched(1.0)
    res[0].trials.append(Trial({"alpha": 1e-4}, 0.79, 0.0, 1.0, 100))  # a repeat of the best
    res[0].trials.append(Trial({"alpha": 1.0}, 0.99, 0.0, 1.0, 100, pruned=True))
    res.append(FamilyResult("hgb", [Trial({}, float("-inf"), 0.0, 1.0, 100)]))
    assert [t.params for _, t in finalists(res, 2)] == [{"alpha": 1e-4}, {"alpha": 1e-2}]


def test_rungs_and_nested_samples() -> None:
    assert rungs(160, 640) == [320, 640]
    assert rungs(25_000, 120_000) == [50_000, 100_000, 120_000]
    assert rungs(500, 500) == []
    first = sample_rows(1000, 100, 100, False, 7)
    # the search's own sample is the one max_rows always took
    assert list(first) == sorted(np.random.default_rng(7).choice(1000, 100, replace=False))
    grown = sample_rows(1000, 100, 300, False, 7)
    assert len(grown) == 300 == len(set(grown)) and set(first) <= set(grown)
    assert list(sample_rows(1000, 100, 300, True, 7)) == list(range(700, 1000))  # most recent
    assert list(sample_rows(1000, 100, 5000, False, 7)) == list(range(1000))
