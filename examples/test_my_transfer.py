"""An example test suite of a user's own graph edits, using only the ckptsurgery pytest plugin
(its fixtures need no import): run it with ``python3 -m pytest examples``."""

import numpy as np

from ckptsurgery import DenseSpec, GraftSpec, build, export_checkpoint, open_checkpoint, restore


def test_a_graft_keeps_the_lower_layers(mlp_checkpoint, ckpt, tmp_path):
    grafted = build(open_checkpoint(mlp_checkpoint),
                    GraftSpec(at="hiddens3", layers=[DenseSpec("new_logits", 5)]),
                    require_labels=False)
    import tensorflow as tf

    with tf.compat.v1.Session(graph=grafted.graph) as session:
        session.run(tf.compat.v1.variables_initializer(grafted.graph.get_collection("variables")))
        restore(session, grafted.restore_vars, open_checkpoint(mlp_checkpoint))
        out = export_checkpoint(session, grafted.graph, str(tmp_path / "new" / "model.ckpt"))
    ckpt.assert_unchanged(mlp_checkpoint, out.prefix, scope="hidden[123]/")
    assert ckpt.assert_restores(out.prefix)["new_logits/kernel"] == [50, 5]


def test_a_stop_gradient_freezes_what_is_below_it(tf1_graph, tf1_session, ckpt):
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf1_graph.as_default():
        x = tf1.placeholder(tf.float32, (None, 3))
        with tf1.variable_scope("frozen"):
            w1 = tf1.get_variable("w", (3, 4))
        with tf1.variable_scope("top"):
            w2 = tf1.get_variable("w", (4, 2))
        loss = tf1.reduce_sum(tf1.matmul(tf1.stop_gradient(tf1.matmul(x, w1)), w2))
        tf1_session.run(tf1.global_variables_initializer())
    assert ckpt.assert_no_gradient(tf1_graph, loss, "frozen") == ["frozen/w"]
    assert tf1_session.run(loss, {x: np.zeros((1, 3), np.float32)}) == 0.0
