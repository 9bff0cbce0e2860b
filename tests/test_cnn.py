"""Grafting the models people have: a CNN with batch norm and an ``is_training`` switch, an RNN
with an initial-state placeholder, images in class folders, small-data transfer.

The CNN fixture (``fixtures/cnn``, genuine ``tf.compat.v1.layers``) was trained on the digits
0-4 of the MNIST subset shipped in the package; the tests transfer it to the digits 5-9 with
100 images per digit, as the classic exercise does, and compare with plain TensorFlow doing the
same by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURE_CNN, FIXTURE_MLP, FIXTURE_RNN, read_vars, run_cli
from migrate_helpers import corpus_prefix, entries_with_meta
from safety_helpers import assert_clean_error

from ckptsurgery.graft.build import GraftSpec
from ckptsurgery.graft.job import GraftJob, run_graft
from ckptsurgery.graph.layers import DenseSpec
from ckptsurgery.train.data import BUILTIN_SUBSET, load_dataset, select_classes, split
from ckptsurgery.train.fit import TrainConfig

POOL = "pool2/MaxPool"
FROZEN = ("conv1/kernel", "conv1/bias", "bn1/gamma", "bn1/beta", "bn1/moving_mean",
          "bn1/moving_variance", "conv2/kernel", "conv2/bias", "bn2/gamma", "bn2/beta",
          "bn2/moving_mean", "bn2/moving_variance")
TRAIN = TrainConfig(optimizer="adam", lr=0.001, epochs=5, batch_size=50, seed=42, progress=False)


def _cnn_job(out: str, **spec) -> GraftJob:
    return GraftJob(
        FIXTURE_CNN,
        GraftSpec(at=POOL, layers=[DenseSpec("fc2", 64, "relu"), DenseSpec("new_logits", 5)],
                  **{"pool": "flatten", "cut_after": POOL, **spec}),
        out, data=BUILTIN_SUBSET, train=TRAIN, valid_size=1000, classes=[5, 6, 7, 8, 9],
        per_class=100)


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    """The CNN grafted on its last pooling output, flattened, conv and batch norm cut off,
    trained on 100 images of each of the digits 5-9."""
    out = str(tmp_path_factory.mktemp("cnn") / "cnn59.ckpt")
    return out, run_graft(_cnn_job(out), log=lambda line: None)


def _by_hand(data) -> float:
    """The same transfer in plain TensorFlow, as a user would write it: import the meta-graph,
    stop_gradient after pool2, flatten, two new dense layers, is_training fed False, the same
    batches in the same order, the best epoch's validation accuracy."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    graph.seed = 42
    with graph.as_default():
        saver = tf1.train.import_meta_graph(FIXTURE_CNN + ".meta", clear_devices=True)
        x = graph.get_tensor_by_name("x:0")
        is_training = graph.get_tensor_by_name("is_training:0")
        frozen = tf1.stop_gradient(graph.get_tensor_by_name(POOL + ":0"))
        flat = tf1.reshape(frozen, [-1, 7 * 7 * 16])
        with tf1.variable_scope("fc2"):
            k1 = tf1.get_variable("kernel", [784, 64], initializer=tf1.glorot_uniform_initializer())
            b1 = tf1.get_variable("bias", [64], initializer=tf1.zeros_initializer())
        hidden = tf.nn.relu(tf1.nn.bias_add(tf1.matmul(flat, k1), b1))
        with tf1.variable_scope("new_logits"):
            k2 = tf1.get_variable("kernel", [64, 5], initializer=tf1.glorot_uniform_initializer())
            b2 = tf1.get_variable("bias", [5], initializer=tf1.zeros_initializer())
        logits = tf1.nn.bias_add(tf1.matmul(hidden, k2), b2)
        y = tf1.placeholder(tf.int64, (None,))
        loss = tf1.reduce_mean(tf1.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits))
        accuracy = tf1.reduce_mean(tf1.cast(tf1.nn.in_top_k(logits, y, 1), tf.float32))
        step = tf1.train.AdamOptimizer(0.001).minimize(loss, var_list=[k1, b1, k2, b2])
        init = tf1.variables_initializer(tf1.global_variables())
    rng = np.random.RandomState(42)
    best = 0.0
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        saver.restore(sess, FIXTURE_CNN)
        for _ in range(5):
            order = rng.permutation(len(data.y_train))
            for i in range(0, len(order), 50):
                idx = order[i:i + 50]
                sess.run(step, {x: data.x_train[idx], y: data.y_train[idx], is_training: False})
            best = max(best, float(sess.run(accuracy, {x: data.x_valid, y: data.y_valid,
                                                       is_training: False})))
    return best


def _run_in_plain_tensorflow(prefix: str, x_shape: tuple, switch: str) -> str:
    """Import and restore ``prefix`` in a fresh process with plain TensorFlow, run its logits
    feeding only ``x:0`` zeros of ``x_shape``: "<output shape> <op type of switch>"."""
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "tf1 = tf.compat.v1\n"
            "g = tf.Graph()\n"
            "with g.as_default(), tf1.Session(graph=g) as s:\n"
            "    tf1.train.import_meta_graph(sys.argv[1] + '.meta').restore(s, sys.argv[1])\n"
            "    out = s.run(g.get_collection('logits')[0], "
            "{'x:0': np.zeros(eval(sys.argv[2]), np.float32)})\n"
            "    print(out.shape, g.get_operation_by_name(sys.argv[3]).type)\n")
    proc = subprocess.run([sys.executable, "-c", code, prefix, repr(x_shape), switch],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_cnn_transfer_matches_plain_tensorflow_by_hand(transfer):
    _, result = transfer
    dataset = select_classes(load_dataset(BUILTIN_SUBSET, input_shape=[None, 28, 28, 1]),
                             [5, 6, 7, 8, 9])
    data = split(dataset, 1000, seed=42, per_class=100)
    assert len(data.y_train) == 500 and sorted(set(data.y_train.tolist())) == [0, 1, 2, 3, 4]
    mine = result.training.best_valid_accuracy
    plain = _by_hand(data)
    print(f"CNN 0-4 -> 5-9, 100 per digit, 5 epochs: ckptsurgery {mine:.4f}, plain TF {plain:.4f}")
    assert mine > 0.8  # chance is 0.2
    assert abs(mine - plain) <= 0.01
    assert result.data["label_map"] == {"5": 0, "6": 1, "7": 2, "8": 3, "9": 4}
    assert result.data["train_rows"] == 500


def test_cnn_transfer_keeps_conv_and_batch_norm_bit_identical(transfer):
    out, result = transfer
    base, new = read_vars(FIXTURE_CNN), read_vars(out)
    for name in FROZEN:
        assert new[name].tobytes() == base[name].tobytes(), name
    assert [s for s, _ in result.plan.batch_norm] == ["bn1", "bn2"]
    assert all(mode.startswith("inference") for _, mode in result.plan.batch_norm)
    assert result.plan.pooled_shape == [None, 784] and result.plan.at_shape == [None, 7, 7, 16]
    assert [(f.name, f.value) for f in result.plan.feeds] == [("is_training", False)]


@pytest.mark.slow
def test_the_export_runs_in_plain_tensorflow_without_feeding_is_training(transfer):
    out, _ = transfer
    assert _run_in_plain_tensorflow(out, (3, 28, 28, 1), "is_training") == \
        "(3, 5) PlaceholderWithDefault"


@pytest.mark.slow
def test_tf2onnx_converts_the_export_and_agrees(transfer, tmp_path):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    import tensorflow as tf

    out, result = transfer
    onnx_path = str(tmp_path / "cnn.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--checkpoint", out + ".meta", "--inputs",
         "x:0", "--outputs", result.plan.output, "--output", onnx_path],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.random.RandomState(1).rand(4, 28, 28, 1).astype(np.float32)
    sess = ort.InferenceSession(onnx_path)
    onnx_logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    g = tf.Graph()
    with g.as_default(), tf.compat.v1.Session(graph=g) as s:
        tf.compat.v1.train.import_meta_graph(out + ".meta").restore(s, out)
        tf_logits = s.run(result.plan.output, {"x:0": x})
    np.testing.assert_allclose(onnx_logits, tf_logits, atol=1e-4, rtol=0)


def test_global_average_pooling_grafts_and_trains(tmp_path):
    job = _cnn_job(str(tmp_path / "avg.ckpt"), pool="avg")
    job.train = TrainConfig(epochs=5, lr=0.01, progress=False)
    result = run_graft(job, log=lambda line: None)
    assert result.plan.pooled_shape == [None, 16]
    assert result.training.best_valid_accuracy > 0.3
    assert read_vars(job.out)["fc2/kernel"].shape == (16, 64)


def test_bn_train_updates_the_moving_statistics_of_the_layers_that_train(tmp_path):
    job = _cnn_job(str(tmp_path / "bn.ckpt"), pool="avg", cut_after=None,
                   train_scope="bn2|fc2|new_logits", bn_train=True)
    job.train = TrainConfig(epochs=5, lr=0.01, progress=False)
    result = run_graft(job, log=lambda line: None)
    modes = dict(result.plan.batch_norm)
    assert modes["bn2"].startswith("training")
    assert modes["bn1"].startswith("batch statistics in training steps") and \
        "shares is_training" in modes["bn1"] and "kept bit-identical" in modes["bn1"]
    base, new = read_vars(FIXTURE_CNN), read_vars(job.out)
    assert new["bn2/moving_mean"].tobytes() != base["bn2/moving_mean"].tobytes()
    assert new["bn2/moving_variance"].tobytes() != base["bn2/moving_variance"].tobytes()
    for name in ("bn1/moving_mean", "bn1/moving_variance", "conv1/kernel", "conv2/kernel"):
        assert new[name].tobytes() == base[name].tobytes(), name
    # Reported, not judged: 50 steps move the moving averages (momentum 0.99) only part of the
    # way to the new batch statistics, which is why inference mode is the default.
    print(f"--bn-train, 5 epochs: valid accuracy {result.training.best_valid_accuracy:.4f}")
    assert len(result.training.epochs) == 5


@pytest.mark.slow
def test_rnn_grafts_and_trains_with_a_zero_initial_state(tmp_path):
    out = str(tmp_path / "rnn.ckpt")
    result = run_graft(GraftJob(
        FIXTURE_RNN, GraftSpec(at="rnn/while/Exit_3", layers=[DenseSpec("new_logits", 10)],
                               feeds={"init_state": "zeros"}),
        out, data=BUILTIN_SUBSET, train=TrainConfig(epochs=1, progress=False)),
        log=lambda line: None)
    assert result.plan.inputs == "x:0"
    assert result.training.best_valid_accuracy > 0.3
    # the state defaults to zeros of the batch's size
    assert _run_in_plain_tensorflow(out, (3, 28, 28), "init_state") == \
        "(3, 10) PlaceholderWithDefault"


def test_a_class_folder_of_images_trains_end_to_end(tmp_path):
    from PIL import Image

    with np.load(BUILTIN_SUBSET) as f:
        x, y = f["x_train"], f["y_train"]
    root = tmp_path / "digits"
    for label, name in ((1, "one"), (3, "three"), (7, "seven")):
        for part, rows in (("train", 80), ("test", 10)):
            folder = root / part / name
            folder.mkdir(parents=True)
            picks = np.flatnonzero(y == label)[: rows] if part == "train" else \
                np.flatnonzero(y == label)[-rows:]
            for i in picks:
                Image.fromarray(x[i]).save(folder / f"{i}.png")
    out = str(tmp_path / "folder.ckpt")
    job = GraftJob(FIXTURE_CNN, GraftSpec(at=POOL, layers=[DenseSpec("new_logits", 3)],
                                          pool="flatten", cut_after=POOL),
                   out, data=str(root), train=TrainConfig(epochs=5, lr=0.01, progress=False),
                   valid_size=30)
    result = run_graft(job, log=lambda line: None)
    assert result.data["class_names"] == ["one", "seven", "three"]
    assert (result.data["train_rows"], result.data["valid_rows"], result.data["test_rows"]) == \
        (210, 30, 30)
    assert result.training.best_valid_accuracy > 0.8  # chance is 1/3
    assert result.training.test_accuracy is not None


# --- one line and exit 2 for each mistake ------------------------------------------------------

def _graft(*args: str):
    return run_cli("graft", *args, "--out", "/nonexistent/never-written.ckpt")


def test_a_feature_map_without_pool_names_the_option():
    r = _graft(FIXTURE_CNN, "--at", POOL, "--dense", "a:5", "--dry-run")
    assert_clean_error(r.returncode, r.stderr, 2, "feature map of shape [?, 7, 7, 16]",
                       "--pool flatten")


def test_an_unfed_placeholder_is_listed_with_the_feed_to_write():
    r = _graft(FIXTURE_RNN, "--at", "rnn/while/Exit_3", "--inputs", "x", "--dense", "a:5",
               "--dry-run")
    assert_clean_error(r.returncode, r.stderr, 2, "init_state (float32 [?, 32], read by",
                       "--feed init_state=zeros")


def test_an_unknown_feed_name_gets_the_nearest(tmp_path):
    r = _graft(FIXTURE_CNN, "--at", POOL, "--pool", "avg", "--dense", "a:5", "--feed",
               "is_trainng=false", "--dry-run")
    assert_clean_error(r.returncode, r.stderr, 2, "'is_trainng'", "did you mean 'is_training'")


def test_an_unparsable_feed_value_is_a_clean_error():
    r = _graft(FIXTURE_CNN, "--at", POOL, "--pool", "avg", "--dense", "a:5", "--feed",
               "is_training=maybe", "--dry-run")
    assert_clean_error(r.returncode, r.stderr, 2, "is_training=maybe", "true or false")
    r = _graft(FIXTURE_CNN, "--at", POOL, "--pool", "avg", "--dense", "a:5", "--feed",
               "is_training", "--dry-run")
    assert_clean_error(r.returncode, r.stderr, 2, "not NAME=VALUE")


def test_data_that_does_not_fit_the_input_names_both_shapes(tmp_path):
    npz = str(tmp_path / "rgb.npz")
    rng = np.random.RandomState(0)
    np.savez(npz, x_train=rng.randint(0, 256, (40, 32, 32, 3)).astype(np.uint8),
             y_train=rng.randint(0, 5, 40))
    r = run_cli("graft", FIXTURE_CNN, "--at", POOL, "--pool", "avg", "--dense", "a:5",
                "--data", npz, "--valid-size", "10", "--out", str(tmp_path / "o.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "32x32x3", "28, 28, 1")
    assert not os.path.exists(tmp_path / "o.ckpt.index")


def test_an_empty_class_folder_is_a_clean_error(tmp_path):
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "train" / "dog").mkdir(parents=True)
    r = run_cli("graft", FIXTURE_CNN, "--at", POOL, "--pool", "avg", "--dense", "a:2",
                "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "has no images")


def test_classes_naming_absent_labels_is_a_clean_error(tmp_path):
    r = run_cli("graft", FIXTURE_MLP, "--at", "hiddens3", "--dense", "logits:2", "--data",
                BUILTIN_SUBSET, "--classes", "11-12", "--out", str(tmp_path / "o.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "--classes", "11")


def test_a_scalar_float_placeholder_is_never_taken_for_the_input():
    """keep_prob sits below the CNN's logits; the input is still found without --inputs."""
    r = run_cli("graft", FIXTURE_CNN, "--at", "fc/Relu", "--dense", "a:5", "--dry-run", "--out",
                "/nonexistent/x")
    assert r.returncode == 0, r.stderr
    assert "inputs:  x:0" in r.stdout
    assert "keep_prob=1.0 (default: a keep probability)" in r.stdout


# --- where to graft ---------------------------------------------------------------------------

def _graft_points(prefix: str) -> list[dict]:
    r = run_cli("inspect", prefix, "--json", "--check-import")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["meta"]["graft_points"]


def test_inspect_lists_graft_points_of_the_cnn_with_their_flags():
    points = _graft_points(FIXTURE_CNN)
    assert points[0] == {"at": "fc/Relu:0", "op": "Relu", "shape": [None, 32], "flags": []}
    pool = next(p for p in points if p["at"] == "pool2/MaxPool:0")
    assert pool["shape"] == [None, 7, 7, 16] and pool["flags"] == ["--pool", "flatten"]


def test_inspect_lists_the_rnn_state_with_the_input_and_the_feed_it_needs():
    (point,) = _graft_points(FIXTURE_RNN)
    assert point == {"at": "rnn/while/Exit_3:0", "op": "Exit", "shape": [None, 32],
                     "flags": ["--inputs", "x", "--feed", "init_state=zeros"]}


@pytest.mark.parametrize("entry", entries_with_meta())
def test_every_corpus_graph_has_a_graft_point_that_a_dry_run_accepts(shared, entry, tmp_path):
    prefix = corpus_prefix(entry)
    points = _graft_points(prefix)
    assert points, f"{entry}: no graft point"
    first = points[0]
    r = run_cli("graft", prefix, "--at", first["at"], *first["flags"], "--dense", "x:5",
                "--dry-run", "--out", str(tmp_path / "never.ckpt"))
    assert r.returncode == 0, r.stderr
    assert "dry run: nothing written" in r.stdout
    assert not os.listdir(tmp_path)
