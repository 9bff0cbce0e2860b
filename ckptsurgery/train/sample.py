"""A small trained TF1 checkpoint made on the spot: what tests (the project's fixtures, the
pytest plugin's ``mlp_checkpoint``) graft, migrate and check without any data set.
"""

from __future__ import annotations

__all__ = ["sample_mlp_checkpoint", "sample_cnn_checkpoint"]


def sample_mlp_checkpoint(prefix: str, *, seed: int = 42, force: bool = False) -> str:
    """Write the reference 784-300-50-50-50-50-10 ReLU MLP (collections ``inputs``, ``labels``,
    ``hiddens1``..``hiddens5``, ``logits``; SGD training ops) at ``prefix``, after one SGD step
    on a fixed random batch so that biases are not all zero. Same ``seed``, same bytes (with
    oneDNN off and one thread).

    Returns:
        The prefix written.
    """
    import numpy as np
    import tensorflow as tf

    from ..graph.export import export_checkpoint
    from ..graph.models import build_mlp
    from .fit import TrainConfig, add_training_ops

    graph = tf.Graph()
    graph.seed = seed
    mlp = build_mlp(graph)
    ops = add_training_ops(mlp.inputs, mlp.labels, mlp.logits,
                           graph.get_collection("trainable_variables"),
                           TrainConfig(optimizer="sgd", lr=0.01))
    rng = np.random.RandomState(seed)
    x = rng.rand(50, 784).astype(np.float32)
    y = rng.randint(0, 10, size=50).astype(np.int32)
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(ops.train_op, {mlp.inputs: x, mlp.labels: y})
        return export_checkpoint(sess, graph, prefix, force=force).prefix


def sample_cnn_checkpoint(prefix: str, *, seed: int = 11, force: bool = False) -> str:
    """Write a small convolutional TF1 model at ``prefix``, built from raw ``tf.compat.v1``
    ops (no Keras), after one Adam step on a fixed random batch: ``x`` [None, 28, 28, 1] ->
    ``conv1`` (8 filters, 3x3) -> batch norm ``bn1`` switched by a ``bool`` ``is_training``
    placeholder without a default (moving statistics updated through ``update_ops``) -> ReLU
    -> ``pool1/MaxPool`` [None, 14, 14, 8] -> flatten -> ``logits`` (5); labels ``y``; no
    ``inputs`` or ``logits`` collections, as many TF1 projects left them.

    Returns:
        The prefix written.
    """
    import numpy as np
    import tensorflow as tf

    from ..graph.export import export_checkpoint

    tf1 = tf.compat.v1
    graph = tf.Graph()
    graph.seed = seed
    with graph.as_default():
        x = tf1.placeholder(tf.float32, (None, 28, 28, 1), name="x")
        y = tf1.placeholder(tf.int64, (None,), name="y")
        is_training = tf1.placeholder(tf.bool, (), name="is_training")
        with tf1.variable_scope("conv1", use_resource=False):
            kernel = tf1.get_variable("kernel", (3, 3, 1, 8))
            bias = tf1.get_variable("bias", (8,), initializer=tf1.zeros_initializer())
        net = tf1.nn.bias_add(tf1.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME"), bias)
        with tf1.variable_scope("bn1", use_resource=False):
            gamma = tf1.get_variable("gamma", (8,), initializer=tf1.ones_initializer())
            beta = tf1.get_variable("beta", (8,), initializer=tf1.zeros_initializer())
            mean = tf1.get_variable("moving_mean", (8,), initializer=tf1.zeros_initializer(),
                                    trainable=False)
            variance = tf1.get_variable("moving_variance", (8,), trainable=False,
                                        initializer=tf1.ones_initializer())

        def train_mode():
            out, batch_mean, batch_var = tf1.nn.fused_batch_norm(net, gamma, beta,
                                                                 is_training=True)
            return out, batch_mean, batch_var

        def inference_mode():
            out, _, _ = tf1.nn.fused_batch_norm(net, gamma, beta, mean, variance,
                                                is_training=False)
            return out, mean.read_value(), variance.read_value()

        with tf1.name_scope("bn1"):
            normed, batch_mean, batch_var = tf1.cond(is_training, train_mode, inference_mode)
            for variable, value in ((mean, batch_mean), (variance, batch_var)):
                update = tf1.assign_sub(variable, 0.01 * (variable - value))
                tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update)
        net = tf1.nn.max_pool2d(tf1.nn.relu(normed), 2, 2, "VALID", name="pool1/MaxPool")
        flat = tf1.reshape(net, [-1, 14 * 14 * 8], name="flatten/Reshape")
        with tf1.variable_scope("logits", use_resource=False):
            w = tf1.get_variable("kernel", (14 * 14 * 8, 5))
            b = tf1.get_variable("bias", (5,), initializer=tf1.zeros_initializer())
        logits = tf1.nn.bias_add(tf1.matmul(flat, w), b, name="logits/BiasAdd")
        loss = tf1.reduce_mean(tf1.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=logits), name="loss")
        with tf1.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)):
            train_op = tf1.train.AdamOptimizer(0.001).minimize(loss)
    rng = np.random.RandomState(seed)
    with tf1.Session(graph=graph) as sess:
        sess.run(tf1.global_variables_initializer())
        sess.run(train_op, {x: rng.rand(16, 28, 28, 1).astype(np.float32),
                            y: rng.randint(0, 5, 16), is_training: True})
        return export_checkpoint(sess, graph, prefix, force=force).prefix
