"""LightGBM's and XGBoost's trees, read from their own dumps, into the compiled TreeEnsemble.

- LightGBM (`booster_.dump_model()`): float64 input against float64 thresholds, `x <= t` goes
  left, NaN the learned way (missing type NaN) or as 0.0 (missing type None); the trees' leaf
  values summed in float64 in tree order, as LightGBM sums them; its sigmoid or softmax applied
  here in float64 as LightGBM computes them.
- XGBoost (`get_booster().save_raw("json")`): the input rounded to float32, `x < t` goes left,
  NaN to the learned side; the start value (base_score as a margin) summed first and the trees
  after it in float32, the order and precision of XGBoost's own predictor, so the margins are
  bit for bit XGBoost's; its float32 sigmoid and softmax repeated step by step.

A categorical split is a set-membership node (service/inference/trees.py): LightGBM sends the
categories of its "==" threshold ("1||3||5") left, int(x) being x's category and NaN or a negative
one going right; XGBoost (split_type 1) sends the categories it lists right, int(x) of the
float32 value being its category, NaN its default side, a negative one or one past 2**24 left.

Refused (None: the model stays on its library, and says so): categories re-coded from a pandas
data frame's (LightGBM's `pandas_categorical`, XGBoost's stored categories), LightGBM's
zero-as-missing, linear trees, random-forest mode and other objectives than regression, binary
and multi-class softmax; XGBoost's dart and linear boosters, multi-output trees, a `missing`
other than NaN, and other objectives than squared error, binary logistic and multi-class
softprob. Equality with the library is checked when a version loads, as for every tree model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from typing import Any

import numpy as np

from core.ecosystem import is_lightgbm, is_xgboost
from service.inference.trees import Builder, Ensemble, Matrix, Member, Sets


def _libm() -> Any:
    """The C library's expf, which XGBoost calls (not always correctly rounded: numpy's own
    float32 exp, or float64 exp rounded, answer another float32 now and then)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        lib.expf.restype, lib.expf.argtypes = ctypes.c_float, [ctypes.c_float]
        return lib.expf
    except (OSError, AttributeError):
        return None


_EXPF = _libm()


def _expf(x: Matrix) -> Matrix:
    """float32 exp as XGBoost computes it (the C library's expf, element by element)."""
    if _EXPF is None:  # the correctly rounded value; the load-time check decides
        return np.exp(x.astype(np.float64)).astype(np.float32)
    flat = [_EXPF(v) for v in x.ravel().tolist()]
    return np.asarray(flat, dtype=np.float32).reshape(x.shape)


LGBM_IDENTITY = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
XGB_IDENTITY = ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror")


def builder(est: Any) -> tuple[Builder, str] | None:
    """The builder for a LightGBM or XGBoost scikit-learn estimator, or None."""
    if is_lightgbm(est) and hasattr(est, "booster_"):
        return _lightgbm, "float64"
    if is_xgboost(est) and hasattr(est, "get_booster"):
        return _xgboost, "xgboost"
    return None


def _flatten_lightgbm(root: dict[str, Any]) -> dict[str, Any]:
    """One dumped LightGBM tree (nested dicts) as node arrays, the root first, and its
    categorical ("==") nodes' sets, the categories going left."""
    nodes: list[dict[str, Any]] = []
    left: list[int] = []
    right: list[int] = []
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, False)]
    while stack:
        node, parent, is_right = stack.pop()
        idx = len(nodes)
        nodes.append(node)
        left.append(-1)
        right.append(-1)
        if parent >= 0:
            (right if is_right else left)[parent] = idx
        if "split_feature" in node:
            if node.get("decision_type") not in ("<=", "=="):
                raise TypeError(f"decision type {node.get('decision_type')!r}")
            stack.append((node["right_child"], idx, True))
            stack.append((node["left_child"], idx, False))
    feature = np.array([n.get("split_feature", 0) for n in nodes], dtype=np.int64)
    threshold = np.zeros(len(nodes), dtype=np.float64)
    missing_left = np.zeros(len(nodes), dtype=np.int64)
    sets: Sets = {}
    for i, n in enumerate(nodes):
        if "split_feature" not in n:
            continue
        if n["decision_type"] == "==":  # NaN, like any value read as no category, goes right
            cats = np.array([float(c) for c in str(n["threshold"]).split("||")])
            sets[i] = (cats, True)
            continue
        threshold[i] = n["threshold"]
        kind = n.get("missing_type", "None")
        if kind == "NaN":
            missing_left[i] = int(bool(n["default_left"]))
        elif kind == "None":  # NaN is read as 0.0
            missing_left[i] = int(0.0 <= threshold[i])
        else:  # "Zero": zero itself goes the default way; not one comparison
            raise TypeError("zero_as_missing")
    leaf = np.array([n.get("leaf_value", 0.0) for n in nodes], dtype=np.float64)
    return {
        "left": np.array(left, dtype=np.int64),
        "right": np.array(right, dtype=np.int64),
        "feature": feature,
        "threshold": threshold,
        "missing_left": missing_left,
        "leaf": leaf,
        "sets": sets,
    }


def _lgbm_softmax(raw: Matrix) -> Matrix:
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def _lightgbm(est: Any, ens: Ensemble, offset: int) -> Member:
    """LightGBM: the raw score is the sum of the trees' leaves (its start folded into the
    first trees); binary: 1 / (1 + exp(-sigmoid x raw)), multi-class: softmax."""
    dump = est.booster_.dump_model()
    if dump.get("average_output"):
        raise TypeError("random-forest mode")
    if est.booster_.pandas_categorical:  # its input's categories re-coded from a data frame's
        raise TypeError("pandas categories")
    if est.booster_.params.get("linear_tree"):
        raise TypeError("linear trees")
    objective = str(dump["objective"]).split()
    per_iteration = int(dump["num_tree_per_iteration"])
    classes = len(est.classes_) if hasattr(est, "classes_") else 0
    for k, info in enumerate(dump["tree_info"]):
        tree = _flatten_lightgbm(info["tree_structure"])
        ens.add(
            tree["left"],
            tree["right"],
            tree["feature"],
            tree["threshold"],
            tree["missing_left"],
            tree["leaf"],
            offset + k % per_iteration,
            tree["sets"],
        )
        for node in tree["sets"]:
            ens.categorical(int(tree["feature"][node]), "lightgbm")
    link: Any
    if objective[0] == "binary" and classes == 2 and per_iteration == 1:
        scale = float(objective[1].split(":")[1]) if len(objective) > 1 else 1.0

        def link(raw: Matrix) -> Matrix:
            p1 = 1.0 / (1.0 + np.exp(-scale * raw[:, 0]))
            return np.column_stack([1.0 - p1, p1])

    elif objective[0] == "multiclass" and classes == per_iteration > 2:
        link = _lgbm_softmax
    elif objective[0] in LGBM_IDENTITY and classes == 0 and per_iteration == 1:
        link = None
    else:
        raise TypeError(f"objective {dump['objective']!r}")
    return Member(offset, per_iteration, classes, np.zeros(per_iteration), 1, link)


def _xgb_sigmoid(raw: Matrix) -> Matrix:
    """XGBoost's float32 sigmoid: 1 / (expf(min(-x, 88.7)) + 1), each step in float32."""
    x = np.minimum(-raw[:, 0].astype(np.float32), np.float32(88.7))
    e = _expf(x)
    p1 = np.float32(1.0) / (e + np.float32(1.0))
    return np.column_stack([np.float32(1.0) - p1, p1]).astype(np.float64)


def _xgb_softmax(raw: Matrix) -> Matrix:
    """XGBoost's float32 softmax: expf(x - max) per class, their sum in float64, each divided
    by that sum rounded to float32."""
    x = raw.astype(np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    e = _expf(shifted)
    total = np.zeros(len(x), dtype=np.float64)
    for k in range(e.shape[1]):  # in class order, as XGBoost adds them
        total += e[:, k]
    return (e / total.astype(np.float32)[:, None]).astype(np.float64)


def _xgb_margin(base: float, objective: str) -> np.float32:
    """base_score as the margin XGBoost starts from: -logf(1/p - 1) for the logistic."""
    p = np.float32(base)
    if objective == "binary:logistic":
        q = np.float32(np.float32(1.0) / p) - np.float32(1.0)
        return np.float32(-np.log(np.float64(q)))
    return p


def _xgb_sets(tree: dict[str, Any]) -> Sets:
    """A tree's categorical nodes (split_type 1): the categories listed go right."""
    if not any(tree.get("split_type") or []):
        return {}
    cats = np.asarray(tree["categories"], dtype=np.float64)
    starts, sizes = tree["categories_segments"], tree["categories_sizes"]
    return {
        int(node): (cats[int(start) : int(start) + int(size)], False)
        for node, start, size in zip(tree["categories_nodes"], starts, sizes, strict=True)
    }


def _xgboost(est: Any, ens: Ensemble, offset: int) -> Member:
    """XGBoost gbtree: base margin + the trees of the iterations predict_proba uses."""
    missing = getattr(est, "missing", np.nan)
    if not (missing is None or (isinstance(missing, float) and np.isnan(missing))):
        raise TypeError("missing is not NaN")
    model = json.loads(est.get_booster().save_raw("json"))["learner"]
    booster = model["gradient_booster"]
    if booster["name"] != "gbtree":
        raise TypeError(f"booster {booster['name']!r}")
    objective = model["objective"]["name"]
    params = model["learner_model_param"]
    classes = len(est.classes_) if hasattr(est, "classes_") else 0
    n_targets = max(1, int(params["num_class"]))
    if int(params.get("num_target", "1")) != 1:
        raise TypeError("multi-target model")
    if objective == "binary:logistic" and classes == 2 and n_targets == 1:
        link: Any = _xgb_sigmoid
    elif objective == "multi:softprob" and classes == n_targets > 2:
        link = _xgb_softmax
    elif objective in XGB_IDENTITY and classes == 0 and n_targets == 1:
        link = None
    else:
        raise TypeError(f"objective {objective!r}")
    base = json.loads(params["base_score"])
    bases = [float(b) for b in (base if isinstance(base, list) else [base])]
    if len(bases) == 1:
        bases *= n_targets
    if len(bases) != n_targets:
        raise TypeError("base_score per target")
    for k, b in enumerate(bases):  # summed first, as XGBoost starts from it
        ens.constant(float(_xgb_margin(b, objective)), offset + k)
    trees = booster["model"]["trees"]
    groups = booster["model"]["tree_info"]
    first, last = est._get_iteration_range(None)  # best_iteration when early stopping was used
    indptr = booster["model"].get("iteration_indptr")
    if last > 0 and indptr:
        trees, groups = trees[indptr[first] : indptr[last]], groups[indptr[first] : indptr[last]]
    if any(booster["model"].get("cats", {}).get("enc") or []):
        raise TypeError("categories re-coded from a data frame's")
    for tree, group in zip(trees, groups, strict=True):
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise TypeError("vector leaf")
        left = np.asarray(tree["left_children"], dtype=np.int64)
        values = np.asarray(tree["split_conditions"], dtype=np.float32).astype(np.float64)
        features = np.asarray(tree["split_indices"], dtype=np.int64)
        sets = _xgb_sets(tree)
        ens.add(
            left,
            np.asarray(tree["right_children"], dtype=np.int64),
            features,
            values,
            np.asarray(tree["default_left"], dtype=np.int64),
            values,  # a leaf's value is kept where a branch keeps its split
            offset + int(group),
            sets,
        )
        for node in sets:
            ens.categorical(int(features[node]), "xgboost")
    return Member(offset, n_targets, classes, np.zeros(n_targets), 1, link)
