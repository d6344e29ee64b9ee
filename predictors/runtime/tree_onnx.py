"""scikit-learn's HistGradientBoosting{Classifier,Regressor} -> ONNX in double precision.

skl2onnx writes tree ensembles as ``ai.onnx.ml`` TreeEnsembleRegressor/Classifier, whose
thresholds and outputs are float32: a value between a split threshold and its float32 rounding
goes down the other branch (an off-grid 17.3 scored 2.094 instead of scikit-learn's 2.177).
``ai.onnx.ml`` opset 5's ``TreeEnsemble`` takes double inputs, thresholds and leaf weights, so
ONNX Runtime makes the same comparisons and sums as scikit-learn.

Output layout (what :class:`predictors.runtime.scoring.Scorer` reads): classifiers ``probabilities``
``[N, 2]`` (P(negative), P(positive)), regressors ``variable`` ``[N, 1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSETS = [helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
BRANCH_LEQ = 0  # go to the "true" child when x <= threshold, as scikit-learn's trees do


class _Trees:
    """The flattened arrays of TreeEnsemble: splits and leaves of every tree, in order."""

    def __init__(self) -> None:
        self.roots: list[int] = []
        self.features: list[int] = []
        self.splits: list[float] = []
        self.missing_left: list[int] = []
        self.true_ids: list[int] = []
        self.true_leaf: list[int] = []
        self.false_ids: list[int] = []
        self.false_leaf: list[int] = []
        self.leaf_weights: list[float] = []

    def add(self, nodes: np.ndarray) -> None:
        """One scikit-learn ``TreePredictor.nodes`` array (node 0 is the root)."""
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not converted (the shared transform one-hot encodes)")
        is_leaf = nodes["is_leaf"].astype(bool)
        split_id: dict[int, int] = {}
        leaf_id: dict[int, int] = {}
        for i in range(len(nodes)):
            if is_leaf[i]:
                leaf_id[i] = len(self.leaf_weights) + len(leaf_id)
            else:
                split_id[i] = len(self.features) + len(split_id)
        if is_leaf[0]:  # a single-leaf tree: one split whose both branches reach the leaf
            split_id[-1] = len(self.features)
            self.roots.append(split_id[-1])
            self._split(0, np.inf, True, (leaf_id[0], True), (leaf_id[0], True))
        else:
            self.roots.append(split_id[0])
        for i in range(len(nodes)):
            if is_leaf[i]:
                continue
            node = nodes[i]
            left, right = int(node["left"]), int(node["right"])
            self._split(
                int(node["feature_idx"]),
                float(node["num_threshold"]),
                bool(node["missing_go_to_left"]),
                (leaf_id[left], True) if is_leaf[left] else (split_id[left], False),
                (leaf_id[right], True) if is_leaf[right] else (split_id[right], False),
            )
        self.leaf_weights += [float(nodes[i]["value"]) for i in sorted(leaf_id, key=leaf_id.__getitem__)]

    def _split(
        self, feature: int, threshold: float, missing_left: bool, true: tuple[int, bool], false: tuple[int, bool]
    ) -> None:
        self.features.append(feature)
        self.splits.append(threshold)
        self.missing_left.append(int(missing_left))
        self.true_ids.append(true[0])
        self.true_leaf.append(int(true[1]))
        self.false_ids.append(false[0])
        self.false_leaf.append(int(false[1]))

    def node(self, output: str) -> onnx.NodeProto:
        return helper.make_node(
            "TreeEnsemble",
            ["X"],
            [output],
            domain="ai.onnx.ml",
            aggregate_function=1,  # sum
            n_targets=1,
            post_transform=0,
            tree_roots=self.roots,
            nodes_featureids=self.features,
            nodes_modes=numpy_helper.from_array(np.full(len(self.features), BRANCH_LEQ, dtype=np.uint8)),
            nodes_splits=numpy_helper.from_array(np.asarray(self.splits, dtype=np.float64)),
            nodes_missing_value_tracks_true=self.missing_left,
            nodes_truenodeids=self.true_ids,
            nodes_trueleafs=self.true_leaf,
            nodes_falsenodeids=self.false_ids,
            nodes_falseleafs=self.false_leaf,
            leaf_targetids=[0] * len(self.leaf_weights),
            leaf_weights=numpy_helper.from_array(np.asarray(self.leaf_weights, dtype=np.float64)),
        )


def hist_gradient_boosting_to_onnx(
    estimator: Any,
    width: int,
    *,
    classifier: bool,
    sigmoid: tuple[float, float] | None = None,
    expm1: bool = False,
    offset: int | None = None,
) -> onnx.ModelProto:
    """A fitted binary classifier or regressor on ``width`` double inputs -> an ONNX model.

    ``sigmoid=(a, b)``: the classifier is calibrated (``CalibratedClassifierCV(method="sigmoid")``):
    P(positive) = 1 / (1 + exp(a * raw + b)) on the raw decision value, as scikit-learn computes it.
    ``expm1``: the regressor was fitted on ``log1p`` of the target (``TransformedTargetRegressor``):
    the answer is ``exp(prediction) - 1``.
    ``offset``: the regressor was fitted relative to input column ``offset`` (``OffsetRegressor``):
    that column is added to its prediction (before ``expm1``).
    """
    if classifier and offset is not None:
        raise ValueError("an offset column is for regressors only")
    trees = _Trees()
    for iteration in estimator._predictors:
        if len(iteration) != 1:
            raise ValueError("only binary classification and single-target regression are converted")
        trees.add(iteration[0].nodes)
    baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, 1)
    link = type(estimator._loss.link).__name__
    nodes = [
        trees.node("raw_sum"),
        helper.make_node("Add", ["raw_sum", "baseline"], ["raw"]),
    ]
    constants = [numpy_helper.from_array(baseline, "baseline")]
    if classifier:
        if link != "LogitLink":
            raise ValueError(f"classifier link {link} is not converted")
        constants.append(numpy_helper.from_array(np.ones((1, 1)), "one"))
        logit = "raw"
        if sigmoid is not None:  # expit(-(a * raw + b))
            constants.append(numpy_helper.from_array(np.full((1, 1), -sigmoid[0]), "minus_a"))
            constants.append(numpy_helper.from_array(np.full((1, 1), -sigmoid[1]), "minus_b"))
            nodes += [
                helper.make_node("Mul", ["raw", "minus_a"], ["scaled"]),
                helper.make_node("Add", ["scaled", "minus_b"], ["calibrated"]),
            ]
            logit = "calibrated"
        nodes += [
            helper.make_node("Sigmoid", [logit], ["positive"]),
            helper.make_node("Sub", ["one", "positive"], ["negative"]),
            helper.make_node("Concat", ["negative", "positive"], ["probabilities"], axis=1),
        ]
        output = helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, 2])
    else:
        inverse = {"IdentityLink": "Identity", "LogLink": "Exp"}.get(link)
        if inverse is None:
            raise ValueError(f"regression link {link} is not converted")
        if offset is not None:  # the trees' prediction plus one input column, as OffsetRegressor adds it
            constants.append(numpy_helper.from_array(np.asarray([offset], dtype=np.int64), "offset_column"))
            nodes += [
                helper.make_node(inverse, ["raw"], ["relative"]),
                helper.make_node("Gather", ["X", "offset_column"], ["offset"], axis=1),
                helper.make_node("Add", ["relative", "offset"], ["raw_offset"]),
            ]
            raw, inverse = "raw_offset", "Identity"
        else:
            raw = "raw"
        if expm1:  # ONNX has no Expm1: exp, then minus one (within rounding of numpy's expm1)
            constants.append(numpy_helper.from_array(np.ones((1, 1)), "one"))
            nodes += [
                helper.make_node(inverse, [raw], ["prediction"]),
                helper.make_node("Exp", ["prediction"], ["exp_prediction"]),
                helper.make_node("Sub", ["exp_prediction", "one"], ["variable"]),
            ]
        else:
            nodes.append(helper.make_node(inverse, [raw], ["variable"]))
        output = helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])
    graph = helper.make_graph(
        nodes,
        "hist_gradient_boosting",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, width])],
        [output],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=OPSETS, producer_name="constructos-ml")
    onnx.checker.check_model(model)
    return model
