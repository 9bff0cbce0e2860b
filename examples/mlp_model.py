"""A TF1 model function for ``ckptsurgery graft --model`` (docs/graft.md): the reference MLP.

Plain ``tf.compat.v1`` code, as a project that published only ``.index`` + ``.data`` keeps its
model: it makes its placeholders and variables and returns the tensors to graft on.
"""

import tensorflow as tf

tf1 = tf.compat.v1


def _dense(x, name, units, activation=None):
    with tf1.variable_scope(name):
        kernel = tf1.get_variable("kernel", [int(x.shape[-1]), units])
        bias = tf1.get_variable("bias", [units], initializer=tf1.zeros_initializer())
        y = tf1.nn.bias_add(tf1.matmul(x, kernel), bias)
        return activation(y) if activation else y


def mlp():
    """784-300-50-50-50-50-10 ReLU; variables ``hidden1/kernel`` .. ``logits/bias``."""
    x = tf1.placeholder(tf1.float32, [None, 784], name="X")
    tf1.placeholder(tf1.int64, [None], name="y")
    out, endpoints = x, {}
    for i, units in enumerate((300, 50, 50, 50, 50), start=1):
        out = endpoints[f"hidden{i}"] = _dense(out, f"hidden{i}", units, tf1.nn.relu)
    endpoints["logits"] = _dense(out, "logits", 10)
    return endpoints
