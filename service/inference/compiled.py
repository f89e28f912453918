"""Tree models compiled for ONNX Runtime: scikit-learn's fitted trees as one TreeEnsemble op.

scikit-learn walks a forest tree by tree in Python (about 5-7 ms for one row of a 100-tree
forest); ONNX Runtime walks the same trees in C++ in microseconds. The fitted trees are written
into ONNX's own `ai.onnx.ml` TreeEnsemble operator (opset 5) with `onnx.helper`, in float64, so
every split compares what scikit-learn compares:

- DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*: scikit-learn casts the input to
  float32 before the walk; so does `CompiledTrees` (then back to float64 for the op), and an
  input that overflows float32 is refused as scikit-learn refuses it.
- HistGradientBoosting*: float64 input against float64 thresholds, NaN sent the way each split
  learned; a categorical split (a bitset of its own codes) tests set membership on the input
  values those codes stand for, a value it never saw going the missing way, as in scikit-learn.

skl2onnx was measured first (docs/benchmarks.md): it converts the first four (in float32, which
scikit-learn's own float32 walk matches) but fails on HistGradientBoosting with scikit-learn 1.9
and converts HGB's float64 thresholds to float32 (rows near a split change side); one converter
of our own for all five, on the documented operator, is simpler and exact. Treelite's GTIL
predictor was 8-10x slower than ONNX Runtime on the same forest.

The leaves carry raw scores; the link (average, sigmoid, softmax) is applied here with numpy as
scikit-learn applies it. `from_estimator` returns None for anything else (LightGBM, XGBoost,
multi-output trees, custom `init` estimators) or when onnxruntime is not installed. Equality
with scikit-learn is checked when a version loads (service/inference/model.py).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from service.inference import compiled_boosters
from service.inference.trees import CODES, Builder, Ensemble, Matrix, Member, Sets

# The `fast` extra; without it every tree model runs on scikit-learn (and says so). Imported
# only when a tree model is compiled (about 0.4 s): a service of linear models never pays it.
AVAILABLE = find_spec("onnxruntime") is not None and find_spec("onnx") is not None

FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
SINGLE = (DecisionTreeClassifier, DecisionTreeRegressor)
GB = (GradientBoostingClassifier, GradientBoostingRegressor)
HGB = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)


def _sklearn_tree(ens: Ensemble, tree: Any, leaf: Matrix, target: int) -> None:
    missing = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=np.uint8))
    ens.add(
        tree.children_left,
        tree.children_right,
        tree.feature,
        tree.threshold,
        missing,
        leaf,
        target,
    )


def _tree_leaves(est: Any, n_classes: int) -> list[tuple[Matrix, int]]:
    """A fitted DecisionTree's leaf outputs per target: class shares (the positive class only
    when binary) or the regression value."""
    tree = est.tree_
    if tree.n_outputs != 1:
        raise TypeError("multi-output tree")
    value = np.asarray(tree.value, dtype=np.float64)[:, 0, :]
    if n_classes == 0:
        return [(value[:, 0], 0)]
    totals = value.sum(axis=1)
    totals[totals == 0] = 1.0
    shares = value / totals[:, None]
    if n_classes == 2:
        return [(shares[:, 1], 0)]
    return [(shares[:, k], k) for k in range(n_classes)]


def _forest(est: Any, ens: Ensemble, offset: int) -> Member:
    """Trees and forests: the trees' class shares or values, summed (divided by their number
    after the sum, as scikit-learn divides)."""
    n_classes = len(est.classes_) if hasattr(est, "classes_") else 0
    trees = est.estimators_ if isinstance(est, FORESTS) else [est]
    for tree in trees:
        for leaf, target in _tree_leaves(tree, n_classes):
            _sklearn_tree(ens, tree.tree_, leaf, offset + target)
    return Member(offset, n_classes if n_classes > 2 else 1, n_classes, None, len(trees))


def _boosting(est: Any, ens: Ensemble, offset: int) -> Member:
    """GradientBoosting: a constant start (a Dummy `init` or zero) plus learning rate x trees."""
    init = est.init_
    if not (init == "zero" or isinstance(init, DummyClassifier | DummyRegressor)):
        raise TypeError("custom init estimator")
    if getattr(est, "loss", "log_loss") == "exponential":
        raise TypeError("loss='exponential'")  # another link (sigmoid of twice the score)
    trees = est.estimators_
    for stage in trees:
        for k, tree in enumerate(stage):
            value = np.asarray(tree.tree_.value, dtype=np.float64)[:, 0, 0]
            _sklearn_tree(ens, tree.tree_, est.learning_rate * value, offset + k)
    zero = np.zeros((1, est.n_features_in_), np.float32)
    baseline = np.asarray(est._raw_predict_init(zero), dtype=np.float64)[0]
    classes = len(est.classes_) if hasattr(est, "classes_") else 0
    return Member(offset, trees.shape[1], classes, baseline, 1)


def _hgb_layout(est: Any) -> tuple[Matrix, list[Matrix]]:
    """HistGradientBoosting's own encoding of categorical features (scikit-learn 1.9: an
    OrdinalEncoder whose output puts them first): each tree feature's input column, and per
    categorical tree feature the input values of its codes (NaN left out: it is missing)."""
    pre = getattr(est, "_preprocessor", None)
    if pre is None:
        return np.arange(est.n_features_in_), []
    is_cat = np.asarray(est.is_categorical_, dtype=bool)
    if pre.output_indices_["encoder"] != slice(0, int(is_cat.sum())):
        raise TypeError("categorical features not first")
    order = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
    categories = []
    for found in pre.named_transformers_["encoder"].categories_:
        values = np.asarray(found, dtype=np.float64)  # strings: ValueError, refused
        categories.append(values[~np.isnan(values)])
    return order, categories


def _hgb_sets(predictor: Any, categories: list[Matrix]) -> Sets:
    """A tree's categorical nodes as input values: the codes going left (NaN and an unknown
    value, which the encoder makes NaN, go the missing way): the left set, or, when missing
    goes left, the known codes going right."""
    nodes, sets = predictor.nodes, Sets()
    bitsets = np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32)
    for node in np.flatnonzero(nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool)):
        values = categories[int(nodes["feature_idx"][node])]
        bits = bitsets[int(nodes["bitset_idx"][node])]
        codes = np.arange(len(values))
        left = (bits[codes // 32] >> (codes % 32).astype(np.uint32)) & 1 == 1
        if nodes["missing_go_to_left"][node]:
            sets[int(node)] = (values[~left], False)
        else:
            sets[int(node)] = (values[left], True)
    return sets


def _hist_boosting(est: Any, ens: Ensemble, offset: int) -> Member:
    """HistGradientBoosting: the baseline plus the trees' raw values per class; a categorical
    split tests the input's value against the categories' own values (see `_hgb_sets`)."""
    if not hasattr(est, "classes_") and getattr(est, "loss", "squared_error") not in (
        "squared_error",
        "absolute_error",
        "quantile",
    ):
        raise TypeError(f"loss={est.loss!r}")  # poisson, gamma: another inverse link
    order, categories = _hgb_layout(est)
    for feature in order[: len(categories)]:
        ens.categorical(int(feature), "hgb")
    iterations = est._predictors
    for iteration in iterations:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            is_leaf = nodes["is_leaf"].astype(bool)
            ens.add(
                np.where(is_leaf, -1, nodes["left"].astype(np.int64)),
                nodes["right"].astype(np.int64),
                order[nodes["feature_idx"]],
                nodes["num_threshold"],
                nodes["missing_go_to_left"],
                nodes["value"],
                offset + k,
                _hgb_sets(predictor, categories) if categories else None,
            )
    baseline = np.ravel(np.asarray(est._baseline_prediction, dtype=np.float64))
    classes = len(est.classes_) if hasattr(est, "classes_") else 0
    return Member(offset, len(iterations[0]), classes, baseline, 1)


def _builder(est: Any) -> tuple[Builder, str] | None:
    """How a model's trees are written, and how its input is read: "float32" (scikit-learn's
    trees: rounded to float32, compared in float64), "float64" (HGB, LightGBM) or "xgboost"
    (float32 throughout, `<` splits)."""
    if isinstance(est, FORESTS + SINGLE):
        return _forest, "float32"
    if isinstance(est, GB):
        return _boosting, "float32"
    if isinstance(est, HGB):
        return _hist_boosting, "float64"
    return compiled_boosters.builder(est)  # LightGBM's and XGBoost's dumped trees


def available() -> bool:
    """Whether onnxruntime (the `fast` extra) is installed."""
    return AVAILABLE


def is_tree_model(est: Any) -> bool:
    """A tree model this module compiles, plain or inside CalibratedClassifierCV."""
    inner = getattr(est, "calibrated_classifiers_", None)
    if inner:
        return all(is_tree_model(cc.estimator) for cc in inner)
    if isinstance(est, FORESTS + SINGLE + GB + HGB):
        return True
    from core.ecosystem import is_boosted_trees

    return is_boosted_trees(est)


class CompiledTrees:
    """Fitted tree models' predict_proba / predict / response through ONNX Runtime.

    Forests (and single trees) average their trees' class shares or values; boosting sums raw
    scores, adds its baseline and applies scikit-learn's link: the sigmoid of the one score
    (binary) or the softmax (multi-class). Several models of one kind (the members of a
    CalibratedClassifierCV) share one session, their outputs side by side: one call for all."""

    def __init__(self, estimators: list[Any]) -> None:
        first = estimators[0]
        self.n_features = int(first.n_features_in_)
        found = _builder(first)
        if found is None:
            raise TypeError(type(first).__name__)
        # scikit-learn's own trees read float32; HistGradientBoosting and LightGBM float64;
        # XGBoost float32 and sums in float32.
        self._reads = found[1]
        ens = Ensemble(mode=1 if self._reads == "xgboost" else 0)
        self.members: list[Member] = []
        for est in estimators:
            build = _builder(est)
            if build is None or build[1] != self._reads:
                raise TypeError(type(est).__name__)
            if int(est.n_features_in_) != self.n_features:
                raise ValueError("members read different features")
            offset = sum(m.n_targets for m in self.members)
            self.members.append(build[0](est, ens, offset))
        if self._reads == "xgboost" and len(self.members) > 1:
            raise TypeError("XGBoost models as calibration members")
        self.n_classes = self.members[0].n_classes
        if set(ens.codes) & ens.numeric:  # its values rewritten as categories for every split
            raise TypeError("a feature split both as categories and as a number")
        self._codes = [(feature, CODES[kind]) for feature, kind in sorted(ens.codes.items())]
        self._session = ens.session(
            self.n_features,
            sum(m.n_targets for m in self.members),
            float32=self._reads == "xgboost",
        )

    @classmethod
    def from_estimator(cls, est: Any) -> CompiledTrees | None:
        """Compiled, or None: not a tree model this module knows, or onnxruntime missing."""
        return cls.from_estimators([est])

    @classmethod
    def from_estimators(cls, estimators: list[Any]) -> CompiledTrees | None:
        """Models of one kind in one session (`responses` answers for each), or None."""
        if not AVAILABLE or not estimators:
            return None
        try:
            return cls(estimators)
        except (TypeError, AttributeError, ValueError, IndexError):
            return None

    def _run(self, x: Matrix) -> Matrix:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got shape {x.shape}")
        if self._reads != "float64":  # scikit-learn's trees and XGBoost read float32
            with np.errstate(over="ignore"):
                x32 = x.astype(np.float32)
            if self._reads == "xgboost":  # which sends what overflows float32 as infinity
                x32 = self._categories(x32)
                return np.asarray(self._session.run(None, {"X": x32})[0], dtype=np.float64)
            if np.isinf(x32).any():  # scikit-learn's trees refuse it
                raise ValueError("Input contains infinity or a value too large for float32.")
            x = x32.astype(np.float64)
        x = self._categories(x)
        return np.asarray(self._session.run(None, {"X": np.ascontiguousarray(x)})[0])

    def _categories(self, x: Matrix) -> Matrix:
        """`x` with its categorical columns read as the library reads a category (a copy)."""
        if not self._codes:
            return x
        x = x.copy()
        for feature, read in self._codes:
            x[:, feature] = read(x[:, feature])
        return x

    @staticmethod
    def _raw(member: Member, out: Matrix) -> Matrix:
        """A member's columns: per row and target, the leaves' average (forests) or sum plus
        the baseline (boosting)."""
        raw = out[:, member.offset : member.offset + member.n_targets]
        if member.baseline is None:
            return raw / member.n_trees if member.n_trees > 1 else raw
        return raw + member.baseline

    @classmethod
    def _proba(cls, member: Member, out: Matrix) -> Matrix:
        raw = cls._raw(member, out)
        if member.link is not None:
            return member.link(raw)
        if member.baseline is not None:  # boosting: the link
            if raw.shape[1] > 1:
                return softmax(raw, axis=1)  # type: ignore[no-any-return]
            raw = expit(raw)
        if raw.shape[1] == 1:  # binary: the positive class's probability
            return np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
        return raw

    def raw(self, x: Matrix) -> Matrix:
        """The first model's raw outputs (see `_raw`)."""
        return self._raw(self.members[0], self._run(x))

    def predict(self, x: Matrix) -> Matrix:
        """Regression values (the first model's)."""
        return self.raw(x)[:, 0]

    def predict_proba(self, x: Matrix) -> Matrix:
        """Class probabilities (the first model's)."""
        return self._proba(self.members[0], self._run(x))

    def binary_responses(self) -> Callable[[Matrix], Matrix] | None:
        """x -> every member's response as one column each (n rows x members), in one
        vectorised step, when every member is a binary classifier without a link of its own
        (what `responses` answers for each, as a matrix); None otherwise."""
        members = self.members
        if not all(m.n_targets == 1 and m.n_classes == 2 and m.link is None for m in members):
            return None
        cols = np.array([m.offset for m in members])
        divide = np.array([float(m.n_trees if m.baseline is None else 1) for m in members])
        add = np.array([0.0 if m.baseline is None else float(m.baseline[0]) for m in members])

        def responses(x: Matrix) -> Matrix:
            return self._run(x)[:, cols] / divide + add  # type: ignore[no-any-return]

        return responses

    def responses(self, x: Matrix) -> list[Matrix]:
        """Per model, what CalibratedClassifierCV calibrates: boosting's decision function (raw
        scores), a forest's probabilities; one column (1-D) when binary. One session call."""
        out = self._run(x)
        found = []
        for member in self.members:
            if member.n_targets == 1 and member.n_classes:  # binary: one column, read directly
                column = out[:, member.offset]
                if member.baseline is None:
                    found.append(column / member.n_trees if member.n_trees > 1 else column)
                else:
                    found.append(column + member.baseline[0])
            elif member.baseline is not None:
                raw = self._raw(member, out)
                found.append(raw[:, 0] if raw.shape[1] == 1 else raw)
            else:
                proba = self._proba(member, out)
                found.append(proba[:, 1] if proba.shape[1] == 2 else proba)
        return found


def reads_float32(est: Any) -> bool:
    """A tree model that reads its input as float32 and refuses a number beyond its range
    (scikit-learn's trees, forests and gradient boosting), plain or calibrated (XGBoost reads
    such a number as infinity; HistGradientBoosting and LightGBM read float64)."""
    inner = getattr(est, "calibrated_classifiers_", None)
    if inner:
        return any(reads_float32(cc.estimator) for cc in inner)
    if not is_tree_model(est):
        return False
    found = _builder(est)
    return found is not None and found[1] == "float32"
