"""Issue 32: no tuned configuration, and no family, wins inside the noise (training/noise.py).

Fold scores are constructed to be inside or outside one standard error of the paired per-fold
difference; one run on a packaged data set checks the rule from the manifest's own figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn import datasets

from core.registry import Registry
from tests.conftest import fast_config
from training import card, noise
from training.search import FamilyResult, Trial
from training.selection import pick
from training.train import run_training

BASE = (0.80, 0.85, 0.90)
INSIDE = (0.81, 0.84, 0.91)  # diffs +.01 -.01 +.01: mean .0033, SE .0067: noise
OUTSIDE = (0.81, 0.862, 0.909)  # diffs +.01 +.012 +.009: mean .0103, SE .0009: beyond


def _trial(folds: tuple[float, ...], default: bool = False, rows: int = 300) -> Trial:
    score = sum(folds) / len(folds)
    return Trial({"default": default, "folds": folds}, score, 0.0, 1.0, rows, folds=folds,
                 default=default)  # fmt: skip


def test_one_standard_error_of_the_paired_difference() -> None:
    mean, se = noise.paired_difference(INSIDE, BASE)
    assert mean == pytest.approx(0.01 / 3) and se == pytest.approx(0.02 / 3, rel=1e-6)
    assert not noise.beats(INSIDE, BASE)
    assert noise.beats(OUTSIDE, BASE) and not noise.beats(BASE, OUTSIDE)
    assert not noise.beats(BASE, BASE)  # a tie never beats
    assert not noise.beats((0.9, 0.9), BASE)  # folds that do not pair never beat
    # the same mean gain, but scattered folds: within noise (a paired rule, not the means)
    assert not noise.beats((0.9, 0.75, 0.9309), BASE)


def test_a_tuned_configuration_replaces_the_default_only_beyond_noise() -> None:
    default = _trial(BASE, default=True)
    inside = FamilyResult("hgb", [default, _trial(INSIDE)])
    assert inside.top is not None and inside.top.folds == INSIDE  # it scores higher ...
    assert inside.best is default  # ... but inside the noise: the default is kept
    beyond = FamilyResult("hgb", [default, _trial(INSIDE), _trial(OUTSIDE)])
    assert beyond.best is not None and beyond.best.folds == OUTSIDE
    # the default is judged on the same rows as the tuned one: on fewer rows it does not count
    grown = FamilyResult("hgb", [_trial(BASE, default=True, rows=100), _trial(INSIDE)])
    assert grown.best is not None and grown.best.folds == INSIDE
    alone = FamilyResult("hgb", [_trial(INSIDE)])  # search.default_first false: no default
    assert alone.best is not None and alone.best.folds == INSIDE


def test_between_families_the_simplest_within_noise_wins() -> None:
    hgb = FamilyResult("hgb", [_trial(INSIDE, default=True)])
    forest = FamilyResult("forest", [_trial(OUTSIDE, default=True)])
    linear = FamilyResult("linear", [_trial(BASE, default=True)])
    # forest leads; hgb is within its noise, linear is not: hgb (simpler than forest) is chosen
    chosen, best, leader, tied = pick([forest, linear, hgb])
    assert (chosen.family, leader.family, tied) == ("hgb", "forest", ["hgb"])
    assert best.folds == INSIDE
    # no family within the leader's noise: the leader
    chosen, _, leader, tied = pick([forest, linear])
    assert chosen is forest is leader and tied == []
    # scores on other rows do not pair: the leader
    other_rows = FamilyResult("linear", [_trial(INSIDE, default=True, rows=100)])
    chosen, _, _, tied = pick([hgb, other_rows])
    assert chosen is hgb and tied == []


def test_the_card_says_when_a_simpler_family_was_chosen_within_noise() -> None:
    assert card.selection_lines({"leader": "hgb", "chosen": "hgb"}) == []
    (line,) = card.selection_lines({"leader": "forest", "chosen": "linear"})
    assert line.startswith("- forest scored highest, but linear is within one paired")


def test_simplicity_order_puts_unknown_families_last() -> None:
    order = sorted(["deep", "forest", "custom", "linear", "hgb"], key=noise.simplicity)
    assert order == ["linear", "hgb", "forest", "deep", "custom"]


@pytest.mark.parametrize("labels", ["int", "bool"])
def test_the_rule_holds_on_a_packaged_data_set(tmp_path: Path, labels: str) -> None:
    """breast cancer, two families searched with a budget: the manifest's own fresh-fold scores
    (training.fresh: the top and default configurations re-scored on folds of another split seed)
    show that every tuned configuration kept beats its default beyond noise, every default kept is
    not beaten beyond it, and the chosen family is the simplest within the leader's noise."""
    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame.iloc[:, [0, 1, 22, 26]].copy()
    frame["target"] = raw.target.astype(int if labels == "int" else bool)
    path = tmp_path / "cancer.csv"
    frame.to_csv(path, index=False)
    cfg = fast_config(
        name="cancer", data=str(path), target="target", models=["hgb", "linear"],
        search={"method": "bayes", "trials": 5, "budget_seconds": 3600}, split={"cv_folds": 4},
    )  # fmt: skip
    m = run_training(cfg, Registry(tmp_path / "reg")).manifest
    candidates = {c["family"]: c for c in m["model"]["candidates"]}
    for c in candidates.values():
        assert c["trials"] == 5 and c["seconds"] > 0 and len(c["cv_folds"]) == 4
        top, default = c["fresh_top_cv_folds"], c["fresh_default_cv_folds"]
        assert len(top) == len(default) == 4
        assert top != c["top_cv_folds"]  # other folds: other scores
        tuned_wins = noise.beats(top, default)
        assert c["configuration"] == ("tuned" if tuned_wins else "default")
        assert c["fresh_cv_folds"] == (top if tuned_wins else default)
        assert c["fresh_cv_score"] == pytest.approx(sum(c["fresh_cv_folds"]) / 4)
    selection = m["model"]["selection"]
    assert selection["compared_on"] == "fresh folds"
    leader = candidates[selection["leader"]]
    assert leader["fresh_cv_score"] == max(c["fresh_cv_score"] for c in candidates.values())
    for family, c in candidates.items():
        within = family != selection["leader"] and not noise.beats(
            leader["fresh_cv_folds"], c["fresh_cv_folds"]
        )
        assert (family in selection["within_noise"]) == within
    contenders = [selection["leader"], *selection["within_noise"]]
    assert selection["chosen"] == min(contenders, key=noise.simplicity)
    assert m["model"]["family"] == selection["chosen"]  # no ensemble in FAST
    published = candidates[selection["chosen"]]
    if published["configuration"] == "default" and selection["chosen"] == "hgb":
        assert m["model"]["params"] == {"early_stopping": "auto"}  # HistGradientBoosting*()
    page = card.render({**m, "version": 1})
    for family, c in candidates.items():
        kept = ", its default" if c["configuration"] == "default" else ", tuned"
        assert f"{family} ({c['cv_score']:.4f}{kept} of 5)" in page
    assert ("within one paired standard error" in page) == (
        selection["chosen"] != selection["leader"]
    )
    budget = m["model"]["search"]["budget"]
    assert budget["budget_seconds"] == 3600 and budget["trial_cap"] == 5
    assert budget["fresh_folds_seed"] == cfg.seed + 1
    assert budget["after_search_seconds"] >= 0 and budget["reserved_seconds"] > 0
