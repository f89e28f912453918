"""Small data (scikit-learn's bundled sets, 15 to 178 rows): folds, spaces, estimators sized."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris, load_wine

from core.registry import Registry
from training import quality
from training.candidates import calibrated, make_estimator, model_space, preprocessing_space
from training.config import Quality, TrainConfig
from training.data import DataSize, FeatureKinds, size_of, split
from training.pipeline import build_pipeline
from training.search import make_cv, search_family
from training.train import run_training


def _frame(loader, per_class: int | None = None) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    frame = loader(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_").replace("(", "").replace(")", "") for c in frame]
    frame["target"] = frame["target"].map(lambda v: f"c{v}")
    if per_class is not None:
        frame = frame.groupby("target").head(per_class).reset_index(drop=True)
    return frame


def test_folds_never_outnumber_the_rarest_class_and_every_test_fold_holds_every_class() -> None:
    frame = _frame(load_wine)
    small = pd.concat([frame[frame.target != "c2"].head(40), frame[frame.target == "c2"].head(3)])
    x, y = small.drop(columns="target"), small["target"]
    cv = make_cv("classification", 5, ordered=False, seed=0)
    assert cv.get_n_splits(x, y) == 3
    folds = list(cv.split(x, y))
    assert len(folds) == 3
    for _, test in folds:
        assert set(y.iloc[test]) == set(y)
    assert make_cv("classification", 5, False, 0).get_n_splits(frame, frame.target) == 5
    assert make_cv("regression", 10, False, 0).get_n_splits(x.head(9)) == 4
    assert make_cv("regression", 5, True, 0).get_n_splits(x.head(6)) == 3


def test_split_holds_out_at_least_one_row_per_class_on_tiny_data() -> None:
    frame = _frame(load_iris, per_class=5)  # 15 rows: 20% would be 3 rows, 20% of 12 is 2.4
    s = split(frame, "target", "classification", TrainConfig())
    assert set(s.y_test) == set(s.y_val) == set(s.y_train) == {"c0", "c1", "c2"}
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 15


def test_quality_gate_names_a_class_too_small_to_split_and_survives_a_tiny_binary_class() -> None:
    frame = _frame(load_iris)
    frame = pd.concat([frame[frame.target != "c2"], frame[frame.target == "c2"].head(3)])
    kinds = FeatureKinds(numeric=[c for c in frame if c != "target"], categorical=[], datetime=[])
    report = quality.check(
        frame,
        target="target",
        task="classification",
        kinds=kinds,
        declared=set(),
        rules=Quality(),
        seed=0,
    )
    (fail,) = report.failures
    assert fail.rule == "min_class_rows" and "'c2'" in fail.message and fail.value == 3
    binary = frame[frame.target != "c1"]  # 50 against 3: the leakage check's folds fit the 3
    # (setosa against virginica: petal sizes alone separate them, a true "leakage" finding)
    report = quality.check(
        binary,
        target="target",
        task="classification",
        kinds=kinds,
        declared=set(),
        rules=Quality(),
        seed=0,
    )
    assert {f.rule for f in report.failures} == {"min_class_rows", "leakage"}


def test_spaces_drop_what_the_rows_cannot_carry() -> None:
    cfg = TrainConfig.model_validate({"feature_engineering": {"interactions": True, "pca": 5}})
    wide_small = DataSize(rows=60, features=13, n_classes=3, smallest_class=6)
    assert set(preprocessing_space("linear", cfg, wide_small)) == {"pre_scaler", "pre_pca"}
    assert set(preprocessing_space("linear", cfg, DataSize(rows=4, features=13))) == {"pre_scaler"}
    assert set(preprocessing_space("linear", cfg)) == {"pre_scaler", "pre_interactions", "pre_pca"}
    assert model_space("tree", "classification", wide_small)["min_samples_leaf"].high == 6
    assert model_space("tree", "classification")["min_samples_leaf"].high == 100
    mlp = make_estimator("mlp", "classification", {}, 0, wide_small)
    assert not mlp.early_stopping and mlp.max_iter == 1000
    assert make_estimator("mlp", "classification", {}, 0).early_stopping
    assert not make_estimator("hgb", "regression", {}, 0, wide_small).early_stopping
    assert make_estimator("svm", "classification", {}, 0, wide_small).cv == 5
    tiny = DataSize(rows=20, features=4, n_classes=3, smallest_class=3)
    assert make_estimator("svm", "classification", {}, 0, tiny).cv == 3


def test_calibration_folds_fit_a_class_with_two_training_rows() -> None:
    frame = _frame(load_iris)
    frame = pd.concat([frame[frame.target != "c2"].head(60), frame[frame.target == "c2"].head(2)])
    x, y = frame.drop(columns="target"), frame["target"]
    est = make_estimator("linear", "classification", {"alpha": 1e-3, "l1_ratio": 0.0}, 0)
    model = calibrated(est, "sigmoid", size_of(x, y, "classification")).fit(x, y)
    assert model.predict_proba(x).shape == (62, 3)


@pytest.mark.parametrize("family", ["linear", "tree", "svm", "forest", "hgb", "mlp"])
def test_every_family_learns_iris_from_a_few_dozen_rows(family: str) -> None:
    """45 iris rows, 5-fold CV: each fold trains on 36. Unsized, the tree, forest and
    gradient boosting spaces (leaves of up to 100/20 rows, early stopping on 4 rows) gave
    trivial models scoring the majority share (0.33-0.36)."""
    frame = _frame(load_iris, per_class=15)
    x, y = frame.drop(columns="target"), frame["target"]
    kinds = FeatureKinds(numeric=list(x.columns), categorical=[], datetime=[])
    cfg = TrainConfig()
    folds = 5
    size = size_of(x, y, "classification").fold_train(folds)
    space = {
        **preprocessing_space(family, cfg, size),
        **model_space(family, "classification", size),
    }

    def build(params: dict[str, object]):  # type: ignore[no-untyped-def]
        pre = {k[4:]: v for k, v in params.items() if k.startswith("pre_")}
        model = {k: v for k, v in params.items() if not k.startswith("pre_")}
        est = make_estimator(family, "classification", model, 0, size)
        return build_pipeline(
            kinds,
            est,
            family=family,
            prep=cfg.preprocessing,
            scaler=str(pre.get("scaler", "standard")),
        )

    result = search_family(
        family,
        space,
        build,
        x,
        y,
        method="random",
        trials=4,
        deadline=time.monotonic() + 60,
        cv=make_cv("classification", folds, False, 0),
        scoring="accuracy",
        seed=0,
    )
    assert result.best is not None
    assert result.best.score >= 0.8, [t.score for t in result.trials]


@pytest.mark.parametrize(
    ("loader", "models"), [(load_wine, ["linear"]), (load_iris, ["linear", "svm"])]
)
def test_a_three_class_data_set_with_a_linear_winner_trains_and_is_explained(
    tmp_path: Path,
    loader,
    models: list[str],  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "data.csv"
    _frame(loader).to_csv(path, index=False)
    cfg = TrainConfig.model_validate(
        {
            "data": str(path),
            "target": "target",
            "models": models,
            "search": {"trials": 2, "budget_seconds": 20},
            "reference_rows": 100,
        }
    )
    result = run_training(cfg, Registry(tmp_path / "registry"))
    manifest = result.manifest
    assert manifest["classes"] == ["c0", "c1", "c2"]
    assert manifest["objective"]["test_score"] > 0.8
    shap = manifest["explanations"]["shap"]
    assert shap["method"] == "linear_exact" if manifest["model"]["family"] == "linear" else True
    assert all(np.isfinite(v) for v in shap["mean_abs_contribution"].values())
