"""Small, fast, deterministic data sets for tests (a few hundred rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def classification_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Target 'yes'/'no' depends on x1, x2 and colour; group is a sensitive attribute."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 1, n)
    x2 = rng.uniform(0, 10, n)
    color = rng.choice(["red", "green", "blue"], n)
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    logit = 1.5 * x1 + 0.3 * (x2 - 5) + np.where(color == "red", 1.0, -0.5)
    y = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    x2_missing = x2.copy()
    x2_missing[rng.uniform(size=n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2_missing,
            "color": color,
            "group": group,
            "when": pd.date_range("2024-01-01", periods=n, freq="h"),
            "label": y,
        }
    )


def regression_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, n)
    b = rng.normal(5, 2, n)
    kind = rng.choice(["p", "q"], n)
    y = 3 * a - 0.5 * b + np.where(kind == "p", 2.0, 0.0) + rng.normal(0, 0.3, n)
    return pd.DataFrame({"a": a, "b": b, "kind": kind, "y": y})
