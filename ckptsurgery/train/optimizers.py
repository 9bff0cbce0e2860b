"""The optimizers training offers, by name: one table for the library and the CLI's choices.

Kept free of numpy and TensorFlow at import time, so that ``--help`` lists the choices at once.
"""

from __future__ import annotations

__all__ = ["OPTIMIZERS", "make_optimizer"]

#: Names accepted by ``TrainConfig.optimizer`` and ``--optimizer``.
OPTIMIZERS = ("sgd", "momentum", "adam")


def make_optimizer(name: str, lr: float):
    """A ``tf.compat.v1.train`` optimizer: ``sgd``, ``momentum`` (0.9) or ``adam``."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    if name == "sgd":
        return tf1.train.GradientDescentOptimizer(lr)
    if name == "momentum":
        return tf1.train.MomentumOptimizer(lr, momentum=0.9)
    return tf1.train.AdamOptimizer(lr)
