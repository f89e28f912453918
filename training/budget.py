"""Spend a time budget on the search: successive halving over families until what is left is
what the steps after the search need (estimated from the trials' measured fit and predict times)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training import fresh, noise
from training.growing import GROW_FACTOR, finalists
from training.search import FamilyResult, FamilySearch

REFITTABLE_MITIGATIONS = ("none", "reweight")
"""Mitigations a refit repeats as they were fitted (reweight: weights over every row). The
others are published as tested: postprocess fits its per-group thresholds on the validation rows
(on all rows they would be fitted on rows the model learnt), and resample, reductions and
adversarial refit their own way."""

RESERVE_FITS = 12
"""The most fits of each family's chosen configuration the steps after the search make, counted
on every row (`chosen_fits` counts them by the configuration; this is its bound)."""
CALIBRATED_FIT = 2.0
"""A calibrated fit (CalibratedClassifierCV, three folds) in fits on its rows: three fits on
two thirds of them."""
AFTER_BASE_SECONDS = 1.0
"""Seconds the steps after the search take whatever the rows (the model card, reports, writing
the version), at the calibration speed (`bench/budget.py`: breast cancer, diabetes and wine runs
with their test rows x features, fitted by least squares)."""
AFTER_FEATURE_SECONDS = 0.12
"""Seconds per feature of the steps after the search that predict rather than fit, at the
calibration speed, besides the predictions themselves (`predict_seconds`): permutation
importance's five passes per feature, contributions, their plots, slices, the reference sample
cost per pass about as much whatever the rows (hundreds to a few thousand: a pass is mostly the
pipeline's own overhead). Breast cancer (114 test rows x 30 features) about 5.3 s besides fits,
diabetes (89 x 10) 1.6 s, wine (36 x 13) 2.6 s with a linear model."""
IMPORTANCE_ROWS = 2000
"""The most test rows permutation importance passes over (training/evaluate.py `importance`)."""
IMPORTANCE_REPEATS = 5
"""Passes per feature of permutation importance (training/evaluate.py `importance`)."""
PASS_SECONDS = AFTER_FEATURE_SECONDS / IMPORTANCE_REPEATS
"""What one scoring pass costs whatever its rows, at the calibration speed (AFTER_FEATURE_SECONDS'
share of a pass): taken off a trial's scoring seconds, once a fold, before they are shared out
per row (`rates`), since AFTER_FEATURE_SECONDS already counts it."""
TEST_PASSES = 4
"""Passes over the test rows besides permutation importance: the test metrics, the predictions
the slices, fairness and error analysis read, the reference sample, the threshold's validation
rows (counted as test rows)."""
EXPLAINED_ROWS = 300
"""Test rows the model card's contributions explain (core/explain.py `global_summary`)."""
SAMPLED_PERMUTATIONS = 8
"""Permutations a sampled Shapley row predicts (features + 1) rows each (core/explain.py)."""
TREE_SHAP_PREDICTS = 300.0
"""A row's TreeSHAP (tree families, core/explain.py), in predictions of one row by the same
model: TreeSHAP grows with leaves x depth, a prediction with depth, so no ratio holds for every
tree model; 300 is a 100-tree forest's on digits (measured 12 for HGB on digits and 4,000 for a
300-tree forest on 100 features fitted on 4,000 rows, CPU seconds, shap 0.51)."""
CALIBRATED_PREDICTS = 3.0
"""A calibrated model's prediction in the predictions of its model: CalibratedClassifierCV
(three folds, training/candidates.py `calibration_folds`) predicts through each fold's copy."""
EXACT_FAMILIES = frozenset({"linear"})
"""Families explained exactly from their coefficients: one pass over the explained rows."""
TREE_FAMILIES = frozenset({"tree", "forest", "hgb", "lightgbm", "xgboost"})
"""Families explained by TreeSHAP (TREE_SHAP_PREDICTS); the others are sampled."""
CALIBRATION_SECONDS = 0.04
"""What `calibrate`'s workload took when AFTER_* were measured (2 cores, load ~6, nice 19)."""


def _workload() -> float:
    """Seconds of a fixed small workload like the assessment's: prediction passes of a fitted
    logistic regression over a 1,000 x 10 table, each with one column permuted, and their AUC."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 10))
    y = (x[:, 0] + rng.normal(size=1000) > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    start = time.perf_counter()
    for j in range(10):
        shuffled = x.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        roc_auc_score(y, model.predict_proba(shuffled)[:, 1])
    return time.perf_counter() - start


def calibrate() -> float:
    """How much slower the machine is now than when AFTER_* were measured: the best of two runs
    of the workload against CALIBRATION_SECONDS, at least 1 (a shared machine's load comes and
    goes within a run: never assumed faster than when measured)."""
    return max(1.0, min(_workload() for _ in range(2)) / CALIBRATION_SECONDS)


def after_seconds(rows: int, features: int, speed: float) -> float:
    """Seconds the steps after the search need besides fits and the chosen model's own
    predictions (`predict_seconds`), for `rows` test rows of `features` features, at `speed`
    (calibrate's figure): the passes' overhead, whatever the model."""
    del rows  # a pass's overhead does not grow with its rows: its predictions do
    return speed * (AFTER_BASE_SECONDS + AFTER_FEATURE_SECONDS * features)


@dataclass(frozen=True)
class Rates:
    """What a family's chosen configuration took per row in its CV trial, on the search's clock
    (so at the machine's speed as it ran)."""

    fit: float  # seconds a fit takes per row it learns (the trial's seconds besides scoring)
    predict: float  # seconds a prediction takes per row, a pass's overhead (PASS_SECONDS) aside


def rates(result: FamilyResult, folds: int, speed: float = 1.0) -> Rates:
    """The family's chosen configuration's fit and predict seconds per row, from its CV trial:
    the trial's seconds besides its scoring over the rows its folds' fits learnt (the build, the
    splits: a pessimistic figure), its scoring seconds less a pass's overhead a fold (PASS_SECONDS
    at `speed`) over the rows it predicted. A trial without that split (a distributed search's
    older record) counts all its seconds as `folds` fits on (folds - 1) / folds of its rows and
    predicts for nothing."""
    best = result.best
    if best is None or best.rows <= 0:
        return Rates(0.0, 0.0)
    if best.fit_rows > 0:
        overhead = len(best.folds) * speed * PASS_SECONDS
        predict = max(0.0, best.score_seconds - overhead) / max(best.scored_rows, 1)
        return Rates(max(0.0, best.seconds - best.score_seconds) / best.fit_rows, predict)
    if folds < 2:
        return Rates(0.0, 0.0)
    return Rates(best.seconds / (best.rows * (folds - 1)), 0.0)


def predicted_rows(family: str, rows: int, features: int) -> float:
    """Rows the steps after the search predict through one model of `family`, for `rows` test
    rows of `features` features: TEST_PASSES over the test rows, permutation importance
    (IMPORTANCE_REPEATS passes a feature and one more over at most IMPORTANCE_ROWS), and the
    contributions of at most EXPLAINED_ROWS: exact (one pass), TreeSHAP (TREE_SHAP_PREDICTS a row)
    or sampled (SAMPLED_PERMUTATIONS x (features + 1) a row)."""
    explained = min(rows, EXPLAINED_ROWS)
    if family in EXACT_FAMILIES:
        each = 1.0
    elif family in TREE_FAMILIES:
        each = TREE_SHAP_PREDICTS
    else:
        each = float(SAMPLED_PERMUTATIONS * (features + 1))
    importance = (IMPORTANCE_REPEATS * features + 1) * min(rows, IMPORTANCE_ROWS)
    return TEST_PASSES * rows + importance + explained * each


def predict_seconds(
    results: Sequence[FamilyResult],
    rows: int,
    features: int,
    speed: float = 1.0,
    calibrated: bool = False,
) -> float:
    """Seconds the steps after the search spend in the predictions of the models of `results`
    (the chosen family, or an ensemble's members: the assessment predicts through each): each
    one's measured predict seconds a row (`rates`) times its `predicted_rows`, CALIBRATED_PREDICTS
    times that when `calibrated`."""
    each = CALIBRATED_PREDICTS if calibrated else 1.0
    return each * sum(
        rates(r, 0, speed).predict * predicted_rows(r.family, rows, features) for r in results
    )


def leading(results: Sequence[FamilyResult], n: int) -> list[FamilyResult]:
    """The `n` families with the highest CV score of their chosen configuration, best first:
    the ones the reserve counts and an ensemble combines (the one ranking of both)."""
    ranked = sorted(
        (r for r in results if r.best is not None),
        key=lambda r: -r.best.score,  # type: ignore[union-attr]
    )
    return ranked[:n]


def chosen_fits(
    *, calibration: str, classification: bool, fit_share: float, train_share: float, refit: bool
) -> float:
    """Fits of the chosen configuration after the search, in fits on every row
    (training/fitting.py): on the training rows (`train_share` of every row) the plain fit and one
    calibrated fit per calibration tried (`calibration` auto: sigmoid and isotonic; a classifier
    only), the final fit on train + validation (`fit_share`) and the refit on every row
    (`refit`), both calibrated when a calibration may be kept (at most RESERVE_FITS)."""
    tried = {"auto": 2, "none": 0}.get(calibration, 1) if classification else 0
    each = CALIBRATED_FIT if tried else 1.0
    fits = (1 + tried * CALIBRATED_FIT) * train_share + each * fit_share + each * refit
    return min(float(RESERVE_FITS), fits)


def fit_seconds(result: FamilyResult, folds: int, rows: int) -> float:
    """Seconds one fit of the family's chosen configuration takes on `rows` rows, from its CV
    trial (`rates`), scaled linearly in the rows."""
    return rates(result, folds).fit * rows


def baseline_fits(folds: int, each: float = 3.0, fit_share: float = 1.0) -> float:
    """Fits the realised-performance baseline's copies take (publish.baseline_folds), in fits on
    every row: each copy of the tested configuration on (folds - 1) / folds of the train and
    validation rows (`fit_share` of every row), `each` fits a copy (a calibrated one:
    CALIBRATED_FIT); none without a baseline."""
    return each * (folds - 1) * fit_share if folds >= 2 else 0.0


def baseline_copies(
    folds: int, rows: int, *, mitigated: bool = False, ordered: bool = False
) -> int:
    """How many copies the realised-performance baseline fits (`publishing.unseen_baseline`) on
    `rows` train and validation rows: publish.baseline_folds, but none when there is no baseline
    (folds below 2, fewer than two rows a fold, a fairness mitigation: its copies would be fitted
    without it) or it is the test rows alone (`ordered`: a time column)."""
    if mitigated or ordered or folds < 2 or rows < 2 * folds:
        return 0
    return folds


MITIGATION_FITS = {"none": 0, "reweight": 1, "resample": 1, "postprocess": 1, "reductions": 51}
"""Fits of the chosen configuration `fairness.mitigation` makes (training/mitigation.py), on
train + validation: reweight the unmitigated model it is compared with, resample the model on the
resampled rows, postprocess the model on the training rows (when the fit left none), reductions
ExponentiatedGradient's (at most max_iter 50, and the final one). adversarial fits a network of
its own, not the chosen configuration: 0 (not foreseen)."""


def mitigation_fits(method: str) -> int:
    """Fits of the chosen configuration the fairness mitigation `method` makes (MITIGATION_FITS;
    an unknown method none)."""
    return MITIGATION_FITS.get(method, 0)


def reserve_seconds(
    results: Sequence[FamilyResult],
    *,
    folds: int,
    rows: int,
    members: int,
    after: float,
    baseline_folds: int = 0,
    mitigation: int = 0,
    fits: float = RESERVE_FITS,
    copy_fits: float = 3.0,
    test_rows: int = 0,
    features: int = 0,
    speed: float = 1.0,
    calibrated: bool = False,
) -> float:
    """Seconds the steps after the search need: `fits` fits (`chosen_fits`) and the baseline's
    copies (`baseline_fits` of `baseline_folds` copies of `copy_fits` fits each) on `rows` rows
    of each of the `leading` `members` families (the chosen one and an ensemble's other
    members), `mitigation` fits of the best (`mitigation_fits`), their predictions of
    `test_rows` test rows of `features` features (`predict_seconds`: each one's measured predict
    seconds a row, through a calibrated model's copies when `calibrated`), plus `after` (the
    passes' overhead: after_seconds), plus the re-scoring of each family's top and default on
    fresh folds (training.fresh: their trials' measured seconds)."""
    ranked = leading(results, members)
    one = sum(fit_seconds(r, folds, rows) for r in ranked)
    mitigated = mitigation * fit_seconds(ranked[0], folds, rows) if ranked else 0.0
    each = fits + baseline_fits(baseline_folds, copy_fits)
    predicted = predict_seconds(ranked, test_rows, features, speed, calibrated)
    return each * one + mitigated + predicted + after + fresh.seconds(results)


def grow_seconds(results: Sequence[FamilyResult], per_family: int) -> float:
    """Seconds the first rung of growing takes (training.growing): its finalists' last trials on
    GROW_FACTOR times the rows, linearly."""
    return GROW_FACTOR * sum(t.seconds for _, t in finalists(list(results), per_family))


def rungs_for(families: int) -> int:
    """Rungs of a halving race of `families` families down to one: 1 + ceil(log2 families)."""
    return 1 + math.ceil(math.log2(families)) if families > 1 else 1


def survivors(active: Sequence[FamilySearch]) -> list[FamilySearch]:
    """The families that go on to the next rung: the better half by their chosen configuration's
    CV score (ties in the order given), and every other one the leader does not beat beyond
    noise (training.noise: one standard error of their paired per-fold difference)."""
    ranked = sorted(active, key=lambda s: -(s.result.best.score if s.result.best else -math.inf))
    keep = ranked[: math.ceil(len(ranked) / 2)]
    leader = ranked[0].result.best if ranked else None
    for s in ranked[len(keep) :]:
        best = s.result.best
        if leader is not None and best is not None and not noise.beats(leader.folds, best.folds):
            keep.append(s)
    return keep


def spend(
    searches: Sequence[FamilySearch],
    end: Callable[[], float],
    *,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], None] = lambda _m: None,
    floor: Callable[[list[str]], None] = lambda _f: None,
) -> list[list[str]]:
    """Run trials until `end()` (the search's deadline, recomputed before every trial), by
    successive halving over families: a rung of n families gets 1 / (1 + ceil(log2 n)) of what
    is left, in equal shares; a trial starts only when its family's median trial time fits
    before the end (and, after the family's first trial of the rung, in its share); a family's
    first trial always runs. After each rung `survivors` go on; a family at its trial cap or out
    of configurations leaves the race, and when every racing family has, the time goes back to
    the others. The first time a first trial starts past the end, `floor` hears the families
    whose first trial is still to run (the budget is below the run's floor), and again, with none,
    once every family has run it. Returns the families of each rung."""
    racing = list(searches)
    rungs: list[list[str]] = []
    warned = False
    while True:
        active = [s for s in racing if not s.done]
        if not active:
            racing = [s for s in searches if not s.done]
            if not racing:
                break
            continue
        if clock() >= end() and all(s.result.trials for s in active):
            break  # (a family's first trial always runs)
        rung_end = clock() + (end() - clock()) / rungs_for(len(active))
        names = [s.result.family for s in active]
        say(f"search rung {len(rungs) + 1}: {', '.join(names)} ({end() - clock():.0f}s left)")
        ran = 0
        for i, s in enumerate(active):
            share_end = clock() + (rung_end - clock()) / (len(active) - i)
            first = True
            while not s.done:
                if not s.result.trials and clock() >= end() and not warned:
                    floor([f.result.family for f in searches if not f.result.trials])
                    warned = True
                fits = clock() + s.cost <= end()
                if s.result.trials and not (fits and (first or clock() + s.cost <= share_end)):
                    break
                s.step()
                ran, first = ran + 1, False
        rungs.append(names)
        if warned and len(rungs) == 1:
            floor([])
        if not ran:
            break
        racing = survivors(active)
    return rungs
