"""`objective.metric` f1, precision, recall and brier on a binary target (issue 34): the search
scores the decision's positive class of the labels as held (text), for string, integer and
boolean labels; scikit-learn's own scorers took 1 as the positive class and every fit failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, f1_score, recall_score

from core.registry import Registry
from tests.conftest import fast_config
from training.search import PositiveScorer, objective_scoring
from training.train import run_training

LABELS = {
    "str": {0: "malignant", 1: "benign"},
    "int": {0: 0, 1: 1},
    "bool": {0: False, 1: True},
}


def cancer(labels: str) -> pd.DataFrame:
    raw = datasets.load_breast_cancer(as_frame=True)
    frame = raw.frame[["mean radius", "mean texture", "worst area", "worst concavity"]].copy()
    frame["target"] = raw.target.map(LABELS[labels])
    return frame


@pytest.mark.parametrize(
    ("metric", "labels"),
    [("f1", "str"), ("precision", "int"), ("recall", "bool"), ("brier", "str")],
)  # each metric and each label type once: every one of them failed every fit
def test_a_binary_target_trains_on_every_metric_of_a_positive_class(
    tmp_path: Path, metric: str, labels: str
) -> None:
    path = tmp_path / "cancer.csv"
    cancer(labels).to_csv(path, index=False)
    cfg = fast_config(
        name="c", data=str(path), target="target", models=["linear"],
        search={"method": "random", "trials": 2, "budget_seconds": 30, "grow_rows": False},
        objective={"metric": metric},
    )  # fmt: skip
    m = run_training(cfg, Registry(tmp_path / "r")).manifest
    cv = m["metrics"]["cv"]
    assert np.isfinite(cv["score"]) and m["model"]["search"]["scoring"] == cv["scoring"]
    if metric == "brier":
        assert cv["scoring"] == "neg_brier_score" and -0.1 < cv["score"] < 0
    else:
        assert cv["scoring"] == metric and cv["score"] > 0.85
    assert np.isfinite(m["metrics"]["test"][metric])


def test_the_scorer_is_of_the_positive_class_it_is_given() -> None:
    x, y = datasets.load_breast_cancer(return_X_y=True)
    text = np.where(y == 1, "benign", "malignant").astype(object)
    model = LogisticRegression(max_iter=5000).fit(x, text)
    predicted = model.predict(x)
    for positive in ("benign", "malignant"):
        got = objective_scoring("recall", positive)
        assert isinstance(got, PositiveScorer) and str(got) == "recall"
        assert got(model, x, text) == recall_score(text, predicted, pos_label=positive)
    f1 = objective_scoring("f1", "malignant")
    assert f1(model, x, text) == f1_score(text, predicted, pos_label="malignant")  # type: ignore[operator]
    brier = objective_scoring("neg_brier_score", "benign")
    proba = model.predict_proba(x)[:, list(model.classes_).index("benign")]
    want = -brier_score_loss(text == "benign", proba)
    assert brier(model, x, text) == pytest.approx(want)  # type: ignore[operator]
    # scoring strings that need no positive class stay scikit-learn's
    assert objective_scoring("roc_auc", "benign") == "roc_auc"
    assert objective_scoring("f1_macro", None) == "f1_macro"
