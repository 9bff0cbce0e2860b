"""Dense layers built from ``tf.compat.v1`` variables and ops, named as ``tf.layers.dense`` names them.

TensorFlow 2.16+ ships Keras 3, under which ``tf.compat.v1.layers.dense`` no longer exists. This
module rebuilds it without Keras: variables ``<name>/kernel`` (glorot-uniform) and ``<name>/bias``
(zeros) in variable scope ``<name>``, ops ``<name scope>/<name>/MatMul``, ``.../BiasAdd`` and the
activation's op (``.../Relu``), so that checkpoints and graphs match those of TF1 code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = ["ACTIVATIONS", "POOLS", "DenseSpec", "parse_dense", "dense", "pool"]

#: Activation names accepted in ``--dense NAME:UNITS:ACTIVATION``, with their ``tf.nn`` function.
ACTIVATIONS = ("relu", "elu", "selu", "tanh", "sigmoid", "softmax", "leaky_relu", "linear")

#: Ways to turn a feature map (rank 3 or 4) into rows for a dense layer: ``flatten`` keeps every
#: value, ``avg`` and ``max`` pool over the spatial (or time) axes like Keras's
#: ``GlobalAveragePooling2D`` / ``GlobalMaxPooling2D``, keeping one value per channel.
POOLS = ("flatten", "avg", "max")


@dataclass(frozen=True)
class DenseSpec:
    """A dense layer to graft: its name (scope), width and activation (``linear`` for none)."""

    name: str
    units: int
    activation: str = "linear"

    def __str__(self) -> str:
        return f"{self.name}:{self.units}:{self.activation}"


def parse_dense(text: str) -> DenseSpec:
    """Parse ``NAME:UNITS[:ACTIVATION]`` (``hidden4:20:relu``, ``logits:10``).

    Raises:
        UserError: the text does not have that form, or names an unknown activation.
    """
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit() or int(parts[1]) < 1:
        raise UserError(
            f"--dense '{text}' is not NAME:UNITS[:ACTIVATION] (e.g. hidden4:20:relu or logits:10)"
        )
    activation = parts[2] if len(parts) == 3 else "linear"
    if activation not in ACTIVATIONS:
        raise UserError(
            f"--dense '{text}': unknown activation '{activation}'; use one of {', '.join(ACTIVATIONS)}"
        )
    return DenseSpec(parts[0], int(parts[1]), activation)


def dense(inputs, spec: DenseSpec, *, use_resource: bool = False):
    """Apply a dense layer to ``inputs`` (a rank-2 float tensor) in ``inputs.graph``.

    Ops go in the name scope current in that graph (``dnn/hidden1/MatMul`` under
    ``name_scope('dnn')``), variables in the root variable scope (``hidden1/kernel``), as
    ``tf.layers.dense`` does. Ref variables (``VariableV2``) by default, for old TF readers.

    Returns:
        The layer's output tensor.

    Raises:
        UserError: ``inputs`` is not rank 2 with a known width, or the layer's variables exist.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    shape = inputs.shape
    if shape.rank != 2 or shape[-1] is None:
        raise UserError(
            f"cannot put dense layer '{spec.name}' on '{inputs.name}' of shape {shape}: "
            "it needs a rank-2 input with a known width; pool or flatten it first "
            f"(--pool {' | '.join(POOLS)})"
        )
    graph = inputs.graph
    with graph.as_default():
        existing = {v.op.name for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
        if f"{spec.name}/kernel" in existing:
            raise UserError(
                f"the graph already has variables '{spec.name}/...'; name the new layer "
                "differently, or let the old one be pruned (do not pass --keep-dead)"
            )
        with tf1.variable_scope(tf1.VariableScope(reuse=False), auxiliary_name_scope=False):
            with tf1.variable_scope(spec.name, auxiliary_name_scope=False):
                kernel = tf1.get_variable(
                    "kernel", [int(shape[-1]), spec.units], dtype=inputs.dtype,
                    initializer=tf1.glorot_uniform_initializer(), use_resource=use_resource,
                )
                bias = tf1.get_variable(
                    "bias", [spec.units], dtype=inputs.dtype,
                    initializer=tf1.zeros_initializer(), use_resource=use_resource,
                )
        with tf1.name_scope(spec.name):
            out = tf1.nn.bias_add(tf1.matmul(inputs, kernel), bias)
            if spec.activation != "linear":
                out = getattr(tf1.nn, spec.activation)(out)
    return out


def pool(inputs, kind: str, name: str = "graft_pool"):
    """Turn a rank-3 or rank-4 tensor into rank 2 (``flatten``, ``avg`` or ``max``, see
    :data:`POOLS`), in name scope ``name``; the batch axis stays first.

    Raises:
        UserError: an unknown kind, a tensor that is not rank 3 or 4, or (``flatten``) one
            whose non-batch dimensions are not all known.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    if kind not in POOLS:
        raise UserError(f"--pool {kind}: use one of {', '.join(POOLS)}")
    shape = inputs.shape
    if shape.rank not in (3, 4):
        raise UserError(
            f"--pool {kind} needs a rank-3 or rank-4 tensor (a feature map), but '{inputs.name}' "
            f"has shape {shape}" + ("; graft on it without --pool" if shape.rank == 2 else "")
        )
    with inputs.graph.as_default(), tf1.name_scope(name):
        if kind == "flatten":
            dims = shape.as_list()[1:]
            if None in dims:
                raise UserError(
                    f"--pool flatten: '{inputs.name}' has shape {shape} with unknown dimensions; "
                    "use --pool avg or --pool max, which do not need them"
                )
            width = 1
            for d in dims:
                width *= d
            return tf1.reshape(inputs, [-1, width], name="flatten")
        axes = list(range(1, shape.rank - 1))
        reduce = tf1.reduce_mean if kind == "avg" else tf1.reduce_max
        return reduce(inputs, axis=axes, name=kind)
