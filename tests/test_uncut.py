"""edit.uncut and GraftSpec(uncut=True): a model frozen by a stop_gradient cut trains again."""

from __future__ import annotations

import numpy as np


def _cut_model(tmp_path, mlp_ckpt) -> str:
    from ckptsurgery.graft.build import GraftSpec
    from ckptsurgery.graft.job import GraftJob, run_graft
    from ckptsurgery.graph.layers import DenseSpec

    out = str(tmp_path / "cut.ckpt")
    run_graft(GraftJob(mlp_ckpt, GraftSpec(at="hiddens3", layers=[DenseSpec("logits", 10)],
                                           cut_after="hiddens2"), out), log=lambda _: None)
    return out


def test_uncut_removes_stop_gradient_and_rewires_consumers(tmp_path, mlp_ckpt):
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graphdef.edit import uncut

    meta = open_checkpoint(_cut_model(tmp_path, mlp_ckpt)).meta_graph
    assert any(n.op == "StopGradient" for n in meta.graph_def.node)
    new, removed = uncut(meta)
    assert removed == {"dnn/hidden2/Relu/stop_gradient": "dnn/hidden2/Relu:0"}
    assert not any(n.op == "StopGradient" for n in new.graph_def.node)
    matmul = next(n for n in new.graph_def.node if n.name == "dnn/hidden3/MatMul")
    assert matmul.input[0] == "dnn/hidden2/Relu"
    assert any(n.op == "StopGradient" for n in meta.graph_def.node), "input not modified"


def test_graft_with_uncut_trains_what_the_cut_froze(tmp_path, mlp_ckpt):
    import tensorflow as tf

    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graft.build import GraftSpec, build
    from ckptsurgery.train.fit import TrainConfig, add_training_ops

    grafted = build(open_checkpoint(_cut_model(tmp_path, mlp_ckpt)),
                    GraftSpec(at="logits", layers=[], uncut=True))
    assert grafted.plan.uncut == ["dnn/hidden2/Relu/stop_gradient"]
    assert "hidden1/kernel" in {r.name for r in grafted.plan.trained}
    ops = add_training_ops(grafted.inputs, grafted.labels, grafted.output, grafted.train_vars,
                           TrainConfig(optimizer="sgd", lr=0.1))
    kernel = next(v for v in grafted.train_vars if v.op.name == "hidden1/kernel")
    rng = np.random.RandomState(0)
    with tf.compat.v1.Session(graph=grafted.graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        before = sess.run(kernel)
        sess.run(ops.train_op, {grafted.inputs: rng.rand(8, 784), grafted.labels: np.arange(8)})
        assert not np.array_equal(before, sess.run(kernel))


def test_graft_without_uncut_keeps_the_cut(tmp_path, mlp_ckpt):
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graft.build import GraftSpec, build

    grafted = build(open_checkpoint(_cut_model(tmp_path, mlp_ckpt)),
                    GraftSpec(at="logits", layers=[]))
    assert grafted.plan.uncut == []
    assert any(op.type == "StopGradient" for op in grafted.graph.get_operations())
