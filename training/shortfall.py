"""What a budgeted run drops after its search when the time left cannot pay for every step."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training import budget
from training.prepare import Prepared, Progress
from training.search import FamilyResult

if TYPE_CHECKING:
    from training.selection import Selection

DROP_ORDER = ("baseline", "ensemble", "calibration")
"""The optional steps after the search, in the order they are dropped while the estimate of what
is left to do exceeds the budget left: the realised-performance baseline's copies
(`publish.baseline_folds`: monitoring then judges against the test score alone), the ensemble
step (its other members' fits, a stack's cross-validation, the ensemble's final fit and refit),
the calibration's cross-validated fits (`calibration: auto` only: the model is then published
uncalibrated, as `calibration: none` would). What is never dropped: the final fit, the test
assessment, the refit on every row (`publish.refit_all`), the reference sample."""
CALIBRATIONS_TRIED = 2
"""Calibrated fits `calibration: auto` tries on the training rows (sigmoid and isotonic)."""


@dataclass(frozen=True)
class AfterCosts:
    """Estimated seconds of the steps after the search: what always runs, and each optional
    step (DROP_ORDER's names; 0 or absent: not run whatever the budget)."""

    required: float
    optional: Mapping[str, float]


def plan(left: float, costs: AfterCosts) -> list[dict[str, Any]]:
    """The steps to skip: DROP_ORDER's, one after another, while what always runs plus the
    optional steps still kept is estimated above `left` seconds; each with its estimate and why.
    Nothing is dropped that would not run anyway, and nothing once the rest fits."""
    kept = {k: v for k, v in costs.optional.items() if v > 0}
    skipped: list[dict[str, Any]] = []
    for step in DROP_ORDER:
        total = costs.required + sum(kept.values())
        if total <= left:
            break
        if step not in kept:
            continue
        seconds = kept.pop(step)
        skipped.append(
            {
                "step": step,
                "estimated_seconds": round(seconds, 1),
                "reason": f"the steps after the search were estimated at {total:.0f}s with "
                f"{max(left, 0):.0f}s of search.budget_seconds left",
            }
        )
    return skipped


def costs(
    prepared: Prepared,
    results: Sequence[FamilyResult],
    family: str,
    folds: int,
    after: float,
    speed: float = 1.0,
) -> AfterCosts:
    """The steps after the search in seconds, `family` chosen among `results` (searched on
    `folds` folds), from each family's measured CV trial: its fit seconds a row times the rows
    of each fit (`budget.fit_seconds`; a multi-class model's trees per class are in that
    measure), its predict seconds a row times the rows the assessment predicts
    (`budget.predict_seconds`, a pass's overhead at `speed` aside), and `after` (the passes'
    overhead). A classifier's calibration multiplies its fits (`budget.CALIBRATED_FIT`); an
    ensemble's members each count, in its fits and in its predictions (its assessment predicts
    through each)."""
    config, splits = prepared.config, prepared.splits
    n_train, n_val = len(splits.x_train), len(splits.x_val)
    rows = n_train + n_val + len(splits.x_test)
    train, full = n_train / rows, (n_train + n_val) / rows
    refit = 1.0 if config.publish.refit_all else 0.0
    by_family = {r.family: budget.fit_seconds(r, folds, rows) for r in results}
    test_rows, features = len(splits.x_test), len(prepared.features)

    def predicted(families: Sequence[str]) -> float:
        chosen = [r for r in results if r.family in families]
        return budget.predict_seconds(chosen, test_rows, features, speed)

    one = by_family.get(family, 0.0)
    calibrates = prepared.task == "classification" and family != "svm"
    auto = calibrates and config.calibration == "auto"
    calibrates = calibrates and config.calibration != "none"
    calibrated = budget.CALIBRATED_FIT
    each = calibrated if calibrates else 1.0
    # a calibrated model predicts through each fold's copy (budget.CALIBRATED_PREDICTS)
    through = budget.CALIBRATED_PREDICTS - 1.0 if calibrates else 0.0
    explicit = calibrated * train if calibrates and config.calibration != "auto" else 0.0
    required = (
        after
        + predicted([family]) * (1.0 + (0.0 if auto else through))
        + one * (train + explicit + (1.0 if auto else each) * (full + refit))
    )
    calibration = one * (
        CALIBRATIONS_TRIED * calibrated * train + (each - 1) * (full + refit)
    ) + through * predicted([family])
    members = _members(prepared, results)
    group = sum(by_family.get(f, 0.0) for f in members)
    # the chosen family's fit on the training rows is reused; the other members are fitted
    others = [f for f in members if f != family]
    stack = config.split.cv_folds * train * group if _stacks(prepared) else 0.0
    ensemble = (
        sum(by_family.get(f, 0.0) for f in others) * (1 + CALIBRATIONS_TRIED * calibrated) * train
        + stack
        + each * group * (full + refit)
        # the assessment and the reference sample predict through every member (digits, 3
        # members: 34.8 CPU s against 10.4 for one model): each one's passes and predictions
        + after * (len(members) - 1)
        + predicted(others) * (1.0 + through)
        if members
        else 0.0
    )
    copies = budget.baseline_copies(
        config.publish.baseline_folds,
        n_train + n_val,
        mitigated=config.fairness.mitigation != "none",
        ordered=bool(config.time_column),
    )
    published = group if members else one
    baseline = copies * (copies - 1) / max(copies, 1) * full * each * published
    optional = {"baseline": baseline, "ensemble": ensemble}
    if auto:
        optional["calibration"] = calibration
    return AfterCosts(required, optional)


def _members(prepared: Prepared, results: Sequence[FamilyResult]) -> list[str]:
    """The families an ensemble would combine (`budget.leading`: none when the ensemble step
    will not run)."""
    cfg = prepared.config.ensemble
    if not cfg.enabled or prepared.config.fairness.mitigation != "none":
        return []
    ranked = budget.leading(results, cfg.size)
    return [r.family for r in ranked] if len(ranked) >= 2 else []


def _stacks(prepared: Prepared) -> bool:
    config = prepared.config
    return "stacking" in config.ensemble.methods and not config.time_column


def decide(
    prepared: Prepared,
    selection: Selection,
    started: float,
    say: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """The optional steps a budgeted run skips (`plan`, on the budget left from `started` on
    `clock`), said and recorded in the manifest's `model.search.budget.shortfall.skipped`; none
    without a budget."""
    given = prepared.config.search.budget_seconds
    spent = selection.spent
    if not given or spent is None:
        return []
    after = float(spent.get("reserved_besides_fits_seconds") or 0.0)
    speed = float(spent.get("calibration_slowdown") or 1.0)
    left = started + given - clock()
    estimate = costs(prepared, selection.results, selection.family, selection.folds, after, speed)
    # the baseline, dropped first, gets what is left last (`keep_baseline`)
    optional = {k: v for k, v in estimate.optional.items() if k != "baseline"}
    return _record(spent, plan(left, AfterCosts(estimate.required, optional)), say)


def _record(
    spent: dict[str, Any], skipped: list[dict[str, Any]], say: Progress
) -> list[dict[str, Any]]:
    for s in skipped:
        about = f"about {s['estimated_seconds']:.0f}s; {s['reason']}"
        say(f"skipped for the budget: {s['step']} ({about})")
    spent.setdefault("shortfall", {}).setdefault("skipped", []).extend(skipped)
    return skipped


def keep_baseline(
    prepared: Prepared,
    selection: Selection,
    members: Sequence[str],
    calibrated: bool,
    started: float,
    say: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Whether the realised-performance baseline's copies run: the first optional step dropped,
    so decided last, on the model as it came out (its `members`: the chosen family or a
    published ensemble's; `calibrated`: each fit counted as budget.CALIBRATED_FIT, each
    prediction as budget.CALIBRATED_PREDICTS) and what is left then, the refit on every row still
    to pay for. The copies cost their fits and their predictions of the rows each held out (every
    train and validation row once, at the members' measured seconds a row). Always without a
    budget; a skip is said and recorded as `decide`'s."""
    given = prepared.config.search.budget_seconds
    spent = selection.spent
    if not given or spent is None:
        return True
    config, splits = prepared.config, prepared.splits
    n_fit = len(splits.x_train) + len(splits.x_val)
    rows = n_fit + len(splits.x_test)
    by_family = {r.family: budget.fit_seconds(r, selection.folds, rows) for r in selection.results}
    each = budget.CALIBRATED_FIT if calibrated else 1.0
    one = each * sum(by_family.get(f, 0.0) for f in members)  # a calibrated fit on every row
    copies = budget.baseline_copies(
        config.publish.baseline_folds,
        n_fit,
        mitigated=config.fairness.mitigation != "none",
        ordered=bool(config.time_column),
    )
    # the copies predict their held-out folds: every train and validation row once
    speed = float(spent.get("calibration_slowdown") or 1.0)
    published = [r for r in selection.results if r.family in members]
    per_row = sum(budget.rates(r, selection.folds, speed).predict for r in published)
    through = budget.CALIBRATED_PREDICTS if calibrated else 1.0
    held_out = n_fit * per_row * through if copies else 0.0
    baseline = copies * (copies - 1) / max(copies, 1) * n_fit / rows * one + held_out
    refit = one if config.publish.refit_all else 0.0
    left = started + given - clock()
    return not _record(spent, plan(left, AfterCosts(refit, {"baseline": baseline})), say)
