"""Dropout with a fixed rate in a reused graph (a graph saved for training, as BERT's and most
research code's are): on in the training steps of layers that train, off when evaluating, in
the export and below the cut; the plan says which. An export gives the same output for the
same input, always."""

from __future__ import annotations

import numpy as np
import pytest
from safety_helpers import run_main

SUBSET_ROWS = 300


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    """A 784-32-16-10 MLP trained a step with tf.nn.dropout(rate=0.5) after each hidden layer
    (fixed rates, no placeholder), saved with its .meta; and a small .npz."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    folder = tmp_path_factory.mktemp("dropout")
    rng = np.random.RandomState(0)
    x_train = rng.rand(SUBSET_ROWS, 784).astype(np.float32)
    y_train = (x_train[:, :392].sum(1) > x_train[:, 392:].sum(1)).astype(np.int64)
    np.savez(folder / "data.npz", x_train=x_train, y_train=y_train)
    with tf.Graph().as_default() as g:
        g.seed = 1
        x = tf1.placeholder(tf.float32, (None, 784), name="X")
        y = tf1.placeholder(tf.int64, (None,), name="y")
        h = x
        for i, units in enumerate((32, 16), start=1):
            with tf1.variable_scope(f"hidden{i}"):
                w = tf1.get_variable("kernel", (int(h.shape[-1]), units))
                b = tf1.get_variable("bias", (units,), initializer=tf1.zeros_initializer())
            relu = tf1.nn.relu(tf1.matmul(h, w) + b)
            tf1.add_to_collection(f"relu{i}", relu)
            h = tf1.nn.dropout(relu, rate=0.5)
        with tf1.variable_scope("logits"):
            w = tf1.get_variable("kernel", (16, 10))
        logits = tf1.matmul(h, w)
        loss = tf1.reduce_mean(tf1.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=logits))
        step = tf1.train.GradientDescentOptimizer(0.1).minimize(loss)
        tf1.add_to_collection("dropped2", h)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(step, {x: x_train[:50], y: y_train[:50]})
            tf1.train.Saver().save(sess, str(folder / "model.ckpt"))
    return folder


def _outputs(prefix: str, x: np.ndarray, times: int = 2) -> list[np.ndarray]:
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf.Graph().as_default() as g, tf1.Session() as sess:
        tf1.train.import_meta_graph(prefix + ".meta").restore(sess, prefix)
        out = g.get_collection("logits")[0]
        return [sess.run(out, {g.get_tensor_by_name("X:0"): x}) for _ in range(times)]


def _graft(folder, out, *extra):
    return run_main("graft", str(folder / "model.ckpt"), "--at", "dropped2", "--dense",
                    "new_logits:2", "--data", str(folder / "data.npz"), "--epochs", "2",
                    "--valid-size", "60", "--out", str(out), *extra)


def test_dropout_trains_but_the_export_is_deterministic(dropped, tmp_path):
    code, out, err = _graft(dropped, tmp_path / "m.ckpt")
    assert code == 0, err
    assert out.count("on in training steps, off when evaluating and in the export") == 2
    x = np.random.RandomState(1).rand(20, 784).astype(np.float32)
    first, second = _outputs(str(tmp_path / "m.ckpt"), x)
    np.testing.assert_array_equal(first, second)


def test_with_keep_the_export_still_drops_and_below_the_cut_it_is_off(dropped, tmp_path):
    code, out, err = _graft(dropped, tmp_path / "keep.ckpt", "--dropout", "keep")
    assert code == 0, err
    assert "(--dropout keep): on everywhere" in out
    x = np.random.RandomState(1).rand(20, 784).astype(np.float32)
    first, second = _outputs(str(tmp_path / "keep.ckpt"), x)
    assert np.abs(first - second).max() > 1e-3  # the graph's own dropout, left on
    code, out, err = _graft(dropped, tmp_path / "cut.ckpt", "--cut-after", "relu2")
    assert code == 0, err
    assert out.count("off (below the cut)") == 1  # hidden1's; hidden2's is above relu2
    assert out.count("on in training steps") == 1


def test_off_bypasses_every_dropout(dropped, tmp_path):
    code, out, err = _graft(dropped, tmp_path / "off.ckpt", "--dropout", "off")
    assert code == 0, err
    assert out.count("off (--dropout off)") == 2
