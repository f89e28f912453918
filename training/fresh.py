"""Re-score each family's top configuration and its default on fresh CV folds (another split seed,
the same folds for both) so that the noise rule compares scores not picked as the best of many."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sklearn.pipeline import Pipeline

from training.growing import Sample
from training.search import FamilyResult, Scoring, Trial, evaluate_trial, make_cv

SEED_OFFSET = 1
"""The fresh folds are split with the run's seed plus this (the search's folds with the seed)."""


def fresh_cv(task: str, folds: int, ordered: bool, seed: int, keep_copies: bool) -> Any:
    """The fresh folds' splitter: the search's, split with seed + SEED_OFFSET. Time-ordered
    windows do not depend on a seed: one more fold moves every window's boundaries."""
    n = folds + 1 if ordered else folds
    return make_cv(task, n, ordered, seed + SEED_OFFSET, keep_copies)


def to_rescore(result: FamilyResult) -> list[Trial]:
    """The trials re-scored for a family: its top one and its default (once when the same)."""
    top, default = result.top, result.default_trial
    if top is None:
        return []
    return [top] if default is None or default is top else [top, default]


def seconds(results: Sequence[FamilyResult]) -> float:
    """Seconds the re-scoring takes: the trials it repeats, at their measured seconds."""
    return float(sum(t.seconds for r in results for t in to_rescore(r)))


def rescore(
    results: Sequence[FamilyResult],
    builds: dict[str, Callable[[dict[str, Any]], Pipeline]],
    sample: Sample,
    *,
    cv: Any,
    scoring: Scoring,
    deadline: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Cross-validate each family's top and default configurations again, on the rows they were
    scored on, by `cv` (fresh folds), best family first, until `deadline`; the new trials go to
    `result.rescored` (FamilyResult.best and selection.pick then compare them). Returns how many
    were re-scored."""
    done = 0
    ranked = sorted(results, key=lambda r: -(r.top.score if r.top else float("-inf")))
    for r in ranked:
        for t in to_rescore(r):
            if clock() >= deadline:
                say(f"fresh folds: out of time after {done} re-scored; the search's folds decide")
                return done
            x, y, fit_params = sample(t.rows, r.family)
            new = evaluate_trial(builds[r.family], t.params, x, y, cv, scoring, fit_params)
            new.default = t.default
            r.rescored.append((t, new))
            done += 1
            kind = "default" if t.default else "top"
            say(f"fresh folds {r.family} {kind}: cv {scoring}={new.score:.4f} (was {t.score:.4f})")
    return done
