"""The trees of one or more fitted models as the ONNX TreeEnsemble operator's flat lists.

The shared ground of the compiled path: `compiled.py` writes scikit-learn's trees into an
`Ensemble`, `compiled_boosters.py` LightGBM's and XGBoost's; each model's outputs among the
operator's targets are a `Member`, and a `Builder` writes one model's trees and returns its member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Matrix = np.ndarray[Any, Any]


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
    mode: int = 0  # every split: 0 BRANCH_LEQ (x <= split goes true), 1 BRANCH_LT (XGBoost's x <)

    def add(
        self,
        left: Matrix,
        right: Matrix,
        feature: Matrix,
        threshold: Matrix,
        missing_left: Matrix,
        leaf: Matrix,
        target: int,
    ) -> None:
        """One binary tree (node arrays; a leaf has left == -1), its leaves adding `leaf[node]` to
        output `target`. x <= threshold (x < threshold: `mode` 1) goes left; NaN goes left where
        `missing_left`."""
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
        for node in branches:
            lo, hi = int(left[node]), int(right[node])
            self._branch(
                int(feature[node]),
                float(threshold[node]),
                int(missing_left[node]),
                (int(ids[lo]), int(is_leaf[lo])),
                (int(ids[hi]), int(is_leaf[hi])),
            )
        self.leaf_target += [target] * len(leaves)
        self.leaf_weight += [float(v) for v in leaf[leaves]]

    def _branch(
        self, feat: int, split: float, missing: int, true: tuple[int, int], false: tuple[int, int]
    ) -> None:
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

        node = helper.make_node(
            "TreeEnsemble",
            ["X"],
            ["Y"],
            domain="ai.onnx.ml",
            nodes_featureids=self.feature,
            nodes_splits=numpy_helper.from_array(np.asarray(self.split, dtype=dtype)),
            nodes_modes=numpy_helper.from_array(
                np.full(len(self.feature), self.mode, dtype=np.uint8)
            ),
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
