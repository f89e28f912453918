"""reference.parquet is drawn from rows the model never trained on, and the manifest says so
(issue 33: it was drawn from train + validation rows, whose predictions are in-sample)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.tree import DecisionTreeClassifier

from core.metrics import classification_metrics
from core.registry import LABEL_COL, PREDICTION_COL, PROBA_PREFIX, Registry
from tests.conftest import fast_config
from training.prepare import prepare, quiet
from training.publishing import (
    OUT_OF_FOLD_FOLDS,
    REFERENCE_MIN_UNSEEN,
    unseen_baseline,
    unseen_reference,
)


def data(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = pd.Series(np.where(x["a"] + rng.normal(size=n) > 0, "yes", "no"))
    return x, y


def test_a_large_test_set_alone_makes_the_reference() -> None:
    x_fit, y_fit = data(2000, 0)
    x_test, y_test = data(1500, 1)
    model = LogisticRegression().fit(x_fit, y_fit)
    ref, record = unseen_reference(
        model, (x_test, y_test), (x_fit, y_fit), "classification", 1200, 0
    )
    assert record == {"drawn_from": "test", "unseen": True, "rows": {"test": 1200}}
    assert len(ref) == 1200
    assert set(ref["a"]) <= set(x_test["a"])  # test rows only


def test_a_small_test_set_is_topped_up_with_out_of_fold_predictions() -> None:
    """An overfitting model: its in-sample probabilities are 0 or 1, the out-of-fold ones are
    what it says of rows it did not see."""
    x_fit, y_fit = data(600, 2)
    x_test, y_test = data(80, 3)
    model = DecisionTreeClassifier(random_state=0).fit(x_fit, y_fit)
    ref, record = unseen_reference(
        model, (x_test, y_test), (x_fit, y_fit), "classification", 5000, 0
    )
    assert record["drawn_from"] == "test+out_of_fold" and record["unseen"] is True
    # topped up towards the minimum: every fitted row, as fewer exist
    assert REFERENCE_MIN_UNSEEN - 80 > 600
    assert record["rows"] == {"test": 80, "out_of_fold": 600}
    assert len(ref) == 680
    oof = ref.iloc[80:]
    assert set(oof["a"]) <= set(x_fit["a"])
    # in-sample the tree is right on every row; out of fold it is not
    in_sample = model.predict_proba(oof[["a", "b"]])[:, 1]
    assert np.array_equal(in_sample, (oof[LABEL_COL] == "yes").to_numpy(float))
    oof_right = (oof[f"{PROBA_PREFIX}yes"] >= 0.5) == (oof[LABEL_COL] == "yes")
    assert 0.5 < oof_right.mean() < 0.95


class Prefitted(LogisticRegression):
    """Fitted elsewhere: a copy cannot be fitted again (as some mitigated models)."""

    def fit(self, *args: object, **kwargs: object) -> "Prefitted":
        raise RuntimeError("this estimator is fitted once, elsewhere")


def test_a_model_that_cannot_be_refitted_keeps_the_test_rows() -> None:
    x_fit, y_fit = data(300, 4)
    x_test, y_test = data(50, 5)
    model = Prefitted()
    LogisticRegression.fit(model, x_fit, y_fit)
    ref, record = unseen_reference(
        model, (x_test, y_test), (x_fit, y_fit), "classification", 500, 0
    )
    assert record["drawn_from"] == "test" and "out_of_fold_error" in record
    assert len(ref) == 50


def test_a_trained_version_records_its_reference_and_holds_the_test_rows(
    trained_registry: Path, clf_csv: Path
) -> None:
    manifest = Registry(trained_registry).raw_manifest("demo", 1)
    record = manifest["reference"]
    assert record["unseen"] is True
    assert record["drawn_from"] == "test+validation+out_of_fold"
    split = manifest["data"]["split"]
    # every test row, every validation row (predicted by the model fitted on train only), then
    # out-of-fold rows up to reference_rows
    assert record["rows"]["test"] == split["test"]
    assert record["rows"]["validation"] == split["validation"]
    assert sum(record["rows"].values()) == 200
    ref = pd.read_parquet(trained_registry / "demo" / "1" / "reference.parquet")
    config = fast_config(
        name="demo",
        data=str(clf_csv),
        target="label",
        fairness={"sensitive": ["group"]},
        features={"datetime": ["when"]},
    )
    prepared = prepare(config, quiet)
    test_x1, val_x1 = set(prepared.splits.x_test["x1"]), set(prepared.splits.x_val["x1"])
    n_test, n_val = split["test"], split["validation"]
    assert set(ref["x1"].iloc[:n_test]) == test_x1
    assert set(ref["x1"].iloc[n_test : n_test + n_val]) == val_x1
    assert set(ref["x1"].iloc[n_test + n_val :]) <= set(prepared.splits.x_train["x1"])


def test_the_baseline_scores_the_test_rows_and_every_fitted_row_out_of_fold() -> None:
    """`reference.baseline`: every metric over the test rows (as the model predicts them) and
    every fitted row predicted by a copy fitted without its fold; an overfitting tree's
    in-sample accuracy (1.0) never enters it."""
    x_fit, y_fit = data(600, 6)
    x_test, y_test = data(200, 7)
    model = DecisionTreeClassifier(random_state=0).fit(x_fit, y_fit)
    record = unseen_baseline(model, (x_test, y_test), (x_fit, y_fit), "classification", 0)
    assert record is not None
    assert record["rows"] == {"test": 200, "out_of_fold": 600}
    assert record["folds"] == OUT_OF_FOLD_FOLDS
    on_test = classification_metrics(y_test, model.predict_proba(x_test), ["no", "yes"])
    assert model.score(x_fit, y_fit) == 1.0
    assert 0.5 < record["metrics"]["accuracy"] < 0.95
    # test rows and out-of-fold rows pooled: not the test rows' figure alone
    assert record["metrics"]["accuracy"] != pytest.approx(on_test["accuracy"], abs=1e-9)
    assert set(record["metrics"]) == set(on_test)
    y = pd.Series(np.linspace(0.0, 10.0, 300))
    x = pd.DataFrame({"a": y + np.random.default_rng(8).normal(size=300)})
    fitted = LinearRegression().fit(x[:200], y[:200])
    reg = unseen_baseline(fitted, (x[200:], y[200:]), (x[:200], y[:200]), "regression", 0)
    assert reg is not None and reg["rows"] == {"test": 100, "out_of_fold": 200}
    assert 0.5 < reg["metrics"]["rmse"] < 1.5  # the noise's sd is 1


def test_no_baseline_without_enough_rows_or_a_model_that_can_be_refitted() -> None:
    x_fit, y_fit = data(300, 4)
    x_test, y_test = data(50, 5)
    model = Prefitted()
    LogisticRegression.fit(model, x_fit, y_fit)
    assert unseen_baseline(model, (x_test, y_test), (x_fit, y_fit), "classification", 0) is None
    fitted = LogisticRegression().fit(x_fit[:8], y_fit[:8])
    few = (x_fit[:8], y_fit[:8])
    assert unseen_baseline(fitted, (x_test, y_test), few, "classification", 0) is None


def test_baseline_folds_sets_the_copies_and_zero_turns_the_baseline_off() -> None:
    """publish.baseline_folds: k copies (every fitted row predicted once either way); 0 and 1
    leave the test score as the baseline."""
    x_fit, y_fit = data(300, 4)
    x_test, y_test = data(50, 5)
    fitted = LogisticRegression().fit(x_fit, y_fit)
    both = ((x_test, y_test), (x_fit, y_fit), "classification", 0)
    three = unseen_baseline(fitted, *both, folds=3)
    assert three is not None and three["folds"] == 3
    assert three["rows"] == {"test": 50, "out_of_fold": 300}
    assert unseen_baseline(fitted, *both, folds=0) is None
    assert unseen_baseline(fitted, *both, folds=1) is None


def test_a_trained_version_records_its_baseline(trained_registry: Path) -> None:
    manifest = Registry(trained_registry).raw_manifest("demo", 1)
    baseline = manifest["reference"]["baseline"]
    split = manifest["data"]["split"]
    assert baseline["rows"] == {
        "test": split["test"],
        "out_of_fold": split["train"] + split["validation"],
    }
    metric = manifest["objective"]["metric"]
    assert 0.0 < baseline["metrics"][metric] <= 1.0


def test_an_incremental_update_does_not_carry_its_parents_baseline() -> None:
    """The parent's baseline scored the parent: the update is judged against its own test score."""
    from core.registry import Manifest
    from training import incremental

    x, y = data(300, 9)
    model = LogisticRegression().fit(x, y)
    reference = {"drawn_from": "test", "unseen": True, "rows": {"test": 100}}
    baseline = {"metrics": {"accuracy": 0.9}, "rows": {"test": 100, "out_of_fold": 400}}
    parent = Manifest.model_validate(
        {
            "name": "m", "version": 1, "created_at": "2026-01-01T00:00:00Z",
            "task": "classification", "target": "y", "classes": ["no", "yes"], "features": [],
            "model": {"family": "linear"}, "objective": {"metric": "accuracy", "test_score": 0.8},
            "reference": {**reference, "baseline": baseline},
        }
    )  # fmt: skip
    manifest = incremental.updated_manifest(parent, model, x, y, rows=300, seconds=0.1, extra={})
    assert manifest.reference.body() == reference
    assert parent.reference.body()["baseline"] == baseline  # the parent's record is untouched


class Memorizer(RegressorMixin, BaseEstimator):
    """Predicts 1 for a row identical to one it was fitted on, else 0; and the latest `t` it
    was fitted on (`t_seen_`) for `latest`: which rows a copy saw, read from its predictions."""

    def __init__(self, latest: bool = False) -> None:
        self.latest = latest

    def fit(self, x: pd.DataFrame, y: pd.Series) -> "Memorizer":
        self.seen_ = set(map(tuple, x.to_numpy().tolist()))
        self.t_seen_ = float(x["t"].max())
        return self

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        if self.latest:
            return np.full(len(x), self.t_seen_)
        return np.array([float(tuple(r) in self.seen_) for r in x.to_numpy().tolist()])


def copies(records: int, times: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """`records` rows each appearing `times` times (features and label), shuffled."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"t": np.arange(records, dtype=float), "a": rng.normal(size=records)})
    y = pd.Series(np.where(x["a"] + 2 * rng.normal(size=records) > 0, "yes", "no"))
    order = rng.permutation(np.repeat(np.arange(records), times))
    return x.iloc[order].reset_index(drop=True), y.iloc[order].reset_index(drop=True)


def test_no_out_of_fold_row_is_predicted_by_a_copy_fitted_on_its_duplicate() -> None:
    """The folds are the search's: a row's copies stay in its fold (a plain shuffled KFold put
    two of every three copies in the training part, and the baseline read what the model
    remembers); unless split.keep_copies_together is false."""
    x_fit, y_fit = copies(300, 3, 10)
    y_num = (y_fit == "yes").astype(float)
    model = Memorizer().fit(x_fit, y_num)
    x_test, y_test = x_fit.iloc[:0], y_num.iloc[:0]
    ref, record = unseen_reference(model, (x_test, y_test), (x_fit, y_num), "regression", 900, 0)
    assert record["rows"] == {"test": 0, "out_of_fold": 900}
    assert (ref[PREDICTION_COL] == 0.0).all()  # never seen by the copy that predicted it
    both = ((x_fit.iloc[:30], y_num.iloc[:30]), (x_fit, y_num), "regression", 0)
    baseline = unseen_baseline(model, *both)
    assert baseline is not None and baseline["copies_together"] is True
    assert baseline["rows"] == {"test": 30, "out_of_fold": 900}
    # the 30 test rows are the model's own rows here (1.0); the 900 out-of-fold rows all 0.0
    truth = y_num.to_numpy()
    expected = np.sqrt(np.mean(np.r_[1.0 - truth[:30], -truth] ** 2))
    assert baseline["metrics"]["rmse"] == pytest.approx(expected)
    apart = unseen_baseline(model, *both, keep_copies=False)
    assert apart is not None and apart["copies_together"] is False
    assert apart["metrics"]["rmse"] != pytest.approx(expected)


def test_with_duplicates_the_baseline_stays_within_noise_of_unseen_records() -> None:
    """1,000 records each appearing 3 times, a random forest (it remembers its rows): a plain
    shuffled KFold's baseline read 0.957 where the test rows read 0.630, so every healthy window
    read 34% below it; with the copies in one fold it is what unseen records score."""
    x, y = copies(1000, 3, 11)
    x = x.drop(columns="t").assign(b=lambda f: f["a"] ** 2)
    test = x.index[x["a"].rank(method="dense") % 5 == 0]  # every copy of a fifth of the records
    fit = x.index.difference(test)
    model = RandomForestClassifier(n_estimators=60, random_state=0, n_jobs=1)
    model.fit(x.loc[fit], y.loc[fit])
    record = unseen_baseline(
        model, (x.loc[test], y.loc[test]), (x.loc[fit], y.loc[fit]), "classification", 0
    )
    assert record is not None and record["rows"] == {"test": 600, "out_of_fold": 2400}
    fresh_x, fresh_y = copies(6000, 1, 12)  # records the model never saw, many of them
    fresh_x = fresh_x.drop(columns="t").assign(b=lambda f: f["a"] ** 2)
    truth = roc_auc_score(fresh_y == "yes", model.predict_proba(fresh_x)[:, 1])
    assert record["metrics"]["roc_auc"] == pytest.approx(truth, abs=0.04)


def drifting(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Rows in time order whose label's relation to `a` turns over time (from + to -)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    a, b = rng.normal(size=n), rng.normal(size=n)
    slope = 1.5 - 2.0 * t / n
    y = np.where(slope * a + 0.7 * b + rng.normal(size=n) > 0, "yes", "no")
    return pd.DataFrame({"t": t, "a": a, "b": b}), pd.Series(y)


def test_with_a_time_column_the_baseline_is_the_test_rows_alone() -> None:
    """Shuffled folds predict past rows from later ones (0.783 where the test rows read 0.721):
    with a time column the baseline is the test rows' figure, which the tested model predicts
    as it will predict live traffic, after every row it learnt; no copy is fitted."""
    x, y = drifting(3000, 13)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0)
    model.fit(x[:2400], y[:2400])
    test, fitted_on = (x[2400:], y[2400:]), (x[:2400], y[:2400])
    record = unseen_baseline(model, test, fitted_on, "classification", 0, ordered=True)
    assert record is not None
    assert record["rows"] == {"test": 600} and record["folds"] == 0 and record["ordered"] is True
    on_test = roc_auc_score(y[2400:] == "yes", model.predict_proba(x[2400:])[:, 1])
    assert record["metrics"]["roc_auc"] == pytest.approx(on_test)
    assert "time column" in record["note"]
    assert (
        unseen_baseline(model, test, fitted_on, "classification", 0, folds=0, ordered=True) is None
    )


def test_with_a_time_column_each_out_of_fold_row_is_predicted_from_earlier_rows_only() -> None:
    """The reference's top-up with a time column: forward folds, the latest first (their copies
    fitted on the most rows); a copy never saw a row later than the one it predicts."""
    x, y = drifting(600, 14)
    y_num = (y == "yes").astype(float)
    model = Memorizer(latest=True).fit(x, y_num)
    ref, record = unseen_reference(
        model, (x[:0], y_num[:0]), (x, y_num), "regression", 400, 0, ordered=True
    )
    held = ref.iloc[record["rows"]["test"] :]
    assert record["rows"]["out_of_fold"] == 400 and record["folds"] == 5
    assert (held[PREDICTION_COL] < held["t"]).all()  # fitted on earlier rows only
    assert held["t"].min() == 600 - 400  # the latest four folds of 100 rows; the first never
