"""Monitoring decides classes by each version's threshold (issue 19): realised and estimated
performance of the production version, the shadow's and production's scores side by side."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from monitoring.runner import _performance, _shadow_report
from monitoring.window import ShadowRow, Window


def _window() -> Window:
    proba = np.array([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.75, 0.25]])
    labels = ["yes", "yes", "no", "yes", "no"]
    return Window(
        inputs=pd.DataFrame({"x": range(5)}),
        predictions=["yes", "yes", "no", "yes", "yes"],  # as served at threshold 0.25
        probabilities=proba,
        labels=labels,  # type: ignore[arg-type]
        start=0.0,
        end=1.0,
        total_rows=5,
    )


def test_realised_and_estimated_performance_use_the_threshold() -> None:
    window = _window()
    argmax = _performance(window, pd.DataFrame(), ["no", "yes"])
    at = _performance(window, pd.DataFrame(), ["no", "yes"], (0.25, 1))
    assert argmax["realised"] is not None and at["realised"] is not None
    assert argmax["realised"]["recall"] == 1 / 3  # only the 0.8 row is "yes" by argmax
    assert at["realised"]["recall"] == 1.0  # 0.3, 0.4, 0.8 >= 0.25
    assert at["realised"]["precision"] == 0.75  # the 0.25 row is a false positive
    est = at["estimated"]
    assert est is not None
    p = np.array([0.3, 0.4, 0.1, 0.8, 0.25])
    decided = p >= 0.25
    tp, fp, fn = p[decided].sum(), (1 - p[decided]).sum(), p[~decided].sum()
    assert abs(est["precision"] - tp / (tp + fp)) < 1e-12
    assert abs(est["recall"] - tp / (tp + fn)) < 1e-12
    assert abs(est["accuracy"] - np.mean(np.where(decided, p, 1 - p))) < 1e-12
    assert argmax["estimated"] is not None
    assert argmax["estimated"]["recall"] < est["recall"]


def test_shadow_and_production_are_each_judged_by_their_own_threshold() -> None:
    rows: list[ShadowRow] = []
    for p, label in ((0.3, "yes"), (0.4, "yes"), (0.1, "no"), (0.8, "yes")):
        probs = json.dumps({"no": 1 - p, "yes": p})
        rows.append(
            {
                "shadow_version": 2,
                "shadow_prediction": json.dumps("yes" if p >= 0.25 else "no"),
                "shadow_probabilities": probs,
                "production_version": 1,
                "production_prediction": json.dumps("yes" if p >= 0.5 else "no"),
                "production_probabilities": probs,
                "label": json.dumps(label),
            }
        )
    decisions = {1: (None, 1), 2: (0.25, 1)}
    report = _shadow_report(rows, ["no", "yes"], lambda v: decisions[v])
    assert report["production_realised"]["recall"] == 1 / 3
    assert report["shadow_realised"]["recall"] == 1.0
    assert report["agreement"] == 0.5


def test_evidently_report_gets_the_served_classes_and_the_threshold() -> None:
    from monitoring.drift import PREDICTION, TARGET, Labelled, _performance_section

    rng = np.random.default_rng(0)
    p = rng.uniform(size=300)
    truth = np.where(rng.uniform(size=300) < p, "late", "on_time")
    served = np.where(p >= 0.3, "late", "on_time")
    frame = pd.DataFrame({TARGET: truth, PREDICTION: served, "late": p, "on_time": 1 - p})
    labelled = Labelled(
        "classification",
        frame,
        frame.copy(),
        ["late", "on_time"],
        True,
        positive="late",
        threshold=0.3,
    )
    _title, snapshot = _performance_section(labelled)
    values = {
        m["metric_name"] if "metric_name" in m else str(m.get("config", {}).get("type")): m["value"]
        for m in snapshot.dict()["metrics"]
    }
    recall = [v for k, v in values.items() if k.startswith("Recall")]
    expected = float(((served == "late") & (truth == "late")).sum() / (truth == "late").sum())
    assert recall and abs(float(recall[0]) - expected) < 1e-9, values
