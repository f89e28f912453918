"""LightGBM and XGBoost pipelines: explained by TreeSHAP, loaded, and a missing package named."""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from core import ecosystem
from core.explain import Explainer
from tests.conftest import require_module
from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline

lightgbm = require_module("lightgbm")
xgboost = require_module("xgboost")
require_module("shap")


def _bundled(task: str) -> tuple[pd.DataFrame, pd.Series]:
    loader = {"binary": load_breast_cancer, "multiclass": load_wine, "regression": load_diabetes}
    bunch = loader[task](as_frame=True)
    return bunch.data.rename(columns=lambda c: str(c).replace(" ", "_")), bunch.target


def _model(lib: str, task: str):  # type: ignore[no-untyped-def]
    kw = {"n_estimators": 20, "random_state": 0}
    if lib == "lightgbm":
        kw["verbose"] = -1
        return (lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier)(**kw)
    return (xgboost.XGBRegressor if task == "regression" else xgboost.XGBClassifier)(**kw)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("lib", ["lightgbm", "xgboost"])
def test_pipeline_with_a_boosting_library_is_explained_by_treeshap(
    lib: str, task: str, tmp_path: Path
) -> None:
    x, y = _bundled(task)
    kinds = FeatureKinds(numeric=list(x.columns), categorical=[], datetime=[])
    pipe = build_pipeline(kinds, _model(lib, task), family="hgb", prep=Preprocessing()).fit(x, y)
    joblib.dump(pipe, tmp_path / "model.joblib")
    loaded = ecosystem.load_model(tmp_path / "model.joblib")
    assert ecosystem.required_packages(loaded) == {lib: sys.modules[lib].__version__}
    kind = "regression" if task == "regression" else "classification"
    rows = x.sample(10, random_state=0)
    exp = Explainer(loaded, list(x.columns), x, task=kind).explain(rows)
    assert exp.method == "tree_shap", exp.note
    final, xt = loaded[-1], loaded[:-1].transform(rows)
    margin = np.asarray(ecosystem.raw_output(final, xt), dtype=float)
    if task == "multiclass":
        cls = loaded.predict(rows)
        assert exp.classes == list(cls) and exp.output == "raw_score"
        margin = margin[np.arange(len(rows)), cls]
    else:
        assert exp.output == ("value" if task == "regression" else "log_odds")
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1), margin, rtol=1e-4, atol=1e-5
    )


def test_a_bare_lightgbm_estimator_is_explained_on_its_own_columns() -> None:
    x, y = _bundled("binary")
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1, random_state=0).fit(x, y)
    exp = Explainer(model, list(x.columns), x, task="classification").explain(x.head(5))
    assert exp.method == "tree_shap"
    np.testing.assert_allclose(
        exp.base_values + exp.contributions.sum(axis=1),
        model.predict(x.head(5), raw_score=True),
        atol=1e-6,
    )


def test_a_model_whose_package_is_missing_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pickle an object of a class from a throw-away module, then make the module unimportable."""
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / "throwaway_booster.py").write_text(
        "class Booster:\n    def predict(self, x):\n        return x\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    import throwaway_booster  # type: ignore[import-not-found]

    joblib.dump(throwaway_booster.Booster(), tmp_path / "model.joblib")
    monkeypatch.delitem(sys.modules, "throwaway_booster")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(pkg)])
    with pytest.raises(ecosystem.MissingModelPackage, match="'throwaway_booster'") as info:
        ecosystem.load_model(tmp_path / "model.joblib")
    assert info.value.extra is None and "install the package" in str(info.value)
    assert isinstance(info.value, ModuleNotFoundError)


def test_a_missing_lightgbm_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _bundled("binary")
    joblib.dump(
        lightgbm.LGBMClassifier(n_estimators=2, verbose=-1).fit(x, y), tmp_path / "m.joblib"
    )
    for name in [m for m in sys.modules if m == "lightgbm" or m.startswith("lightgbm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm -> ModuleNotFoundError
    with pytest.raises(ecosystem.MissingModelPackage) as info:
        ecosystem.load_model(tmp_path / "m.joblib")
    assert "pip install 'servewatch[lightgbm]'" in str(info.value)
    assert info.value.module == "lightgbm"


def test_other_load_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ecosystem.load_model(tmp_path / "nothing.joblib")
