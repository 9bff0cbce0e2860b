"""The reference model: the 784-300-50-50-50-50-10 ReLU MLP of the TF1 transfer-learning write-up.

Built exactly as TF1 code with ``tf.layers.dense`` built it (layers under name scope ``dnn``,
placeholders ``X`` and ``y``), with the collections the write-up saves: ``inputs``, ``labels``,
``hiddens1``..``hiddens5``, ``logits``. Used by the demo's base step and by the test fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layers import DenseSpec, dense

__all__ = ["MLP", "build_mlp"]


@dataclass
class MLP:
    """The tensors of a built MLP."""

    graph: object
    inputs: object
    labels: object
    hiddens: list
    logits: object


def build_mlp(graph, n_inputs: int = 784, hidden: tuple[int, ...] = (300, 50, 50, 50, 50),
              n_outputs: int = 10, name_scope: str = "dnn") -> MLP:
    """Build the MLP in ``graph`` and fill its collections.

    Variables are ``hidden1/kernel`` .. ``hidden5/bias``, ``logits/kernel``, ``logits/bias``;
    ops ``dnn/hidden1/Relu`` .. ``dnn/logits/BiasAdd``.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    with graph.as_default():
        x = tf1.placeholder(tf1.float32, shape=(None, n_inputs), name="X")
        y = tf1.placeholder(tf1.int32, shape=(None,), name="y")
        hiddens = []
        with tf1.name_scope(name_scope):
            out = x
            for i, units in enumerate(hidden, start=1):
                out = dense(out, DenseSpec(f"hidden{i}", units, "relu"))
                hiddens.append(out)
            logits = dense(out, DenseSpec("logits", n_outputs))
        tf1.add_to_collection("inputs", x)
        tf1.add_to_collection("labels", y)
        for i, h in enumerate(hiddens, start=1):
            tf1.add_to_collection(f"hiddens{i}", h)
        tf1.add_to_collection("logits", logits)
    return MLP(graph, x, y, hiddens, logits)
