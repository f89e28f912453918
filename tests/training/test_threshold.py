"""Decision thresholds (issue 19): chosen on validation, recorded, served and judged alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import TunedThresholdClassifierCV

from core.decision import decide
from core.decision import of as decided_by
from core.metrics import classification_metrics
from core.registry import Registry
from service.inference.model import LoadedModel
from tests.conftest import fast_config
from training.config import Decision as DecisionConfig
from training.errors import TrainingError
from training.importer import import_pipeline
from training.threshold import GRID, choose, positive_index
from training.train import run_training

# -- decide -----------------------------------------------------------------------------------


def test_decide_argmax_without_threshold_first_on_ties() -> None:
    proba = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    assert decide(proba).tolist() == [0, 1, 0]
    three = np.array([[0.3, 0.3, 0.4], [0.4, 0.4, 0.2]])
    assert decide(three, 0.1).tolist() == [2, 0]  # a threshold never applies to 3+ classes


def test_decide_threshold_applies_to_the_positive_column() -> None:
    proba = np.array([[0.75, 0.25], [0.8, 0.2], [0.1, 0.9]])
    assert decide(proba, 0.25).tolist() == [1, 0, 1]  # >= threshold is positive
    assert decide(proba, 0.7, positive=0).tolist() == [0, 0, 1]


def test_manifest_decision_of_older_manifests_is_argmax() -> None:
    assert decided_by(None, ["no", "yes"]) == (None, 1)
    assert decided_by({"threshold": 0.3, "positive_class": "no"}, ["no", "yes"]) == (0.3, 0)
    assert decided_by({"threshold": 0.3, "positive_class": True}, [False, True]) == (0.3, 1)


# -- choosing -----------------------------------------------------------------------------------


def _scores(n: int = 3000, share: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced labels (0/1) and calibrated-looking probabilities of class 1."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < share).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.6 * y - 2.0)))
    return y, p


class _Prefit(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose predict_proba returns the given column (X is the score)."""

    def __init__(self) -> None:
        self.classes_ = np.array([0, 1])

    def fit(self, X: Any, y: Any) -> _Prefit:
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        p = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def test_f1_threshold_is_scikit_learns_tuned_threshold() -> None:
    y, p = _scores()
    proba = np.column_stack([1 - p, p])
    chosen = choose(DecisionConfig(objective="f1"), [0, 1], "integer", y, y, proba)
    tuned = TunedThresholdClassifierCV(
        _Prefit(), scoring="f1", cv="prefit", refit=False, thresholds=GRID
    ).fit(p[:, None], y)
    assert chosen.threshold == pytest.approx(float(tuned.best_threshold_))
    val = chosen.record["validation"]
    assert val["threshold"]["f1"] == pytest.approx(tuned.best_score_, abs=1e-4)
    assert val["threshold"]["f1"] > val["argmax"]["f1"]


def test_auto_tunes_imbalanced_and_keeps_argmax_when_balanced() -> None:
    y, p = _scores(share=0.2)
    proba = np.column_stack([1 - p, p])
    imbalanced = choose(DecisionConfig(), [0, 1], "integer", y, y, proba)
    assert imbalanced.record["objective"] == "f1" and imbalanced.threshold is not None
    assert "below decision.imbalance_share 35%" in imbalanced.record["why"]
    yb, pb = _scores(share=0.5)
    balanced = choose(DecisionConfig(), [0, 1], "integer", yb, yb, np.column_stack([1 - pb, pb]))
    assert balanced.threshold is None and balanced.record["objective"] == "argmax"


def test_precision_and_recall_targets_and_cost() -> None:
    y, p = _scores()
    proba = np.column_stack([1 - p, p])
    for objective, target in (("precision_at", 0.5), ("recall_at", 0.8)):
        cfg = DecisionConfig(objective=objective, target=target)
        chosen = choose(cfg, [0, 1], "integer", y, y, proba)
        assert chosen.threshold is not None
        at = chosen.record["validation"]["threshold"]
        assert at["precision" if objective == "precision_at" else "recall"] >= target
        assert chosen.record["met"] is True
    cheap_fn = choose(DecisionConfig(objective="cost", costs={"fp": 1, "fn": 1}), [0, 1],
                      "integer", y, y, proba)  # fmt: skip
    dear_fn = choose(DecisionConfig(objective="cost", costs={"fp": 1, "fn": 5}), [0, 1],
                     "integer", y, y, proba)  # fmt: skip
    assert dear_fn.threshold is not None and cheap_fn.threshold is not None
    assert dear_fn.threshold < cheap_fn.threshold  # missing a positive costs more: say yes sooner


def test_unreachable_precision_falls_back_to_argmax_and_says_so() -> None:
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=500) < 0.2).astype(int)
    p = rng.uniform(0, 1, 500)  # no signal: precision stays near 0.2 at every threshold
    cfg = DecisionConfig(objective="precision_at", target=0.99)
    chosen = choose(cfg, [0, 1], "integer", y, y, np.column_stack([1 - p, p]))
    assert chosen.threshold is None
    assert chosen.record["met"] is False
    assert "no threshold reaches validation precision >= 0.99" in chosen.record["why"]
    assert "fallback: argmax" in chosen.record["why"]


def test_positive_class_rules() -> None:
    cfg = DecisionConfig()
    assert positive_index(cfg, [0, 1], [0, 0, 0, 1], "integer") == 1
    assert positive_index(cfg, [False, True], [True, True, False], "boolean") == 1  # True
    # strings: the minority class of the training labels
    assert positive_index(cfg, ["late", "on_time"], ["on_time"] * 3 + ["late"], "string") == 0
    assert positive_index(cfg, ["late", "on_time"], ["late"] * 3 + ["on_time"], "string") == 1
    given = DecisionConfig(positive_label="on_time")
    assert positive_index(given, ["late", "on_time"], ["on_time"] * 3, "string") == 1
    with pytest.raises(ValueError, match=r"decision.positive_label: 'maybe' is not one"):
        positive_index(DecisionConfig(positive_label="maybe"), ["a", "b"], ["a"], "string")


@pytest.mark.parametrize(
    ("decision", "field"),
    [
        ({"objective": "precision_at"}, "decision.target"),
        ({"objective": "recall_at", "target": 1.5}, "decision.target"),
        ({"objective": "f1x"}, "decision.objective"),
        ({"costs": {"fp": -1}}, "decision.costs.fp"),
        ({"costs": {"fp": 0, "fn": 0}}, "decision.costs"),
        ({"imbalance_share": 0.9}, "decision.imbalance_share"),
    ],
)
def test_bad_decision_config_names_the_field(decision: dict[str, Any], field: str) -> None:
    from training.config import load_config

    with pytest.raises(TrainingError) as err:
        load_config(None, {"decision": decision})
    assert field in str(err.value)


def test_metrics_at_threshold_use_the_positive_class() -> None:
    y = ["a", "b", "b", "a"]
    proba = np.array([[0.6, 0.4], [0.3, 0.7], [0.55, 0.45], [0.9, 0.1]])
    plain = classification_metrics(y, proba, ["a", "b"])
    assert plain["recall"] == 0.5  # argmax: only the second row is "b"
    low = classification_metrics(y, proba, ["a", "b"], threshold=0.4)
    assert low["recall"] == 1.0 and low["precision"] == pytest.approx(2 / 3)
    as_a = classification_metrics(y, proba, ["a", "b"], threshold=0.6, positive=0)
    assert as_a["recall"] == 1.0 and as_a["precision"] == 1.0
    assert low["roc_auc"] == plain["roc_auc"]  # ranking metrics do not depend on it


# -- trained, served ------------------------------------------------------------------------------


def _imbalanced(kind: str, n: int = 900, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 1, n)
    x2 = rng.normal(0, 1, n)
    color = rng.choice(["red", "green", "blue"], n)
    logit = 1.8 * x1 + 0.8 * x2 + np.where(color == "red", 0.7, 0.0) - 2.2
    hit = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    label: Any = {
        "string": np.where(hit, "late", "on_time"),
        "integer": hit.astype(int),
        "boolean": hit,
    }[kind]
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "label": label})


@pytest.mark.parametrize("kind", ["string", "integer", "boolean"])
def test_trained_binary_serves_its_threshold_on_every_path(tmp_path: Path, kind: str) -> None:
    frame = _imbalanced(kind)
    data = tmp_path / "data.parquet"
    frame.to_parquet(data)
    registry = Registry(tmp_path / "reg")
    cfg = fast_config(name="thr", data=str(data), target="label", models=["linear", "hgb"])
    result = run_training(cfg, registry)
    manifest = registry.manifest("thr", result.version or 0)
    assert manifest.schema_version == 3
    decision = manifest.decision
    assert decision is not None and decision.objective == "f1"
    assert decision.threshold is not None and 0 < decision.threshold < 0.5
    positive = {"string": "late", "integer": 1, "boolean": True}[kind]
    assert decision.positive_class == positive and type(decision.positive_class) is type(positive)
    card = (registry.path("thr", result.version or 0) / "model_card.md").read_text()
    assert "## Decision" in card and f"**{decision.threshold:g}**" in card

    fast = LoadedModel.load(registry, "thr", result.version or 0)
    slow = LoadedModel.load(registry, "thr", result.version or 0, fast_path=False)
    rows = frame.drop(columns="label").head(300)
    columns = {c: rows[c].tolist() for c in rows}
    a, b = fast.predict_columns(columns), slow.predict_columns(columns)
    assert a.predictions == b.predictions
    assert a.probabilities == b.probabilities
    assert a.probabilities is not None
    pos_key = str(positive)
    p = np.array([row[pos_key] for row in a.probabilities])
    expected = [positive if v >= decision.threshold else None for v in p]
    got = [v if v == positive else None for v in a.predictions]
    assert got == expected
    assert all(type(v) is type(positive) for v in a.predictions)
    # the threshold changed answers that argmax would have given otherwise
    assert any(decision.threshold <= v < 0.5 for v in p)
    # the reference sample is decided the same way (monitoring compares it with the log)
    ref = pd.read_parquet(registry.path("thr", result.version or 0) / "reference.parquet")
    ref_p = ref[f"sw_proba__{pos_key}"].to_numpy()
    assert ((ref["sw_prediction"] == pos_key).to_numpy() == (ref_p >= decision.threshold)).all()


def test_multiclass_and_regression_have_no_threshold(tmp_path: Path) -> None:
    from tests.data import regression_frame

    rng = np.random.default_rng(0)
    frame = _imbalanced("string")
    frame["label"] = rng.choice(["a", "b", "c"], len(frame), p=[0.1, 0.3, 0.6])
    frame.loc[frame["x1"] > 1, "label"] = "a"
    frame.to_csv(tmp_path / "m.csv", index=False)
    regression_frame().to_csv(tmp_path / "r.csv", index=False)
    registry = Registry(tmp_path / "reg")
    run_training(fast_config(name="multi", data=str(tmp_path / "m.csv"), target="label"), registry)
    run_training(fast_config(name="reg", data=str(tmp_path / "r.csv"), target="y"), registry)
    multi = registry.manifest("multi", 1)
    assert multi.decision is not None and multi.decision.threshold is None
    assert multi.decision.objective == "argmax"
    assert registry.manifest("reg", 1).decision is None
    assert LoadedModel.load(registry, "multi", 1).threshold is None


def test_unknown_positive_label_fails_before_the_search(tmp_path: Path) -> None:
    frame = _imbalanced("string")
    frame.to_csv(tmp_path / "d.csv", index=False)
    cfg = fast_config(
        name="x", data=str(tmp_path / "d.csv"), target="label", decision={"positive_label": "x"}
    )
    with pytest.raises(TrainingError, match="decision.positive_label: 'x' is not one"):
        run_training(cfg, Registry(tmp_path / "reg"))
    assert not (tmp_path / "reg" / "x").exists()


def test_old_manifest_loads_without_threshold() -> None:
    fixture = Path(__file__).parents[1] / "fixtures" / "registry-pre-core"
    manifest = Registry(fixture).manifest("legacy", 1)
    assert manifest.decision is None and manifest.threshold is None


# -- imported -------------------------------------------------------------------------------------


def test_import_with_a_threshold(tmp_path: Path) -> None:
    frame = _imbalanced("integer")[["x1", "x2", "label"]]
    model = LogisticRegression().fit(frame[["x1", "x2"]], frame["label"])
    joblib.dump(model, tmp_path / "m.joblib")
    frame.to_csv(tmp_path / "s.csv", index=False)
    registry = Registry(tmp_path / "reg")
    common = {"name": "imp", "sample": str(tmp_path / "s.csv"), "target": "label"}
    v1 = import_pipeline(tmp_path / "m.joblib", registry=registry, **common)
    v2 = import_pipeline(tmp_path / "m.joblib", registry=registry, threshold=0.2, **common)
    assert registry.manifest("imp", v1).threshold is None
    m2 = registry.manifest("imp", v2)
    assert m2.threshold == 0.2 and m2.decision is not None and m2.decision.positive_class == 1
    served = LoadedModel.load(registry, "imp", v2)
    columns = {c: frame[c].tolist() for c in ("x1", "x2")}
    out = served.predict_columns(columns)
    p = model.predict_proba(frame[["x1", "x2"]])[:, 1]
    assert out.predictions == [1 if v >= 0.2 else 0 for v in p]
    raw = json.loads((registry.path("imp", v2) / "manifest.json").read_text())
    assert (
        raw["metrics"]["sample"]["recall"]
        > json.loads((registry.path("imp", v1) / "manifest.json").read_text())["metrics"]["sample"][
            "recall"
        ]
    )
    for bad, match in ((1.5, "strictly between 0 and 1"), (0.0, "strictly between 0 and 1")):
        with pytest.raises(TrainingError, match=match):
            import_pipeline(tmp_path / "m.joblib", registry=registry, threshold=bad, **common)
    with pytest.raises(TrainingError, match="--positive-label: '7' is not one"):
        import_pipeline(
            tmp_path / "m.joblib", registry=registry, threshold=0.3, positive_label="7", **common
        )
