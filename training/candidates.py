"""The model families compared on equal terms, and the search space of each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, SGDClassifier
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from training.config import TrainConfig
from training.data import DataSize
from training.pipeline import NATIVE_CATEGORIES, TREE_FAMILIES

EARLY_STOPPING_MIN_ROWS = 1000
"""Below this many training rows, MLP and HistGradientBoosting train without early stopping:
their 10% validation split would be a handful of rows (too noisy to stop on)."""


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = True


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False


Dimension = Choice | FloatRange | IntRange
Space = dict[str, Dimension]


def sample(space: Space, rng: np.random.Generator) -> dict[str, Any]:
    """One random point of the space (log-uniform for log ranges)."""
    out: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            out[name] = dim.values[int(rng.integers(len(dim.values)))]
        elif isinstance(dim, FloatRange):
            if dim.log:
                out[name] = float(np.exp(rng.uniform(np.log(dim.low), np.log(dim.high))))
            else:
                out[name] = float(rng.uniform(dim.low, dim.high))
        else:
            out[name] = int(rng.integers(dim.low, dim.high + 1))
    return out


def grid_values(dim: Dimension) -> list[Any]:
    """Three points of a range (ends and middle, geometric for log ranges); all choices."""
    if isinstance(dim, Choice):
        return list(dim.values)
    if isinstance(dim, FloatRange):
        pts = np.geomspace(dim.low, dim.high, 3) if dim.log else np.linspace(dim.low, dim.high, 3)
        return [float(p) for p in pts]
    return sorted({int(round(p)) for p in np.linspace(dim.low, dim.high, 3)})


def preprocessing_space(family: str, config: TrainConfig, size: DataSize | None = None) -> Space:
    """Feature-engineering options judged by cross-validation like any hyperparameter.

    With `size` (the rows a model is fitted on), options the data cannot carry are left out:
    interaction terms when there would be more of them than rows, a PCA to as many components
    as rows or features.
    """
    fe = config.feature_engineering
    space: Space = {}
    if family == "deep":  # its first columns must stay the category codes its embeddings read
        return {"pre_scaler": Choice(tuple(fe.scalers))}
    if family not in TREE_FAMILIES:
        space["pre_scaler"] = Choice(tuple(fe.scalers))
        pairs = None if size is None else size.features * (size.features - 1) // 2
        if fe.interactions and (size is None or pairs is None or pairs <= size.rows):
            space["pre_interactions"] = Choice((False, True))
    if fe.pca and (size is None or fe.pca < min(size.rows, size.features)):
        space["pre_pca"] = Choice((None, fe.pca))
    return space


LIGHTGBM_SMALL_GROUPS = {"min_data_per_group": 5, "cat_smooth": 1.0}
"""LightGBM's untuned trial with native category splits (bench/native_categories.py)."""


def categories_space(family: str, config: TrainConfig, n_categorical: int) -> Space:
    """Native or ordinal category splits for hgb, lightgbm and xgboost when there are categorical
    columns (`preprocessing.categorical_splits`), and LightGBM's small-group settings (its
    defaults, 100 rows per category group and smoothing 10, forbid groups of a few rows)."""
    prep = config.preprocessing
    if family not in NATIVE_CATEGORIES or not n_categorical or prep.encoding == "onehot":
        return {}
    mode = prep.categorical_splits
    if mode == "ordinal":  # nothing to choose: the space (and the trials drawn) as before
        return {}
    space: Space = {
        "pre_categories": Choice(("native", "ordinal") if mode == "search" else (mode,))
    }
    if family == "lightgbm":
        space["min_data_per_group"] = IntRange(1, 100, log=True)
        space["cat_smooth"] = FloatRange(1.0, 50.0)
    return space


def _leaf_high(default: int, size: DataSize | None, share: int) -> int:
    """The largest min_samples_leaf worth searching: `default`, or rows/`share` on small data
    (a leaf of 100 rows on 90 rows is a tree that never splits)."""
    return default if size is None else max(2, min(default, size.rows // share))


def _small(size: DataSize | None) -> bool:
    return size is not None and size.rows < EARLY_STOPPING_MIN_ROWS


def model_space(family: str, task: str, size: DataSize | None = None) -> Space:
    """Hyperparameters searched for one family; regularisation is part of every space.

    With `size`, ranges that only make sense on more rows are cut to the data (leaf sizes).
    """
    clf = task == "classification"
    if family == "linear":
        return {
            "alpha": FloatRange(1e-6, 1e-1) if clf else FloatRange(1e-4, 1e1),
            "l1_ratio": Choice((0.0, 0.5, 1.0) if clf else (0.1, 0.5, 0.9)),
        }
    if family == "tree":
        return {
            "max_depth": IntRange(2, 16),
            "min_samples_leaf": IntRange(1, _leaf_high(100, size, 10), log=True),
        }
    if family == "svm":
        return {"C": FloatRange(1e-2, 1e2), "gamma": Choice(("scale", 0.01, 0.1))}
    if family == "forest":
        return {
            "n_estimators": IntRange(50, 200),
            "max_depth": Choice((6, 12, None)),
            "min_samples_leaf": IntRange(1, _leaf_high(20, size, 20), log=True),
            "max_features": Choice(("sqrt", 0.5)),
        }
    if family == "hgb":
        return {
            "learning_rate": FloatRange(0.03, 0.3),
            "max_leaf_nodes": IntRange(15, 63),
            "l2_regularization": FloatRange(1e-6, 1.0),
            # without early stopping (small data) more rounds only overfit, at a cost per round
            "max_iter": IntRange(50, 150) if _small(size) else IntRange(100, 300),
        }
    if family in BOOSTERS:
        return booster_space(family, size)
    if family == "deep":
        return deep_space()
    if family == "mlp":
        return {
            "hidden_layer_sizes": Choice(((32,), (64,), (64, 32))),
            "alpha": FloatRange(1e-5, 1e-1),
            "learning_rate_init": FloatRange(1e-3, 1e-2),
        }
    raise ValueError(f"unknown model family {family!r}")


def default_params(family: str, task: str, space: Space) -> dict[str, Any]:
    """The family's untuned configuration (the library's defaults, the plain preprocessing):
    the search's first trial, so that it never ends below it."""
    defaults: dict[str, dict[str, Any]] = {
        "linear": {"alpha": 1e-4, "l1_ratio": 0.15}
        if task == "classification"
        else {"alpha": 0.01, "l1_ratio": 0.5},
        "svm": {"C": 1.0, "gamma": "scale"},
        # exactly HistGradientBoosting*(): early stopping only above 10,000 rows
        "hgb": {"early_stopping": "auto"},
        # core.deep's own defaults, spelled out (the manifest then names them)
        "deep": {
            "hidden_units": 64,
            "depth": 2,
            "dropout": 0.2,
            "weight_decay": 1e-4,
            "learning_rate": 3e-3,
        },
    }
    model = defaults.get(family, {})
    pre: dict[str, Any] = {"pre_interactions": False, "pre_pca": None, "pre_categories": None}
    scalers = space.get("pre_scaler")
    if isinstance(scalers, Choice):
        pre["pre_scaler"] = "standard" if "standard" in scalers.values else scalers.values[0]
    categories = space.get("pre_categories")
    if isinstance(categories, Choice):  # measured (docs/benchmarks.md): native by default only
        # for XGBoost; HGB's and LightGBM's defaults lose with it on gapminder
        only = len(categories.values) == 1
        native = "native" in categories.values and (family == "xgboost" or only)
        pre["pre_categories"] = "native" if native else "ordinal"
        if native and "min_data_per_group" in space:  # LightGBM's own defaults (100 rows a
            # group, smoothing 10) forbid the small groups native splits need
            model = {**model, **LIGHTGBM_SMALL_GROUPS}
    return {**{k: v for k, v in pre.items() if k in space}, **model}


def calibration_folds(size: DataSize | None, folds: int = 3) -> int:
    """Folds for CalibratedClassifierCV: `folds`, but no more than the rarest class has rows
    (scikit-learn refuses more folds than a class has members); at least 2."""
    if size is None or size.smallest_class is None:
        return folds
    return max(2, min(folds, size.smallest_class))


def calibrated(est: Any, method: str, size: DataSize | None = None) -> CalibratedClassifierCV:
    """`est` calibrated by `method` (sigmoid or isotonic) with folds sized to the data."""
    return CalibratedClassifierCV(est, method=method, cv=calibration_folds(size))


def make_estimator(
    family: str, task: str, params: dict[str, Any], seed: int, size: DataSize | None = None
) -> Any:
    """An unfitted estimator of the family with the given hyperparameters.

    With `size` (the rows it will be fitted on), small data gets: no early stopping below
    EARLY_STOPPING_MIN_ROWS (MLP trains up to 1000 epochs instead), HistGradientBoosting leaves
    of at most rows/20, and the svm's Platt-scaling folds capped by the rarest class.
    """
    clf = task == "classification"
    small = _small(size)
    p = dict(params)
    if family == "linear":
        if clf:
            # Logistic loss by SGD: L1, L2 and elastic net at linear cost, and partial_fit later.
            return SGDClassifier(
                loss="log_loss", penalty="elasticnet", max_iter=50, tol=1e-3, random_state=seed, **p
            )
        return ElasticNet(max_iter=5000, random_state=seed, **p)
    if family == "tree":
        cls = DecisionTreeClassifier if clf else DecisionTreeRegressor
        return cls(random_state=seed, **p)
    if family == "svm":
        if clf:  # Platt scaling inside: SVC(probability=True) is deprecated in scikit-learn 1.9
            folds = calibration_folds(size, 5)
            return CalibratedClassifierCV(SVC(random_state=seed, **p), ensemble=False, cv=folds)
        return SVR(**p)
    if family == "forest":
        cls_f = RandomForestClassifier if clf else RandomForestRegressor
        return cls_f(n_jobs=-1, random_state=seed, **p)
    if family == "hgb":
        cls_h = HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor
        if size is not None:
            p.setdefault("min_samples_leaf", _leaf_high(20, size, 20))
        early = p.pop("early_stopping", not small)
        return cls_h(early_stopping=early, random_state=seed, **p)
    if family in BOOSTERS:
        return booster_estimator(family, clf, p, seed, small)
    if family == "deep":
        return deep_estimator(clf, p, seed)
    if family == "mlp":
        cls_m = MLPClassifier if clf else MLPRegressor
        return cls_m(
            early_stopping=not small, max_iter=1000 if small else 300, random_state=seed, **p
        )
    raise ValueError(f"unknown model family {family!r}")


# --- the deep family (issue 20) ---------------------------------------------------------------
DEEP_MAX_EPOCHS = 60


def deep_space() -> Space:
    """The deep family's searched hyperparameters: width, depth, dropout, weight decay, rate."""
    return {
        "hidden_units": Choice((32, 64, 128)),
        "depth": IntRange(1, 3),
        "dropout": FloatRange(0.0, 0.5, log=False),
        "weight_decay": FloatRange(1e-6, 1e-2),
        "learning_rate": FloatRange(1e-3, 3e-2),
    }


def deep_estimator(clf: bool, params: dict[str, Any], seed: int) -> Any:
    """A DeepClassifier or DeepRegressor; build_pipeline sets its `n_categorical`."""
    from core.deep import DeepClassifier, DeepRegressor

    cls = DeepClassifier if clf else DeepRegressor
    return cls(max_epochs=DEEP_MAX_EPOCHS, random_state=seed, **params)


# --- the lightgbm and xgboost families (issue 32) ---------------------------------------------
BOOSTERS = {"lightgbm": "lightgbm", "xgboost": "xgboost"}
"""Family -> the module it needs (and the servewatch extra that installs it, of the same name)."""
BOOSTER_CEILING = 2000
"""Rounds a searched LightGBM or XGBoost configuration may boost: early stopping on a held-out
tenth (core.boosters) finds how many it does (below EARLY_STOPPING_MIN_ROWS rows the rounds are
searched instead)."""


def booster_space(family: str, size: DataSize | None) -> Space:
    """LightGBM's and XGBoost's searched hyperparameters, the ranges their tuning guides name
    (LightGBM "Parameters Tuning", XGBoost "Notes on Parameter Tuning"): learning rate, tree size,
    leaf size, row and column subsampling, L2 regularisation."""
    space: Space = {
        "learning_rate": FloatRange(0.01, 0.3),
        "subsample": FloatRange(0.5, 1.0, log=False),
        "colsample_bytree": FloatRange(0.5, 1.0, log=False),
        "reg_lambda": FloatRange(1e-3, 10.0),
    }
    if family == "lightgbm":
        space["num_leaves"] = IntRange(8, 256, log=True)
        space["min_child_samples"] = IntRange(2, max(5, _leaf_high(100, size, 10)), log=True)
    else:
        space["max_depth"] = IntRange(3, 10)
        space["min_child_weight"] = FloatRange(0.5, 20.0)
    if _small(size):
        space["n_estimators"] = IntRange(50, 300, log=True)
    return space


def booster_estimator(
    family: str, clf: bool, params: dict[str, Any], seed: int, small: bool
) -> Any:
    """A LightGBM or XGBoost estimator stopped early (core.lgbm, core.xgb). The untuned default
    (no parameters) is the library's own: 100 rounds, early stopping only cutting them."""
    p = dict(params)
    p.setdefault("n_estimators", BOOSTER_CEILING if "learning_rate" in p and not small else 100)
    # one thread: OpenMP's spinning threads on a busy machine cost 10-20 times the work (breast
    # cancer: 7-22 s against 0.6-1 s); the service predicts from the compiled trees anyway
    p.setdefault("n_jobs", 1)
    if family == "lightgbm":
        from core.lgbm import LightGBMClassifier, LightGBMRegressor

        if p.get("subsample", 1.0) < 1.0:
            p["subsample_freq"] = 1  # LightGBM bags rows only with a bagging frequency
        lgbm = LightGBMClassifier if clf else LightGBMRegressor
        return lgbm(random_state=seed, verbose=-1, **p)
    from core.xgb import XGBoostClassifier, XGBoostRegressor

    xgb = XGBoostClassifier if clf else XGBoostRegressor
    return xgb(random_state=seed, **p)


def unavailable(family: str) -> str | None:
    """Why a family cannot be tried here (a package missing), or None when it can."""
    if family in BOOSTERS:
        import importlib.util

        module = BOOSTERS[family]
        if importlib.util.find_spec(module) is not None:
            return None
        return (
            f"family {family} skipped: {module} not installed (pip install 'servewatch[{module}]')"
        )
    if family != "deep":
        return None
    from core.deep import INSTALL_HINT, missing_packages

    missing = missing_packages()
    if not missing:
        return None
    return f"family deep skipped: {', '.join(missing)} not installed ({INSTALL_HINT})"
