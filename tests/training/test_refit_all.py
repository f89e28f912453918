"""Publish a model fitted on every row (issue 32): after the test has been scored, the tested
model's configuration is refitted on train + validation + test; its test figures, threshold,
reference sample and the champion comparison stay the tested model's."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from core.registry import PROBA_PREFIX, Manifest, Registry
from tests.conftest import fast_config
from tests.training.test_champion_rows import TREE, noisy
from training import fingerprints
from training.assessment import MIN_UNSEEN_ROWS
from training.gate import Gate, Rows
from training.train import run_training

REFIT = {**TREE, "publish": {"refit_all": True}}


def _train(path: Path, root: Path, **extra: Any) -> dict[str, Any]:
    cfg = fast_config(**{**REFIT, **extra}, name="m", data=str(path), target="y")
    return run_training(cfg, Registry(root)).manifest


def _rows_learnt(root: Path, version: int) -> int:
    """The rows the published tree was fitted on (its root node holds every one)."""
    model = joblib.load(Registry(root).path("m", version) / "model.joblib")
    return int(model.named_steps["model"].tree_.n_node_samples[0])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("refit")
    frame = noisy(3000, 1)
    first, more = folder / "first.csv", folder / "more.csv"
    frame.head(2500).to_csv(first, index=False)
    frame.to_csv(more, index=False)
    return first, more


def test_the_published_model_learnt_every_row_and_keeps_the_tested_models_figures(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = data
    tested = _train(first, tmp_path / "a", publish={"refit_all": False})
    refit = _train(first, tmp_path / "b")
    split = refit["data"]["row_fingerprints"]["rows"]
    assert refit["model"]["refit"]["all_rows"] is True
    assert refit["model"]["refit"]["rows"] == sum(split.values()) == 2500
    assert refit["model"]["refit"]["tested_rows"] == split["train"] + split["validation"]
    assert tested["model"]["refit"] == {
        "all_rows": False,
        "rows": split["train"] + split["validation"],
        "reason": "publish.refit_all is false",
    }
    # the tree published learnt all 2,500 rows; the tested one train + validation
    assert _rows_learnt(tmp_path / "b", 1) == 2500
    assert _rows_learnt(tmp_path / "a", 1) == split["train"] + split["validation"]
    # same seed, same tested model: the same test figures, decision and reference sample
    assert refit["metrics"]["test"] == tested["metrics"]["test"]
    assert refit["decision"] == tested["decision"]
    assert refit["reference"]["predicted_by"] == "tested model"
    assert refit["reference"]["unseen"] is True
    ref_a = pd.read_parquet(Registry(tmp_path / "a").path("m", 1) / "reference.parquet")
    ref_b = pd.read_parquet(Registry(tmp_path / "b").path("m", 1) / "reference.parquet")
    pd.testing.assert_frame_equal(ref_a, ref_b)
    # and the reference's predictions are not the refit's (it learnt those rows by heart)
    served = joblib.load(Registry(tmp_path / "b").path("m", 1) / "model.joblib")
    proba_cols = [c for c in ref_b.columns if c.startswith(PROBA_PREFIX)]
    assert proba_cols, list(ref_b.columns)
    again = served.predict_proba(ref_b[["a", "b", "c"]])
    assert not np.allclose(again, ref_b[proba_cols].to_numpy())


def test_a_calibrated_model_is_refitted_with_its_calibration_method(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = data
    manifest = _train(first, tmp_path, calibration="sigmoid")
    assert manifest["model"]["calibration"] == "sigmoid"
    model = joblib.load(Registry(tmp_path).path("m", 1) / "model.joblib")
    calibrated = model.named_steps["model"]
    assert type(calibrated).__name__ == "CalibratedClassifierCV"
    assert calibrated.method == "sigmoid"
    # each calibration fold's tree learnt from part of all 2,500 rows: more than train + val
    learnt = sum(c.estimator.tree_.n_node_samples[0] for c in calibrated.calibrated_classifiers_)
    folds = len(calibrated.calibrated_classifiers_)
    assert learnt == pytest.approx(2500 * (folds - 1), abs=folds)


def test_a_champion_refitted_on_all_rows_is_compared_only_on_rows_it_never_saw(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    first, more = data
    _train(first, tmp_path)
    v2 = _train(more, tmp_path)
    champ = v2["champion"]
    # v1 learnt every row of `first` (its test rows too): of v2's test rows, only those among
    # the 500 rows `first` lacks are unseen by it
    raw = pd.read_csv(more)
    prints = fingerprints.load(Registry(tmp_path).path("m", 2), Manifest.model_validate(v2))
    assert prints is not None
    in_test = np.isin(fingerprints.hashes(raw, prints.columns), prints.of("test"))
    unseen = int(in_test[2500:].sum())
    assert champ["comparison"] == "unseen_rows", champ
    assert champ["rows"] == unseen and MIN_UNSEEN_ROWS <= unseen < 200
    assert champ["seen_rows_left_out"] == int(in_test.sum()) - unseen


def test_the_gate_takes_a_recorded_champion_score_where_the_champion_saw_the_rows() -> None:
    frame = noisy(400, 2)
    x, y = frame[["a", "b", "c"]], frame["y"].astype(str)
    champion = LogisticRegression().fit(x, y)
    gate = Gate(
        champion=champion,
        task="classification",
        metric="roc_auc",
        margin=0.01,
        fairness_margin=0.05,
        checks={"recent_window": Rows(x, y), "original_test": Rows(x, y)},
        fairness_rows=Rows(x, y),
        groups=pd.DataFrame(index=x.index),
        recorded={"original_test": 0.5},
    )
    # the challenger's tested model (one feature: it scores below its refit) stands for it where
    # the champion's tested score does; its published model everywhere else
    one = ColumnTransformer([("c", "passthrough", ["c"])])
    tested = make_pipeline(one, LogisticRegression()).fit(x, y)
    verdict = gate.verdict(champion, ["0", "1"], tested=tested)
    test, recent = verdict["checks"]["original_test"], verdict["checks"]["recent_window"]
    assert test["champion"] == 0.5 and "before its refit on all rows" in test["champion_from"]
    assert test["challenger"] == pytest.approx(roc_auc_score(y, tested.predict_proba(x)[:, 1]))
    assert test["challenger"] < recent["challenger"] and "tested model" in test["challenger_from"]
    assert recent["champion"] == recent["challenger"] > 0.5 and "champion_from" not in recent
    # no tested model (an incremental update, which learnt what the champion learnt): both
    # published models are measured there
    both = gate.verdict(champion, ["0", "1"])["checks"]["original_test"]
    assert both["champion"] == both["challenger"] == recent["champion"]
    assert "champion_from" not in both and "both models learnt" in both["note"]
    assert both["counts"] is False and "counts" not in recent
    # for information only: a challenger worse on rows both learnt is not refused for that (it
    # memorised the recent rows: better there, worse on the others)
    split = dataclasses.replace(
        gate,
        checks={"recent_window": Rows(x[:200], y[:200]), "original_test": Rows(x[200:], y[200:])},
    )
    memo = KNeighborsClassifier(n_neighbors=1).fit(x[:200], y[:200])
    only = split.verdict(memo, ["0", "1"])
    assert only["checks"]["recent_window"]["passed"]
    assert not only["checks"]["original_test"]["passed"] and only["passed"]


def test_a_retrained_parents_test_rows_partly_outside_the_file_decide_nothing() -> None:
    """A retrained parent's test split drew on its log window too, which the data file lacks:
    its recorded test score covers rows the gate cannot rebuild, so the champion's figure is not
    taken as recorded there; both published models are measured, for information only."""
    from servewatch.retrain import _recorded_test, _whole_test

    frame = noisy(400, 2)
    x, y = frame[["a", "b", "c"]], frame["y"].astype(str)
    refit = SimpleNamespace(all_rows=True)
    parent: Any = SimpleNamespace(
        model=SimpleNamespace(refit=refit), metrics={"test": {"roc_auc": 0.9}}
    )
    prints = SimpleNamespace(of=lambda *_s: np.arange(300))
    assert _whole_test(prints, pd.RangeIndex(300)) and _whole_test(None, pd.RangeIndex(3))
    assert not _whole_test(prints, pd.RangeIndex(120))
    assert _recorded_test(parent, "roc_auc", whole=True) == {"recorded": {"original_test": 0.9}}
    part = _recorded_test(parent, "roc_auc", whole=False)
    assert part == {"partial": frozenset({"original_test"})}
    memo = KNeighborsClassifier(n_neighbors=1).fit(x[:200], y[:200])
    gate = Gate(
        champion=LogisticRegression().fit(x, y),
        task="classification",
        metric="roc_auc",
        margin=0.01,
        fairness_margin=0.05,
        checks={"recent_window": Rows(x[:200], y[:200]), "original_test": Rows(x[200:], y[200:])},
        fairness_rows=Rows(x, y),
        groups=pd.DataFrame(index=x.index),
        **part,
    )
    verdict = gate.verdict(memo, ["0", "1"], tested=memo)
    test = verdict["checks"]["original_test"]
    assert test["counts"] is False and "only part" in test["note"] and not test["passed"]
    assert "champion_from" not in test and verdict["passed"]
