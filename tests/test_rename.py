"""rename: regex renames in the checkpoint and, consistently, in the .meta."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FIXTURE_MLP, read_vars, run_cli
from migrate_helpers import corpus_prefix, readable_entries, restore_values
from safety_helpers import assert_clean_error

from ckptsurgery.errors import SelectionError, UserError
from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.migrate.rewrite import RENAME_PRESETS, parse_map, plan_rename, rename_checkpoint

RNN = "Aplain__rnnRepo__model"
ESTIMATOR = "jncharon__wine-classifier__estimator_ckpt-3374"


def _class_refs(meta) -> set[str]:
    return {s.decode()[len("loc:@"):] for n in meta.graph_def.node if "_class" in n.attr
            for s in n.attr["_class"].list.s}


def test_rnn_preset_renames_the_tf11_lstm(shared, tmp_path):
    src = corpus_prefix(RNN)
    result = rename_checkpoint(src, RENAME_PRESETS["rnn-1.2"], str(tmp_path / "m"),
                               progress=False)
    before, after = read_vars(src), read_vars(result.prefix)
    assert sorted(after) == ["inference/bias1", "inference/bias2", "inference/weight1",
                             "inference/weight2", "rnn/basic_lstm_cell/bias",
                             "rnn/basic_lstm_cell/kernel"]
    assert after["rnn/basic_lstm_cell/kernel"].tobytes() == \
        before["rnn/basic_lstm_cell/weights"].tobytes()
    restored = restore_values(result.prefix)
    assert np.array_equal(restored["rnn/basic_lstm_cell/kernel"],
                          before["rnn/basic_lstm_cell/weights"])
    meta = open_checkpoint(result.prefix).meta_graph
    names = {n.name for n in meta.graph_def.node}
    assert {"rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/kernel/read"} <= names
    assert not [n for n in names if "basic_lstm_cell/weights" in n.split(":")[0]
                and n.startswith("rnn/basic_lstm_cell/weights")]
    refs = _class_refs(meta) | {i.lstrip("^").split(":")[0] for n in meta.graph_def.node
                                for i in n.input}
    assert "rnn/basic_lstm_cell/weights" not in refs
    assert refs <= names


def test_renamed_graph_computes_what_the_original_did(shared, tmp_path):
    import tensorflow as tf

    src = corpus_prefix("irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4")
    result = rename_checkpoint(src, [("^hidden", "layer"), ("kernel", "w")],
                               str(tmp_path / "m"), progress=False)
    x = np.random.RandomState(0).rand(3, 784).astype(np.float32)
    outputs = []
    for prefix in (src, result.prefix):
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
            saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
            saver.restore(sess, prefix)
            outputs.append(sess.run("Y_proba:0", {"X:0": x}))
            names = [v.op.name for v in tf.compat.v1.trainable_variables()]
    assert outputs[0].tobytes() == outputs[1].tobytes()
    assert "layer1/w" in names and "logits/w" in names


def test_partitioned_estimator_variables_keep_their_slices(shared, tmp_path):
    src = corpus_prefix(ESTIMATOR)
    result = rename_checkpoint(src, [("^dnn/", "net/")], str(tmp_path / "m"), progress=False)
    before, restored = read_vars(src), restore_values(result.prefix)
    assert "net/hiddenlayer_0/kernel" in restored and "global_step" in restored
    assert np.array_equal(restored["net/logits/kernel"], before["dnn/logits/kernel"])
    assert set(restored) == set(read_vars(result.prefix))


@pytest.mark.parametrize("entry", readable_entries())
def test_every_corpus_checkpoint_renames_and_restores(shared, entry, tmp_path):
    src = corpus_prefix(entry)
    before = read_vars(src)
    result = rename_checkpoint(src, [("^", "renamed/")], str(tmp_path / "m"), progress=False)
    after = read_vars(result.prefix)
    assert set(after) == {"renamed/" + k for k in before}
    assert all(after["renamed/" + k].tobytes() == v.tobytes() for k, v in before.items())
    if open_checkpoint(src).files.meta:
        restored = restore_values(result.prefix)
        assert set(restored) == set(after)


def test_two_names_colliding_is_refused(shared):
    with pytest.raises(SelectionError, match="the same name"):
        plan_rename(open_checkpoint(corpus_prefix(RNN)), [("(weight|bias)[12]", "x")])


def test_renaming_nothing_is_refused(shared):
    with pytest.raises(SelectionError, match="change no variable"):
        plan_rename(open_checkpoint(corpus_prefix(RNN)), [("kernel", "w")])


def test_map_splits_at_the_last_equals_sign():
    assert parse_map("a(?=/|$)=b") == ("a(?=/|$)", "b")
    with pytest.raises(UserError, match="REGEX=REPLACEMENT"):
        parse_map("no-equals")
    with pytest.raises(UserError, match="bad regex"):
        parse_map("(=x")


def test_tf2_object_graph_follows_the_rename(shared, tmp_path):
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    result = rename_checkpoint(corpus_prefix("Rabbit-JCY__little_ruan__sharded2"),
                               [("^layer-1/", "first/")], str(tmp_path / "m"), progress=False)
    reader = tf.train.load_checkpoint(result.prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    keys = {a.checkpoint_key for n in graph.nodes for a in n.attributes}
    assert "first/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert keys == set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_cli_rename_preset_and_dry_run(shared, tmp_path):
    out = str(tmp_path / "m")
    proc = run_cli("rename", corpus_prefix(RNN), "--preset", "rnn-1.2", "--out", out,
                   "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "rename rnn/basic_lstm_cell/weights -> rnn/basic_lstm_cell/kernel" in proc.stdout
    assert not (tmp_path / "m.index").exists()
    proc = run_cli("rename", corpus_prefix(RNN), "--out", out)
    assert proc.returncode == 2 and "nothing to rename" in proc.stderr


def test_the_update_ops_of_a_renamed_variable_follow_it(tmp_path):
    """An optimizer names the op that updates a variable after it (``update_<var>/Apply...``):
    after the rename the .meta reads consistently, and still imports and restores."""
    from conftest import FIXTURE_MIXED

    out = rename_checkpoint(FIXTURE_MIXED, [("^dense/", "fc/")], str(tmp_path / "r" / "m.ckpt"),
                            progress=False).prefix
    names = {n.name for n in open_checkpoint(out).meta_graph.graph_def.node}
    updates = sorted(n for n in names if "/update_" in n and n.endswith("ApplyAdam"))
    assert "Adam/update_fc/kernel/ApplyAdam" in updates
    assert not any("update_dense/" in n for n in names)
    assert sorted(restore_values(out)) == sorted(
        k.replace("dense/", "fc/", 1) for k in read_vars(FIXTURE_MIXED))


def test_a_dry_run_rename_needs_no_readable_meta(tmp_path):
    """A rename's plan comes from the keys alone: --dry-run prints it even when the .meta is
    damaged; the rename itself says which file is wrong, in one line, and writes nothing."""
    import shutil

    from conftest import FIXTURE_MIXED

    src = tmp_path / "in"
    shutil.copytree(os.path.dirname(FIXTURE_MIXED), src)
    prefix = str(src / os.path.basename(FIXTURE_MIXED))
    with open(prefix + ".meta", "r+b") as f:
        f.truncate(3000)
    out = str(tmp_path / "out" / "m")
    proc = run_cli("rename", prefix, "--map", "dense=fc", "--out", out, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "rename dense/kernel -> fc/kernel" in proc.stdout
    proc = run_cli("rename", prefix, "--map", "dense=fc", "--out", out)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and ".meta" in proc.stderr
    assert not os.path.exists(out + ".index")


def test_a_preset_that_matches_nothing_says_so_in_words(tmp_path):
    r = run_cli("rename", FIXTURE_MLP, "--preset", "rnn-1.2", "--out", str(tmp_path / "o"))
    assert_clean_error(r.returncode, r.stderr, 2, "uses the TF 1.0/1.1 RNN names",
                       "nothing to rename")
    assert len(r.stderr) < 200 and "(?=" not in r.stderr
    r = run_cli("rename", FIXTURE_MLP, "--preset", "rnn-1.2", "--out", str(tmp_path / "o"),
                "--verbose")
    assert r.returncode == 2 and "(?=/|$)" in r.stderr
