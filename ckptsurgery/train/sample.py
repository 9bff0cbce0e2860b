"""A small trained TF1 checkpoint made on the spot: what tests (the project's fixtures, the
pytest plugin's ``mlp_checkpoint``) graft, migrate and check without any data set.
"""

from __future__ import annotations

__all__ = ["sample_mlp_checkpoint"]


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
