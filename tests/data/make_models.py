"""Builds the small ONNX models the Rust tests load: one valid logistic model, broken ones for
start-up checks, and a one-split tree whose reason codes can be worked out by hand.

Run from the repository root with the project venv: .tools/venv/bin/python tests/data/make_models.py
The outputs are committed; this script documents how they were made.
"""
import json
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))

# score = sigmoid(W . x + B): the Rust test recomputes this by hand.
WEIGHTS = [0.01, 0.5, -1.0]
BIAS = -2.0


def logistic(features, width, path, meta=True, sigmoid=True):
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [width, 1], (WEIGHTS * width)[:width])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [BIAS])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        # Without the sigmoid the "probability" is the raw margin: a model a reload must refuse.
        helper.make_node("Sigmoid" if sigmoid else "Identity", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(nodes, "logistic", [x], [y], [w, b, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(
            model,
            {"fraudscore.features": json.dumps(features), "fraudscore.model_version": "tiny-logistic-1"},
        )
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, path))


logistic(["amount", "customer_tx_count_1h", "is_weekend"], 3, "tiny.onnx")
logistic(["amount", "terminal_risk_7d", "is_weekend"], 3, "unknown_feature.onnx")
logistic(["amount", "is_weekend"], 3, "wrong_width.onnx")
logistic(["amount", "customer_tx_count_1h", "is_weekend"], 3, "no_features.onnx", meta=False)
logistic(["amount", "customer_tx_count_1h", "is_weekend"], 3, "raw_margin.onnx", sigmoid=False)


# One split, amount <= 5: leaf -1.0 for 30 training rows, else leaf 2.0 for 10. The bias is
# (-1.0 * 30 + 2.0 * 10) / 40 = -0.25, so amount 7 contributes 2.0 + 0.25 = 2.25.
def stump(path, covers, through_identity=False):
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    # With a step before the trees, their inputs are not the model's: no reason codes, but it scores.
    first = [helper.make_node("Identity", ["features"], ["copied"])] if through_identity else []
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["copied" if through_identity else "features"], ["label", "probabilities"], domain="ai.onnx.ml",
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
        nodes_values=[5.0, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        nodes_missing_value_tracks_true=[0, 0, 0],
        class_treeids=[0, 0], class_nodeids=[1, 2], class_ids=[0, 0], class_weights=[-1.0, 2.0],
        classlabels_int64s=[0, 1], post_transform="LOGISTIC",
    )
    graph = helper.make_graph(first + [tree], "stump", [x], [label, y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    helper.set_model_props(model, {
        "fraudscore.features": json.dumps(["amount", "customer_tx_count_1h", "is_weekend"]),
        "fraudscore.model_version": "stump-1",
        "fraudscore.tree_covers": json.dumps({"trees": [covers]}),
    })
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, path))


stump("stump.onnx", [40, 30, 10])
stump("bad_covers.onnx", [40, 30, 5])  # the children's covers do not add up to the root's
stump("stump_after_identity.onnx", [40, 30, 10], through_identity=True)
