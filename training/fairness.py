"""Fairness per sensitive attribute (fairlearn) and re-weighting as an optional mitigation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def reweighting(groups: pd.Series, y: pd.Series) -> np.ndarray[Any, Any]:
    """Kamiran-Calders weights: (group, label) cells weigh as if the two were independent."""
    g = groups.astype(str).fillna("__missing__").to_numpy()
    yv = y.astype(str).to_numpy()
    frame = pd.DataFrame({"g": g, "y": yv})
    n = len(frame)
    p_g = frame["g"].map(frame["g"].value_counts() / n)
    p_y = frame["y"].map(frame["y"].value_counts() / n)
    p_gy = frame.groupby(["g", "y"])["g"].transform("size") / n
    return (p_g * p_y / p_gy).to_numpy(dtype=float)


def fairness_report(
    sensitive: pd.DataFrame,
    y_true: pd.Series,
    y_pred: np.ndarray[Any, Any],
    task: str,
    positive: Any = None,
) -> dict[str, Any]:
    """Per attribute: metrics per group and the largest gaps between groups."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equal_opportunity_difference,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import mean_absolute_error

    out: dict[str, Any] = {}
    for col in sensitive.columns:
        groups = sensitive[col].astype(str).fillna("__missing__").to_numpy()
        if task == "classification" and positive is not None:
            yt = (np.asarray(y_true, dtype=object) == positive).astype(int)
            yp = (np.asarray(y_pred, dtype=object) == positive).astype(int)
            frame = MetricFrame(
                metrics={
                    "selection_rate": selection_rate,
                    "true_positive_rate": true_positive_rate,
                    "count": lambda a, _b: len(a),
                },
                y_true=yt,
                y_pred=yp,
                sensitive_features=groups,
            )
            out[col] = {
                "by_group": frame.by_group.to_dict(orient="index"),
                "demographic_parity_difference": float(
                    demographic_parity_difference(yt, yp, sensitive_features=groups)
                ),
                "equal_opportunity_difference": float(
                    equal_opportunity_difference(yt, yp, sensitive_features=groups)
                ),
            }
        else:
            frame = MetricFrame(
                metrics={"mae": mean_absolute_error},
                y_true=y_true,
                y_pred=y_pred,
                sensitive_features=groups,
            )
            out[col] = {
                "by_group": frame.by_group.to_dict(orient="index"),
                "mae_difference": float(frame.difference()["mae"]),
            }
    return out
