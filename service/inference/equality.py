"""The load-time equality checks: a fast path is used only where it answers as scikit-learn."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from core.decision import decide

Matrix = np.ndarray[Any, Any]
Decide = Callable[[Matrix], Matrix]


def once(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`fn` remembering its last argument's answer (or error), by identity."""
    last: list[Any] = [None, None, None]  # argument, answer, error

    def call(x: Any) -> Any:
        if last[0] is not x:
            try:
                last[1:] = [fn(x), None]
            except Exception as exc:
                last[1:] = [None, exc]
            last[0] = x
        if last[2] is not None:
            raise last[2]
        return last[1]

    return call


def same_rows(
    mine: Callable[[Any], Any],
    theirs: Callable[[Any], Any],
    x: Matrix,
    decided: Decide = decide,
) -> bool:
    """`mine` answers as `theirs` on the rows of `x`: all at once, or, when the estimator
    refuses the batch (a row scaled past the float range), row by row, each answered alike
    or refused by both. Alike: the same values (see `same`) and, for probabilities, the
    same predicted class on every row, as `decided` (the version's own decision: its
    threshold, when it has one) turns them into classes. Each side answers each batch or
    row once (a scikit-learn forest's answer on the check rows is most of a compiled load's
    time)."""
    mine, theirs = once(mine), once(theirs)
    try:
        theirs(x)
    except Exception:
        return all(_same_row(mine, theirs, r, decided) for r in x[:, None])
    return _same_row(mine, theirs, x, decided)


def _same_row(
    mine: Callable[[Any], Any], theirs: Callable[[Any], Any], row: Matrix, decided: Decide
) -> bool:
    """One row (or a batch the estimator answers) answered alike, or refused by both."""
    if not same(partial(mine, row), partial(theirs, row)):
        return False
    try:
        return same_decisions(mine, theirs, row, decided)
    except Exception:  # refused by both
        return True


def same_decisions(
    mine: Callable[[Any], Any], theirs: Callable[[Any], Any], x: Matrix, decided: Decide
) -> bool:
    """The same predicted class on every row (regression values: nothing to decide)."""
    want = np.asarray(theirs(x), dtype=float)
    if want.ndim != 2:
        return True
    return bool(np.array_equal(decided(np.asarray(mine(x), dtype=float)), decided(want)))


def same(fast: Callable[[], Any], slow: Callable[[], Any]) -> bool:
    """Equal to 1e-9 (and 1e-12 relative, for outputs near the float limits), NaN where
    NaN, same shape; or both raise."""
    try:
        want = np.asarray(slow(), dtype=float)
    except Exception:
        try:
            fast()
        except Exception:
            return True
        return False
    try:
        got = np.asarray(fast(), dtype=float)
        if got.shape != want.shape:
            return False
        return bool(np.allclose(got, want, rtol=1e-12, atol=1e-9, equal_nan=True))
    except Exception:
        return False
