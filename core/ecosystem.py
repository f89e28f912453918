"""Models from the scikit-learn ecosystem (LightGBM, XGBoost): loading, raw outputs, packages."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import joblib

from core.errors import ServewatchError

# top-level module -> the servewatch extra that installs it
EXTRAS: dict[str, str] = {
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "shap": "explain",
    "torch": "deep",
    "skorch": "deep",
}
# our own and the core stack: never reported as a model's extra requirement
_CORE = {"sklearn", "core", "training", "numpy", "scipy", "pandas", "builtins", "joblib"}


class MissingModelPackage(ServewatchError, ModuleNotFoundError):
    """The pickled model needs a package that is not installed; the message says what to install."""

    def __init__(self, module: str, extra: str | None) -> None:
        self.module, self.extra = module, extra
        if extra is not None:
            hint = f"pip install 'servewatch[{extra}]'"
        else:
            hint = f"install the package that provides {module!r}, as where the model was made"
        super().__init__(
            f"the model needs the Python package {module!r}, which is not installed here: {hint}",
            name=module,
        )


def load_model(path: str | Path) -> Any:
    """joblib.load, with a missing package named (and the extra to install) instead of a bare
    ModuleNotFoundError. Other errors (missing file, corrupt pickle) pass through unchanged."""
    return load_model_bytes(Path(path).read_bytes())


def load_model_bytes(data: bytes) -> Any:
    """`load_model` from bytes already read (and verified) in memory: the file is not reopened,
    so what was hashed is what is unpickled."""
    try:
        return joblib.load(io.BytesIO(data))
    except ModuleNotFoundError as exc:
        named = _named(exc)
        if named is exc:
            raise
        raise named from exc


def _named(exc: ModuleNotFoundError) -> ModuleNotFoundError:
    """The error to raise for a failed import while unpickling: the missing package named."""
    if isinstance(exc, MissingModelPackage) or not exc.name:
        return exc
    root = exc.name.split(".", 1)[0]
    return MissingModelPackage(root, EXTRAS.get(root))


def _root(obj: Any) -> str:
    """The package an object's class comes from; for a subclass of LightGBM's or XGBoost's
    estimators (the lightgbm and xgboost families, core.lgbm and core.xgb), that library."""
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in ("lightgbm", "xgboost"):
            return root
    return type(obj).__module__.split(".", 1)[0]


def is_lightgbm(est: Any) -> bool:
    return _root(est) == "lightgbm"


def is_xgboost(est: Any) -> bool:
    return _root(est) == "xgboost"


def is_boosted_trees(est: Any) -> bool:
    """LightGBM's or XGBoost's scikit-learn estimators (tree boosters, which TreeSHAP explains)."""
    if is_lightgbm(est):
        return True
    if is_xgboost(est):
        return getattr(est, "booster", None) in (None, "gbtree", "dart")
    return False


def raw_output(est: Any, x: Any) -> Any:
    """The margin a LightGBM or XGBoost model sums its trees into (log-odds for binary logistic
    objectives, one column per class for multi-class, the prediction for squared error)."""
    if is_lightgbm(est):
        return est.predict(x, raw_score=True)
    if is_xgboost(est):
        return est.predict(x, output_margin=True)
    raise TypeError(f"{type(est).__name__} is not a LightGBM or XGBoost estimator")


def estimators(model: Any) -> list[Any]:
    """Every estimator object in a model: pipeline steps, column transformers' parts,
    calibrated and meta-estimators' inner estimators (depth-first, the model first)."""
    out: list[Any] = []
    stack = [model]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, str) or any(obj is o for o in out):
            continue
        out.append(obj)
        for _, step in getattr(obj, "steps", []) or []:
            stack.append(step)
        for item in getattr(obj, "transformers_", []) or []:
            stack.append(item[1])
        for cal in getattr(obj, "calibrated_classifiers_", []) or []:
            stack.append(getattr(cal, "estimator", None))
        for attr in ("estimator", "estimator_", "base_estimator", "regressor_"):
            inner = getattr(obj, attr, None)
            if inner is not None and hasattr(inner, "get_params"):
                stack.append(inner)
    return out


def required_packages(model: Any) -> dict[str, str]:
    """Packages outside the core stack the model's objects come from, with installed versions
    (for the manifest: the service needs them to unpickle the model)."""
    found: dict[str, str] = {}
    for obj in estimators(model):
        root = _root(obj)
        if root in _CORE or root in found:
            continue
        module = sys.modules.get(root)  # imported: the model's objects come from it
        found[root] = str(getattr(module, "__version__", "unknown"))
    return found
