"""strip: the output holds only what is kept, bit for bit, and its .meta restores exactly that."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import read_vars, run_cli
from migrate_helpers import corpus_prefix, readable_entries, restore_values
from safety_helpers import sha256_files

from ckptsurgery.errors import OutputError, SelectionError
from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.slots import classify_by_name as classify
from ckptsurgery.migrate.rewrite import plan_strip, rewrite_checkpoint, strip_checkpoint

IRIS = "irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4"
HANDSON = "haerfest__handson-ml__my_model_final"


@pytest.mark.parametrize("entry", readable_entries())
def test_strip_optimizer_slots_on_every_corpus_checkpoint(shared, entry, tmp_path):
    src = corpus_prefix(entry)
    before = read_vars(src)
    digests = sha256_files(open_checkpoint(src).files.paths)
    result = strip_checkpoint(src, str(tmp_path / "out" / "model.ckpt"), optimizer_slots=True,
                              progress=False)
    roles = classify(before)
    expected = {k for k, r in roles.items() if r.kind not in ("slot", "optimizer")}
    after = read_vars(result.prefix)
    assert set(after) == expected
    for k in expected:
        assert after[k].dtype == before[k].dtype and after[k].shape == before[k].shape
        assert after[k].tobytes() == before[k].tobytes(), k
    assert sha256_files(open_checkpoint(src).files.paths) == digests
    if os.path.isfile(src + ".meta"):
        restored = restore_values(result.prefix)
        assert set(restored) == expected
        for k in expected:
            assert np.array_equal(restored[k], before[k]), k


def test_strip_removes_the_train_op_and_keeps_a_working_init(shared, tmp_path):
    import tensorflow as tf

    result = strip_checkpoint(corpus_prefix(IRIS), str(tmp_path / "m"), optimizer_slots=True,
                              progress=False)
    meta = open_checkpoint(result.prefix).meta_graph
    names = {n.name for n in meta.graph_def.node}
    assert "train_op" not in meta.collection_def
    assert not any(n.op == "ApplyAdam" for n in meta.graph_def.node)
    assert not any(n.endswith("/Adam") or n.endswith("/Adam_1") for n in names)
    assert "train_op" in result.meta.removed_collections
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        tf.compat.v1.train.import_meta_graph(result.prefix + ".meta")
        sess.run(graph.get_operation_by_name("init"))
        assert sess.run(tf.compat.v1.report_uninitialized_variables()).size == 0
        probs = sess.run("Y_proba:0", {"X:0": np.zeros((2, 784), np.float32)})
    assert probs.shape == (2, 5)


def test_keep_then_drop_select_by_regex(shared, tmp_path):
    result = strip_checkpoint(corpus_prefix(HANDSON), str(tmp_path / "m"),
                              keep=[r"^dnn/hidden"], drop=["biases$"], progress=False)
    assert sorted(read_vars(result.prefix)) == ["dnn/hidden1/weights", "dnn/hidden2/weights"]
    assert sorted(restore_values(result.prefix)) == ["dnn/hidden1/weights",
                                                     "dnn/hidden2/weights"]


def test_a_regex_matching_nothing_names_the_nearest_variables(shared):
    checkpoint = open_checkpoint(corpus_prefix(HANDSON))
    with pytest.raises(SelectionError, match=r"--drop 'dnn/hiden1'.*near: dnn/hidden1"):
        plan_strip(checkpoint, drop=["dnn/hiden1"])


def test_dropping_everything_is_refused(shared):
    with pytest.raises(SelectionError, match="nothing .* would be kept"):
        plan_strip(open_checkpoint(corpus_prefix(HANDSON)), drop=["."])


def test_small_batches_still_give_one_data_file_that_reads_back(shared, tmp_path):
    """Many batches (100 KB each), one data shard, as TensorFlow's Saver writes."""
    src = corpus_prefix(HANDSON)
    checkpoint = open_checkpoint(src)
    plan = plan_strip(checkpoint, drop=["outputs"])
    result = rewrite_checkpoint(checkpoint, plan, str(tmp_path / "m"), max_batch_bytes=100_000,
                                progress=False)
    shards = sorted(f for f in os.listdir(tmp_path) if ".data-" in f)
    assert shards == ["m.data-00000-of-00001"]
    assert checkpoint.variables["dnn/hidden1/weights"].nbytes > 100_000, "several batches"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".") or f.endswith(".shards")]
    before, after = read_vars(src), read_vars(result.prefix)
    assert sorted(after) == [k for k in sorted(before) if "outputs" not in k]
    assert all(after[k].tobytes() == before[k].tobytes() for k in after)


def test_existing_output_is_refused_without_force(shared, tmp_path):
    src, out = corpus_prefix(HANDSON), str(tmp_path / "m")
    strip_checkpoint(src, out, drop=["outputs"], progress=False)
    with pytest.raises(OutputError, match="pass --force"):
        strip_checkpoint(src, out, drop=["hidden2"], progress=False)
    strip_checkpoint(src, out, drop=["hidden2"], force=True, progress=False)
    assert not any("hidden2" in k for k in read_vars(out))


def test_the_input_cannot_be_the_output(shared):
    src = corpus_prefix(HANDSON)
    with pytest.raises(OutputError):
        strip_checkpoint(src, src, drop=["outputs"], force=True, progress=False)


def test_no_meta_writes_the_checkpoint_only(shared, tmp_path):
    result = strip_checkpoint(corpus_prefix(HANDSON), str(tmp_path / "m"), drop=["outputs"],
                              with_meta=False, progress=False)
    assert not os.path.exists(result.prefix + ".meta")
    assert result.meta_note


def test_tf2_object_graph_forgets_dropped_keys(shared, tmp_path):
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    result = strip_checkpoint(corpus_prefix("Rabbit-JCY__little_ruan__sharded2"),
                              str(tmp_path / "m"), optimizer_slots=True, progress=False)
    reader = tf.train.load_checkpoint(result.prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    keys = {a.checkpoint_key for n in graph.nodes for a in n.attributes}
    assert keys == set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert len(keys) == 4


def test_cli_strip(shared, tmp_path):
    out = str(tmp_path / "deploy" / "model.ckpt")
    proc = run_cli("strip", corpus_prefix(IRIS), "--optimizer-slots", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "26 dropped" in proc.stdout and "beta1_power" in proc.stdout
    assert len(read_vars(out)) == 12
    proc = run_cli("strip", corpus_prefix(IRIS), "--out", out)
    assert proc.returncode == 2 and "nothing to strip" in proc.stderr


def test_batches_are_bounded_by_bytes_not_count():
    from ckptsurgery.formats.stream import plan_batches

    sizes = [("a", 30), ("b", 30), ("c", 30), ("big", 500), ("d", 60), ("e", 60)]
    assert plan_batches(sizes, 100) == [["a", "b", "c"], ["big"], ["d"], ["e"]]


def test_partitioned_variable_with_two_parts_keeps_restoring(tmp_path):
    import tensorflow as tf

    src = str(tmp_path / "in" / "model.ckpt")
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        emb = tf.compat.v1.get_variable(
            "emb", [10, 4], partitioner=tf.compat.v1.fixed_size_partitioner(2),
            initializer=tf.compat.v1.random_normal_initializer(seed=1))
        loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(emb, [1, 7])))
        train = tf.compat.v1.train.AdamOptimizer(0.1).minimize(loss)
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(train)
        tf.compat.v1.train.Saver().save(sess, src)
    stripped = strip_checkpoint(src, str(tmp_path / "s" / "m"), optimizer_slots=True,
                                progress=False)
    assert sorted(read_vars(stripped.prefix)) == ["emb"]
    full = read_vars(src)["emb"]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(stripped.prefix + ".meta")
        saver.restore(sess, stripped.prefix)
        parts = {v.op.name: sess.run(v) for v in tf.compat.v1.global_variables()}
    assert sorted(parts) == ["emb/part_0", "emb/part_1"]
    assert np.array_equal(np.concatenate([parts["emb/part_0"], parts["emb/part_1"]]), full)


def test_a_piece_size_below_one_megabyte_is_refused(mlp_ckpt, tmp_path):
    """--batch-mb 0 would stream a tensor one value at a time: refused, nothing written."""
    r = run_cli("strip", mlp_ckpt, "--optimizer-slots", "--batch-mb", "0",
                "--out", str(tmp_path / "o" / "m.ckpt"))
    assert r.returncode == 2
    assert "--batch-mb: '0': give a size in MB of at least 1" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("dropped", [50, 12000])
def test_a_plan_of_thousands_of_changes_lists_the_first_and_counts_the_rest(dropped):
    """A strip of a checkpoint of 12,000 tensors prints 20 of them and how many more, not
    12,000 lines; up to 50 are all listed; the JSON plan always has every one."""
    from ckptsurgery.migrate.rewrite import RewritePlan

    targets = {f"layer{i}/kernel/Adam": None for i in range(dropped)}
    targets["layer0/kernel"] = "layer0/kernel"
    plan = RewritePlan("strip", targets)
    lines = plan.lines()
    drops = [line for line in lines if line.startswith("  drop   ")]
    assert lines[0] == f"strip: 1 variable(s) kept, {dropped} dropped, 0 renamed, 0 cast"
    if dropped == 50:
        assert len(drops) == 50 and len(lines) == 51
    else:
        assert drops == [f"  drop   {k}" for k in plan.dropped[:20]]
        assert lines[-1] == "  ... and 11,980 more dropped (--json lists all)"
    assert len(plan.as_dict()["dropped"]) == dropped
