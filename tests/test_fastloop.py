"""The in-graph training loop (``ckptsurgery.train.loop``) trains exactly what the write-up's
feed loop trains: the same batches in the same order, so the same weights up to float
rounding, with caching, distillation, batch norm and its ``is_training`` switch; where it does
not apply, the feed loop trains and the log says why."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURE_CNN, FIXTURE_MLP, read_vars

from ckptsurgery.graft.build import GraftSpec
from ckptsurgery.graft.distill import Distillation
from ckptsurgery.graft.job import GraftJob, run_graft
from ckptsurgery.graph.layers import DenseSpec
from ckptsurgery.train import loop
from ckptsurgery.train.data import BUILTIN_SUBSET
from ckptsurgery.train.fit import TrainConfig

NEW_TOP = [DenseSpec("hidden4", 20, "relu"), DenseSpec("logits", 10)]
FEED_LOOP = "one session.run per batch"


def _graft(tmp_path, in_graph: bool, spec: GraftSpec, checkpoint: str = FIXTURE_MLP,
           **options):
    """Graft and train 2 epochs on 570 rows (11 full batches and one of 20); the result, the
    written variables and the log."""
    train = {"optimizer": "sgd", "lr": 0.05, "epochs": 2, "progress": False,
             **options.pop("train", {})}
    job = GraftJob(checkpoint, spec, str(tmp_path / f"in_graph_{in_graph}.ckpt"),
                   data=BUILTIN_SUBSET, train=TrainConfig(in_graph=in_graph, **train),
                   **{"valid_size": 500, "per_class": 57, **options})
    lines: list[str] = []
    result = run_graft(job, log=lines.append)
    return result, read_vars(job.out), lines


def _assert_same_training(tmp_path, spec: GraftSpec, **options) -> list[str]:
    """Both loops give the same weights and accuracies; the in-graph loop's log."""
    fast, fast_vars, fast_log = _graft(tmp_path, True, spec, **options)
    slow, slow_vars, slow_log = _graft(tmp_path, False, spec, **options)
    assert not any(FEED_LOOP in line for line in fast_log), fast_log
    assert sorted(fast_vars) == sorted(slow_vars)
    for name, value in slow_vars.items():
        np.testing.assert_allclose(fast_vars[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(fast.training.epochs, slow.training.epochs, strict=True):
        assert abs(a.valid_accuracy - b.valid_accuracy) < 0.01
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    assert fast.training.best_epoch == slow.training.best_epoch
    return fast_log


@pytest.fixture
def small_chunks(monkeypatch):
    """Six batches of 784 floats per ``session.run``: an epoch takes several runs, each with
    a loop iteration of four steps, single steps after it, and the short batch last."""
    monkeypatch.setattr(loop, "CHUNK_BYTES", 6 * 50 * 784 * 4)


def test_in_graph_loop_visits_the_feed_loops_batches(tmp_path, small_chunks):
    _assert_same_training(tmp_path, GraftSpec(at="hiddens3", layers=NEW_TOP, seed=3))


def test_in_graph_loop_trains_adam_with_the_feed_loops_result(tmp_path):
    _assert_same_training(tmp_path, GraftSpec(at="hiddens3", layers=NEW_TOP, seed=3),
                          train={"optimizer": "adam", "lr": 0.001})


def test_cached_upper_layers_train_as_in_the_feed_loop(tmp_path):
    spec = GraftSpec(at="hiddens3", layers=NEW_TOP, restore_scope="hidden[123]",
                     cut_after="hiddens2", seed=3)
    _assert_same_training(tmp_path, spec, train={"cache_frozen": True})


def test_a_cache_larger_than_allowed_goes_to_a_memory_mapped_file(tmp_path):
    spec = GraftSpec(at="hiddens3", layers=NEW_TOP, restore_scope="hidden[123]",
                     cut_after="hiddens2", seed=3)
    log = _assert_same_training(tmp_path, spec, train={"cache_frozen": True,
                                                       "cache_memory_fraction": 0.0})
    (line,) = [line for line in log if "memory-mapped" in line]
    assert "hiddens2" in line or "hidden2" in line, line


def test_distillation_feeds_each_batch_its_teachers_logits(tmp_path):
    spec = GraftSpec(at="hiddens3", layers=NEW_TOP, seed=3)
    _assert_same_training(tmp_path, spec, distill=Distillation(FIXTURE_MLP, alpha=0.5))


def test_batch_norm_trains_with_its_switch_on_and_its_statistics_updated(tmp_path):
    spec = GraftSpec(at="pool2/MaxPool", layers=[DenseSpec("fc2", 16, "relu"),
                                                 DenseSpec("new_logits", 10)],
                     pool="avg", train_scope="bn2|fc2|new_logits", bn_train=True, seed=3)
    _assert_same_training(tmp_path, spec, checkpoint=FIXTURE_CNN,
                          train={"optimizer": "adam", "lr": 0.01})


def test_augment_trains_with_the_feed_loop_and_says_so(tmp_path):
    spec = GraftSpec(at="pool2/MaxPool", layers=[DenseSpec("new_logits", 10)], pool="avg",
                     cut_after="pool2/MaxPool", seed=3)
    _, _, log = _graft(tmp_path, True, spec, checkpoint=FIXTURE_CNN,
                       train={"epochs": 1, "augment": ("shift",)})
    (line,) = [line for line in log if FEED_LOOP in line]
    assert "--augment" in line


def test_the_users_graph_is_exported_without_the_loop(tmp_path):
    _, variables, _ = _graft(tmp_path, True, GraftSpec(at="hiddens3", layers=NEW_TOP, seed=3),
                             train={"epochs": 1})
    meta = (tmp_path / "in_graph_True.ckpt.meta").read_bytes()
    assert b"loop/step" not in meta and b"loop/rows" not in meta
    assert "hidden4/kernel" in variables


def test_a_step_it_cannot_copy_trains_with_the_feed_loop_and_says_why(tmp_path):
    from conftest import FIXTURE_RNN

    spec = GraftSpec(at="rnn/while/Exit_3", layers=[DenseSpec("new_logits", 10)],
                     feeds={"init_state": "zeros"}, seed=3)
    result, _, log = _graft(tmp_path, True, spec, checkpoint=FIXTURE_RNN,
                            train={"epochs": 1}, per_class=5, valid_size=100)
    (line,) = [line for line in log if FEED_LOOP in line]
    assert "init_state" in line, line
    assert len(result.training.epochs) == 1


def test_reused_layers_at_their_own_rate_train_as_in_the_feed_loop(tmp_path):
    spec = GraftSpec(at="hiddens3", layers=NEW_TOP, strategy="fine-tune-all", lr_reused=0.01,
                     seed=3)
    _assert_same_training(tmp_path, spec, train={"optimizer": "momentum"})


def test_resource_variables_train_as_in_the_feed_loop(tmp_path):
    import tensorflow as tf

    from ckptsurgery.graph.layers import dense

    tf1 = tf.compat.v1
    graph = tf.Graph()
    graph.seed = 5
    with graph.as_default():
        hidden = dense(tf1.placeholder(tf1.float32, (None, 784), name="X"),
                       DenseSpec("hidden1", 16, "relu"), use_resource=True)
        tf1.add_to_collection("hiddens1", hidden)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            tf1.train.Saver().save(sess, str(tmp_path / "resource.ckpt"))
    spec = GraftSpec(at="hiddens1", layers=[DenseSpec("logits", 10)], seed=3)
    _assert_same_training(tmp_path, spec, checkpoint=str(tmp_path / "resource.ckpt"),
                          train={"optimizer": "adam", "lr": 0.001})


def test_the_copied_step_leaves_out_only_the_gradient_nobody_reads(mlp_ckpt):
    """tf.gradients' gates wait for the first layer's gradient with respect to the data,
    which no update reads: the loop's copy of the step computes everything else."""
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graft.build import build
    from ckptsurgery.train.fit import add_training_ops

    grafted = build(open_checkpoint(mlp_ckpt), GraftSpec(at="hiddens3", layers=NEW_TOP))
    ops = add_training_ops(grafted.inputs, grafted.labels, grafted.output,
                           grafted.train_vars, TrainConfig(optimizer="adam"))
    fed = {ops.inputs.op.name, ops.labels.op.name}
    step = loop._ancestors(grafted.graph, [ops.train_op, ops.loss.op], stop=fed)
    (unused,) = loop._unused(step, {ops.train_op, ops.loss.op})
    matmul = grafted.graph.get_operation_by_name(unused)
    assert matmul.type == "MatMul" and "hidden1" in unused
    assert matmul.outputs[0].shape.as_list() == [None, 784]
