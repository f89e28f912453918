"""Search on more rows when time allows: the finalists re-scored by the same CV on more rows."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from training.search import FamilyResult, Scoring, Trial, evaluate_trial

GROW_FACTOR = 2
"""Each rung has twice the rows of the one before (the last one every training row)."""

Sample = Callable[[int, str], tuple[pd.DataFrame, pd.Series, dict[str, Any] | None]]
"""(rows, family) -> the search's features, labels and fit parameters on that many rows."""


def sample_rows(
    total: int, first: int, rows: int, ordered: bool, seed: int
) -> np.ndarray[Any, Any]:
    """Positions (sorted) of the `rows` training rows a search on that many rows uses: the most
    recent ones when `ordered`; otherwise the seeded sample of `first` rows the search starts on,
    grown by further seeded rows, so that every sample holds the smaller ones."""
    if rows >= total:
        return np.arange(total)
    if ordered:
        return np.arange(total - rows, total)
    base = np.random.default_rng(seed).choice(total, first, replace=False)
    if rows <= first:
        return np.sort(base[:rows])
    rest = np.setdiff1d(np.arange(total), base)
    extra = np.random.default_rng(seed + 1).permutation(rest)[: rows - first]
    return np.sort(np.concatenate([base, extra]))


def rungs(start: int, total: int) -> list[int]:
    """Rows of each rung after the search's `start` rows: doubling, the last one `total`."""
    out: list[int] = []
    rows = start
    while rows < total:
        rows = min(rows * GROW_FACTOR, total)
        out.append(rows)
    return out


def finalists(results: list[FamilyResult], per_family: int) -> list[tuple[FamilyResult, Trial]]:
    """The best `per_family` distinct configurations of each family, on the most rows it reached
    (never pruned or failed trials), and its untuned default when it is not one of them (a tuned
    configuration replaces it only beyond noise, judged on the same rows)."""
    out: list[tuple[FamilyResult, Trial]] = []
    for r in results:
        most = max((t.rows for t in r.trials), default=0)
        ok = [t for t in r.trials if np.isfinite(t.score) and not t.pruned and t.rows == most]
        seen: set[str] = set()
        for t in sorted(ok, key=lambda t: -t.score):
            key = repr(sorted(t.params.items()))
            if key not in seen and (len(seen) < per_family or (t.default and t is r.default_trial)):
                seen.add(key)
                out.append((r, t))
    return out


def grow(
    results: list[FamilyResult],
    builds: dict[str, Callable[[dict[str, Any]], Pipeline]],
    sample: Sample,
    *,
    start: int,
    total: int,
    per_family: int,
    deadline: float,
    cv: Any,
    scoring: Scoring,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> list[int]:
    """Re-score the finalists by the same CV on twice the rows, again and again up to `total`,
    while the cost measured so far says the next rung ends before `deadline`. A rung counts only
    when every finalist completed it (its trials join the families' results, so each family's
    `best` is then on the most rows); an unfinished or failed rung is dropped. Returns the rows
    of every rung the finalists reached, `start` first."""
    reached = [start]
    chosen = finalists(results, per_family)
    if not chosen:
        return reached
    costs = [t.seconds for _, t in chosen]
    exponent = 1.0  # cost ~ rows**exponent; measured once two rungs are known
    for rows in rungs(start, total):
        cur = reached[-1]
        need = sum(costs) * (rows / cur) ** exponent
        left = deadline - clock()
        if need > left:
            say(
                f"search on more rows: stays at {cur} rows (the {rows}-row rung needs about "
                f"{need:.0f}s, {max(left, 0):.0f}s of the budget left)"
            )
            break
        say(f"search on more rows: {len(chosen)} finalists on {rows} rows (about {need:.0f}s)")
        trials: list[Trial] = []
        for r, best in chosen:
            if trials and clock() >= deadline:
                break
            x, y, fit_params = sample(rows, r.family)
            trial = evaluate_trial(builds[r.family], best.params, x, y, cv, scoring, fit_params)
            trial.default = best.default
            say(f"search {r.family} on {rows} rows: cv {scoring}={trial.score:.4f}")
            trials.append(trial)
        if len(trials) < len(chosen) or not all(np.isfinite(t.score) for t in trials):
            say(f"search on more rows: the {rows}-row rung did not finish; scores stay on {cur}")
            break
        for (r, _), trial in zip(chosen, trials, strict=True):
            r.trials.append(trial)
        new = [t.seconds for t in trials]
        if sum(costs) > 0 and sum(new) > 0:
            exponent = min(2.0, max(1.0, math.log(sum(new) / sum(costs)) / math.log(rows / cur)))
        costs = new
        chosen = [(r, t) for (r, _), t in zip(chosen, trials, strict=True)]
        reached.append(rows)
    return reached
