"""pytest fixtures for testing TF1 graph and checkpoint edits, registered as a ``pytest11``
plugin: installing ckptsurgery makes them available in every test suite, no import needed.

Fixtures:
    ``tf1_graph``: a fresh ``tf.Graph`` (never the default graph).
    ``tf1_session``: a ``tf.compat.v1.Session`` on ``tf1_graph``, closed after the test.
    ``mlp_checkpoint``: a small trained checkpoint made on the fly in ``tmp_path``: the
        reference 784-300-50-50-50-50-10 ReLU MLP (collections ``inputs``, ``labels``,
        ``hiddens1``..``hiddens5``, ``logits``) after one SGD step on a fixed random batch.
    ``cnn_checkpoint``: a small convolutional checkpoint (conv, batch norm switched by a
        ``bool`` ``is_training`` placeholder, max-pooling, logits; no collections), built from
        raw TF1 ops, after one Adam step.
    ``ckpt``: the assertions of :mod:`ckptsurgery.testing` (``ckpt.assert_unchanged(...)``),
        whose failures pytest shows with their messages.

Nothing here imports TensorFlow until a fixture is used, so the plugin costs nothing in suites
that do not use it. May import: anything in the package except the CLI.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("ckptsurgery.testing")

__all__ = ["tf1_graph", "tf1_session", "mlp_checkpoint", "cnn_checkpoint", "ckpt"]


@pytest.fixture
def tf1_graph():
    """A fresh ``tf.Graph``; build into it with ``with tf1_graph.as_default():``."""
    import tensorflow as tf

    return tf.Graph()


@pytest.fixture
def tf1_session(tf1_graph):
    """A session on :func:`tf1_graph`, closed after the test."""
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf1_graph) as session:
        yield session


@pytest.fixture
def mlp_checkpoint(tmp_path) -> str:
    """The prefix of a small trained MLP checkpoint in ``tmp_path`` (``.meta`` included)."""
    from .train.sample import sample_mlp_checkpoint

    return sample_mlp_checkpoint(str(tmp_path / "mlp" / "model.ckpt"))


@pytest.fixture
def cnn_checkpoint(tmp_path) -> str:
    """The prefix of a small trained CNN checkpoint in ``tmp_path`` (``.meta`` included)."""
    from .train.sample import sample_cnn_checkpoint

    return sample_cnn_checkpoint(str(tmp_path / "cnn" / "model.ckpt"))


@pytest.fixture
def ckpt():
    """:mod:`ckptsurgery.testing`: ``assert_unchanged``, ``assert_changed``,
    ``assert_restores``, ``assert_no_gradient``."""
    from . import testing

    return testing
