"""The trees of one or more fitted models as the ONNX TreeEnsemble operator's flat lists.

The shared ground of the compiled path: `compiled.py` writes scikit-learn's trees into an
`Ensemble`, `compiled_boosters.py` LightGBM's and XGBoost's; each model's outputs among the
operator's targets are a `Member`, and a `Builder` writes one model's trees and returns its member.

A categorical split (a set of categories goes one way) is the operator's BRANCH_MEMBER node (mode
6, its set in `membership_values`), which ONNX Runtime compares by equality with the input; where
the library truncates the input to an integer category first (LightGBM, XGBoost), the column is
read through the same truncation (`CODES`) before the session runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Matrix = np.ndarray[Any, Any]
MEMBER = 6  # the operator's BRANCH_MEMBER mode
Sets = dict[int, tuple[Matrix, bool]]
"""Categorical nodes of one tree: node -> (its categories, whether they go left)."""


def _lightgbm_codes(col: Matrix) -> Matrix:
    """LightGBM's category of a float64 value: int(x); NaN, a negative int and what overflows an
    int (read as negative) fit no category and go right."""
    out = np.trunc(col)
    out[~((col > -1.0) & (col < 2.0**31))] = np.nan
    return out


def _xgboost_codes(col: Matrix) -> Matrix:
    """XGBoost's category of a float32 value: int(x); a negative value or one from 2**24 up is
    invalid and goes left, as a category outside the node's set does (-1 here); NaN stays
    missing and takes the node's default side."""
    out = np.trunc(col)
    out[(col < 0) | (col >= 2**24)] = -1
    return out


def _hgb_values(col: Matrix) -> Matrix:
    """HistGradientBoosting's categorical column as it is (its encoder matches values); its
    encoder refuses an infinite one, and so does this."""
    if np.isinf(col).any():
        raise ValueError("Input contains infinity or a value too large for dtype('float64').")
    return col


CODES: dict[str, Callable[[Matrix], Matrix]] = {
    "lightgbm": _lightgbm_codes,
    "xgboost": _xgboost_codes,
    "hgb": _hgb_values,
}
"""How a library reads a categorical column's value as a category (the column rewritten so that
the operator's equality test matches the library's integer test), or refuses it."""


@dataclass
class Ensemble:
    """Trees gathered into the TreeEnsemble operator's flat attribute lists."""

    feature: list[int] = field(default_factory=list)
    split: list[float] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    true_id: list[int] = field(default_factory=list)
    true_leaf: list[int] = field(default_factory=list)
    false_id: list[int] = field(default_factory=list)
    false_leaf: list[int] = field(default_factory=list)
    leaf_target: list[int] = field(default_factory=list)
    leaf_weight: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    mode: int = 0  # every number split: 0 BRANCH_LEQ (x <= split goes true), 1 BRANCH_LT (x <)
    modes: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)  # the sets, each closed by NaN
    codes: dict[int, str] = field(default_factory=dict)  # feature -> how CODES reads it
    numeric: set[int] = field(default_factory=set)  # features some number split compares

    def categorical(self, feature: int, codes: str) -> None:
        """Feature `feature` is categorical, its value read by CODES[codes] (one reading per
        feature)."""
        if self.codes.setdefault(feature, codes) != codes:
            raise TypeError("one feature read as two kinds of category")

    def add(
        self,
        left: Matrix,
        right: Matrix,
        feature: Matrix,
        threshold: Matrix,
        missing_left: Matrix,
        leaf: Matrix,
        target: int,
        sets: Sets | None = None,
    ) -> None:
        """One binary tree (node arrays; a leaf has left == -1), its leaves adding `leaf[node]` to
        output `target`. x <= threshold (x < threshold: `mode` 1) goes left; NaN goes left where
        `missing_left`. A node in `sets` tests membership instead: x in its categories goes left
        (or right, as its flag says), NaN still as `missing_left`."""
        is_leaf = left < 0
        if is_leaf[0]:  # a one-leaf tree: the operator needs a branch; both sides the same leaf
            lid = len(self.leaf_weight)
            self.leaf_target.append(target)
            self.leaf_weight.append(float(leaf[0]))
            self.roots.append(len(self.feature))
            self._branch(0, 0.0, 1, (lid, 1), (lid, 1))
            return
        ids = np.zeros(len(left), dtype=np.int64)
        branches, leaves = np.flatnonzero(~is_leaf), np.flatnonzero(is_leaf)
        ids[branches] = len(self.feature) + np.arange(len(branches))
        ids[leaves] = len(self.leaf_weight) + np.arange(len(leaves))
        self.roots.append(int(ids[0]))
        sets = sets or {}
        for node in branches:
            lo, hi = int(left[node]), int(right[node])
            true, false = (int(ids[lo]), int(is_leaf[lo])), (int(ids[hi]), int(is_leaf[hi]))
            missing, feat = int(missing_left[node]), int(feature[node])
            found = sets.get(int(node))
            if found is None:
                self.numeric.add(feat)
                self._branch(feat, float(threshold[node]), missing, true, false)
                continue
            values, in_goes_left = found
            if not in_goes_left:  # the set's side is the operator's true side
                true, false, missing = false, true, 1 - missing
            self._branch(feat, 0.0, missing, true, false, values)
        self.leaf_target += [target] * len(leaves)
        self.leaf_weight += [float(v) for v in leaf[leaves]]

    def _branch(
        self,
        feat: int,
        split: float,
        missing: int,
        true: tuple[int, int],
        false: tuple[int, int],
        members: Matrix | None = None,
    ) -> None:
        if members is None:
            self.modes.append(self.mode)
        else:  # an empty set (a side without categories) is not a split a library learns
            if not len(members) or np.isnan(members).any():
                raise TypeError("an empty category set or NaN among the categories")
            self.modes.append(MEMBER)
            self.members += [float(v) for v in members] + [float("nan")]
        self.feature.append(feat)
        self.split.append(split)
        self.missing_true.append(missing)
        self.true_id.append(true[0])
        self.true_leaf.append(true[1])
        self.false_id.append(false[0])
        self.false_leaf.append(false[1])

    def constant(self, value: float, target: int) -> None:
        """A one-leaf tree adding `value` to `target`: a start value summed first, in order."""
        one = np.array([-1])
        self.add(one, one, one, one, one, np.array([value]), target)

    def session(self, n_features: int, n_targets: int, *, float32: bool = False) -> Any:
        """An ONNX Runtime session summing the leaves per target, tree by tree in order: float64
        in and out, or float32 throughout (`float32`: splits, leaves and the sums, as XGBoost)."""
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        dtype: Any = np.float32 if float32 else np.float64
        elem = TensorProto.FLOAT if float32 else TensorProto.DOUBLE

        sets: dict[str, Any] = {}
        if self.members:
            values = np.asarray(self.members, dtype=dtype)
            sets["membership_values"] = numpy_helper.from_array(values)
        node = helper.make_node(
            "TreeEnsemble",
            ["X"],
            ["Y"],
            domain="ai.onnx.ml",
            nodes_featureids=self.feature,
            nodes_splits=numpy_helper.from_array(np.asarray(self.split, dtype=dtype)),
            nodes_modes=numpy_helper.from_array(np.asarray(self.modes, dtype=np.uint8)),
            nodes_truenodeids=self.true_id,
            nodes_trueleafs=self.true_leaf,
            nodes_falsenodeids=self.false_id,
            nodes_falseleafs=self.false_leaf,
            nodes_missing_value_tracks_true=self.missing_true,
            leaf_targetids=self.leaf_target,
            leaf_weights=numpy_helper.from_array(np.asarray(self.leaf_weight, dtype=dtype)),
            tree_roots=self.roots,
            aggregate_function=1,  # SUM
            post_transform=0,  # NONE
            n_targets=n_targets,
            **sets,
        )
        graph = helper.make_graph(
            [node],
            "servewatch-trees",
            [helper.make_tensor_value_info("X", elem, [None, n_features])],
            [helper.make_tensor_value_info("Y", elem, [None, n_targets])],
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
        )
        options = ort.SessionOptions()
        # One thread per call: the service scales by workers and micro-batches.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )


@dataclass
class Member:
    """One tree model's outputs among the ensemble's targets."""

    offset: int
    n_targets: int
    n_classes: int  # 0: regression
    baseline: Matrix | None  # boosting's start; None: a forest (or tree), averaged
    n_trees: int
    # LightGBM, XGBoost: raw scores -> probabilities as the library computes them
    link: Callable[[Matrix], Matrix] | None = None


Builder = Callable[[Any, Ensemble, int], Member]
