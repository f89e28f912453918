"""The champion and the challenger are compared on test rows the champion never learnt from (issue
34): v1 on 8,000 rows, then v2 on the same file plus 1,000 rows with the same seed, whose test
rows are half v1's training rows."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from core import metrics as metric_contract
from core.registry import Registry, verify_files
from tests.conftest import fast_config
from training import card, evaluate, fingerprints
from training.assessment import MIN_UNSEEN_ROWS
from training.prepare import prepare, quiet
from training.train import run_training

# an untuned tree grows until every training row is right: it scores near 1 on rows it learnt
TREE = {"models": ["tree"], "search": {"method": "grid", "trials": 1, "budget_seconds": 30,
        "max_rows": 1000, "grow_rows": False}, "calibration": "none",
        "publish": {"refit_all": False}}  # fmt: skip
"""The tested model published: v1 learnt its train and validation rows only (the refit on all
rows is tests/training/test_refit_all.py)."""


def noisy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 1, n) > 0).astype(int)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("rows")
    frame = noisy(9000, 0)
    first, both = folder / "v1.csv", folder / "v2.csv"
    frame.head(8000).to_csv(first, index=False)
    frame.to_csv(both, index=False)
    return first, both


def train(path: Path, root: Path) -> dict:  # type: ignore[type-arg]
    cfg = fast_config(**TREE, name="m", data=str(path), target="y")
    return run_training(cfg, Registry(root)).manifest


def learned_by(path: Path) -> set[tuple[float, ...]]:
    """The rows (a, b, c, y) a run on `path` trains and validates on, from its own split."""
    s = prepare(fast_config(**TREE, name="m", data=str(path), target="y"), quiet).splits
    x = pd.concat([s.x_train, s.x_val])
    y = pd.concat([s.y_train, s.y_val]).astype(int)
    return set(zip(x["a"], x["b"], x["c"], y, strict=True))


def test_the_champion_is_scored_only_on_rows_it_did_not_learn_from(
    two_files: tuple[Path, Path], tmp_path: Path
) -> None:
    first, both = two_files
    v1 = train(first, tmp_path)
    folder = Registry(tmp_path).path("m", 1)
    split = {"train": 5120, "validation": 1280, "test": 1600}
    assert v1["data"]["row_fingerprints"]["rows"] == split
    assert fingerprints.ROWS_FILE in v1["files"]
    assert verify_files(folder, Registry(tmp_path).manifest("m", 1)) == []
    assert (folder / fingerprints.ROWS_FILE).stat().st_size < 8000 * 16  # about 10 bytes a row

    v2 = train(both, tmp_path)
    champ = v2["champion"]
    # v2's test rows that v1 never learnt from, found independently of the fingerprints
    seen = learned_by(first)
    raw = pd.read_csv(both)
    s = prepare(fast_config(**TREE, name="m", data=str(both), target="y"), quiet).splits
    test = raw.loc[s.x_test.index]
    unseen = [i for i, r in test.iterrows() if (r.a, r.b, r.c, int(r.y)) not in seen]
    assert len(test) == 1800 and 600 < len(unseen) < 1200  # about half were v1's rows
    assert champ["comparison"] == "unseen_rows"
    assert (champ["rows"], champ["seen_rows_left_out"]) == (len(unseen), 1800 - len(unseen))
    # both scored on exactly those rows
    old = joblib.load(folder / "model.joblib")
    new = joblib.load(Registry(tmp_path).path("m", 2) / "model.joblib")
    rows = raw.loc[unseen, ["a", "b", "c"]].astype(float)
    truth = raw.loc[unseen, "y"].astype(str)
    auc_old = evaluate.score_model(old, rows, truth, "classification")["roc_auc"]
    auc_new = evaluate.score_model(new, rows, truth, "classification")["roc_auc"]
    assert champ["champion_score"] == pytest.approx(auc_old, abs=1e-12)
    assert champ["challenger_score"] == pytest.approx(auc_new, abs=1e-12)
    # on every test row v1 looks better than it is (it has learnt half of them by heart)
    everything = evaluate.score_model(
        old, test[["a", "b", "c"]].astype(float), test["y"].astype(str), "classification"
    )["roc_auc"]
    assert everything > auc_old + 0.02
    text = card.render({**v2, "version": 2})
    assert f"on {len(unseen)} test rows neither version trained on" in text


def test_too_few_unseen_rows_are_not_compared_and_the_version_waits_in_staging(
    two_files: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = two_files
    train(first, tmp_path)
    # v2 on 600 of v1's own training rows: every one of its test rows was v1's
    part = tmp_path / "part.csv"
    raw = pd.read_csv(first)
    learned = learned_by(first)
    mine = [i for i, r in raw.iterrows() if (r.a, r.b, r.c, int(r.y)) in learned][:600]
    raw.loc[mine].to_csv(part, index=False)
    result = run_training(
        fast_config(**TREE, name="m", data=str(part), target="y"), Registry(tmp_path)
    )
    champ = result.manifest["champion"]
    assert champ["comparison"] == "too_few_unseen_rows" and champ["rows"] == 0
    assert champ["seen_rows_left_out"] == result.manifest["data"]["split"]["test"]
    assert "champion_score" not in champ and f"at least {MIN_UNSEEN_ROWS}" in champ["note"]
    assert result.promoted_to == "staging"
    assert Registry(tmp_path).alias_version("m", "production") == 1


def test_a_champion_without_fingerprints_is_compared_on_every_test_row_and_says_so(
    two_files: tuple[Path, Path], tmp_path: Path
) -> None:
    first, both = two_files
    train(first, tmp_path)
    folder = Registry(tmp_path).path("m", 1)  # as published before fingerprints existed
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["data"]["row_fingerprints"], manifest["files"][fingerprints.ROWS_FILE]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / fingerprints.ROWS_FILE).unlink()
    v2 = train(both, tmp_path)
    champ = v2["champion"]
    assert champ["comparison"] == "may_include_seen_rows"
    assert champ["rows"] == 1800 and champ["seen_rows_left_out"] == 0
    assert champ["challenger_score"] == v2["metrics"]["test"]["roc_auc"]
    judge = metric_contract.get("roc_auc")
    assert np.isfinite(champ["champion_score"]) and judge.higher_is_better
    assert "may include rows v1 trained on" in card.render({**v2, "version": 2})


def test_a_row_hashes_the_same_whatever_type_its_columns_were_read_as() -> None:
    as_numbers = pd.DataFrame({"n": [1, 2, None], "t": ["x", None, "z"], "y": [True, False, True]})
    as_objects = as_numbers.astype(object).where(as_numbers.notna(), None)
    as_objects["n"] = [1.0, 2, float("nan")]
    as_objects["y"] = [np.True_, False, 1]  # numpy's booleans are numbers too
    columns = ["n", "t", "y"]
    assert list(fingerprints.hashes(as_numbers, columns)) == list(
        fingerprints.hashes(as_objects, columns)
    )
    other = fingerprints.hashes(as_numbers, ["t", "n", "y"])  # column order matters
    assert len(set(fingerprints.hashes(as_numbers, columns)) & set(other)) == 0
    when = pd.DataFrame({"w": pd.to_datetime(["2024-01-20 10:00:00", None])})
    as_text = pd.DataFrame({"w": ["2024-01-20 10:00:00", None]})  # as a CSV reads it
    assert list(fingerprints.hashes(when, ["w"])) == list(fingerprints.hashes(as_text, ["w"]))
    text = pd.DataFrame({"n": ["1", "2", None], "t": ["x", None, "z"], "y": [1, 0, 1]})
    assert fingerprints.hashes(text, columns)[0] != fingerprints.hashes(as_numbers, columns)[0]


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_regressors_and_multiclass_models_are_compared_on_unseen_rows(
    tmp_path: Path, task: str
) -> None:
    frame = noisy(1300, 3)
    if task == "regression":
        frame["y"] = frame["a"] * 3 + frame["b"] + np.random.default_rng(0).normal(0, 1, 1300)
    else:
        frame["y"] = pd.cut(frame["a"] + frame["b"], [-np.inf, -0.5, 0.5, np.inf], labels=False)
    first, both = tmp_path / "v1.csv", tmp_path / "v2.csv"
    frame.head(1000).to_csv(first, index=False)
    frame.to_csv(both, index=False)
    linear = {**TREE, "models": ["linear"]}
    for path in (first, both):
        cfg = fast_config(**linear, name="m", data=str(path), target="y")
        manifest = run_training(cfg, Registry(tmp_path / "r")).manifest
    s = prepare(fast_config(**linear, name="m", data=str(first), target="y"), quiet).splits
    learned = set(pd.concat([s.x_train, s.x_val])["a"])
    s2 = prepare(fast_config(**linear, name="m", data=str(both), target="y"), quiet).splits
    unseen = int((~s2.x_test["a"].isin(learned)).sum())
    champ = manifest["champion"]
    assert 100 <= unseen < len(s2.x_test)
    assert (champ["comparison"], champ["rows"]) == ("unseen_rows", unseen)
    assert np.isfinite(champ["champion_score"]) and np.isfinite(champ["challenger_score"])
