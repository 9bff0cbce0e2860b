"""A checkpoint published without a .meta grafts with its graph built by the user's code.

The model functions below are plain TF1 code written here, as a user would have it; the
checkpoint is the MLP fixture's data without its ``.meta`` (V2, and the same weights saved by
TensorFlow in the V1 single-file format). The grafted output must carry a full ``.meta`` that
plain ``import_meta_graph`` + ``restore`` loads, and the frozen layers must be bit-identical.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import numpy as np
import pytest
from conftest import FIXTURE_MLP, ROOT, read_vars
from safety_helpers import assert_clean_error, run_main

SUBSET = os.path.join(ROOT, "ckptsurgery", "train", "builtin", "mnist_subset.npz")

MODEL = textwrap.dedent('''
    import contextlib

    import tensorflow as tf

    tf1 = tf.compat.v1


    def _dense(x, name, units, relu=True):
        with tf1.variable_scope(name):
            w = tf1.get_variable("kernel", [int(x.shape[-1]), units])
            b = tf1.get_variable("bias", [units], initializer=tf1.zeros_initializer())
        y = tf1.nn.bias_add(tf1.matmul(x, w), b)
        return tf1.nn.relu(y) if relu else y


    def mlp(scope=""):
        x = tf1.placeholder(tf1.float32, [None, 784], name="X")
        tf1.placeholder(tf1.int64, [None], name="y")
        out, ends = x, {}
        with tf1.variable_scope(scope) if scope else contextlib.nullcontext():
            for i, units in enumerate((300, 50, 50, 50, 50), start=1):
                out = _dense(out, f"hidden{i}", units)
                ends[f"hiddens{i}"] = out
            ends["logits"] = _dense(out, "logits", 10, relu=False)
        return ends


    def encoder():
        """The same network under another scope: restored with --map '=encoder/'."""
        return mlp("encoder")


    def only_logits():
        return mlp()["logits"]


    def broken():
        raise RuntimeError("the config file is missing")
''')


@pytest.fixture(scope="module")
def no_meta(tmp_path_factory):
    """The MLP fixture's variables as V2 (``v2/``) and V1 (``v1/``) checkpoints with no .meta,
    and ``model.py`` beside them."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("nometa")
    (folder / "model.py").write_text(MODEL)
    v2 = folder / "v2"
    v2.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(FIXTURE_MLP + suffix, v2 / f"model.ckpt{suffix}")
    values = read_vars(FIXTURE_MLP)
    weights = {k: v for k, v in values.items() if "/Adam" not in k and "power" not in k}
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf1.Variable(v, name=k) for k, v in weights.items()]
        saver = tf1.train.Saver(variables, write_version=tf1.train.SaverDef.V1)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            (folder / "v1").mkdir()
            saver.save(sess, str(folder / "v1" / "model.ckpt"), write_meta_graph=False)
    assert not os.path.exists(folder / "v1" / "model.ckpt.index")  # the old single file
    return folder, weights


def _graft(folder, ckpt, out, *extra):
    return run_main("graft", str(ckpt), "--model", f"{folder}/model.py:mlp", "--at", "hiddens3",
                    "--dense", "hidden4:20:relu", "--dense", "logits:10",
                    "--cut-after", "hiddens2", "--data", SUBSET, "--epochs", "1",
                    "--valid-size", "500", "--out", str(out), *extra)


@pytest.mark.parametrize("fmt", ["v2", "v1"])
def test_graft_without_meta_trains_and_exports_a_meta_that_plain_tf_loads(no_meta, tmp_path, fmt):
    import tensorflow as tf

    folder, weights = no_meta
    out = tmp_path / "out" / "model.ckpt"
    code, stdout, err = _graft(folder, folder / fmt / "model.ckpt", out)
    assert code == 0, err
    assert f"graph: built by {folder}/model.py:mlp" in stdout
    assert "restored 6 variable(s)" in stdout  # hidden1..3; the old top was pruned
    assert os.path.exists(f"{out}.meta")
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as g, tf1.Session() as sess:
        saver = tf1.train.import_meta_graph(f"{out}.meta")
        saver.restore(sess, str(out))
        kernel, = [sess.run(v) for v in tf1.global_variables() if v.op.name == "hidden1/kernel"]
        logits = g.get_collection("logits")[0]
        rows = sess.run(logits, {g.get_tensor_by_name("X:0"): np.zeros((3, 784), np.float32)})
    assert rows.shape == (3, 10)
    np.testing.assert_array_equal(kernel, weights["hidden1/kernel"])  # frozen by the cut
    got = read_vars(str(out))
    for name in ("hidden1/bias", "hidden2/kernel", "hidden2/bias"):
        assert got[name].tobytes() == weights[name].tobytes(), name
    assert got["hidden3/kernel"].tobytes() != weights["hidden3/kernel"].tobytes()


def test_map_reads_graph_scopes_from_the_checkpoints_names(no_meta, tmp_path):
    folder, weights = no_meta
    code, stdout, err = run_main(
        "graft", str(folder / "v2" / "model.ckpt"), "--model", f"{folder}/model.py:encoder",
        "--map", "=encoder/", "--at", "hiddens2", "--dense", "logits:10", "--data", SUBSET,
        "--epochs", "1", "--valid-size", "500", "--train-scope", "logits",
        "--out", str(tmp_path / "m.ckpt"))
    assert code == 0, err
    got = read_vars(str(tmp_path / "m.ckpt"))
    assert got["encoder/hidden1/kernel"].tobytes() == weights["hidden1/kernel"].tobytes()
    assert got["encoder/hidden2/bias"].tobytes() == weights["hidden2/bias"].tobytes()


def test_without_the_map_the_report_names_what_is_missing(no_meta, tmp_path):
    folder, _ = no_meta
    code, _, err = run_main(
        "graft", str(folder / "v2" / "model.ckpt"), "--model", f"{folder}/model.py:encoder",
        "--at", "hiddens2", "--dense", "logits:10", "--out", str(tmp_path / "m.ckpt"))
    line = assert_clean_error(code, err, 2, "missing from checkpoint", "encoder/hidden1/kernel")
    assert not os.path.exists(tmp_path / "m.ckpt.index"), line


def test_inspect_with_model_lists_graft_points_of_the_code_graph(no_meta):
    folder, _ = no_meta
    code, out, err = run_main("inspect", str(folder / "v2" / "model.ckpt"), "--model",
                              f"{folder}/model.py:only_logits")
    assert code == 0, err
    assert f"meta-graph   (built by {folder}/model.py:only_logits)" in out
    assert "inputs       (placeholders) X float32 [?, 784], y int64 [?]" in out
    assert "outputs      (inference) BiasAdd_5:0" in out  # the function's return value
    points = out.split("graft points")[1].splitlines()[1:6]
    assert [p.split()[1] for p in points] == [f"Relu{s}:0" for s in ("_4", "_3", "_2", "_1", "")]


@pytest.mark.parametrize("ref, words", [
    ("nofile.py:mlp", ["no file 'nofile.py'"]),
    ("{folder}/model.py:mpl", ["has no function 'mpl'", "did you mean mlp"]),
    ("{folder}/model.py:broken", ["the model function raised RuntimeError",
                                  "the config file is missing"]),
    ("no_such_package_xyz.models:mlp", ["cannot import module 'no_such_package_xyz.models'"]),
    ("{folder}/model.py", ["give FILE.py:FUNCTION"]),
])
def test_a_bad_model_reference_is_one_line(no_meta, tmp_path, ref, words):
    folder, _ = no_meta
    code, _, err = run_main("graft", str(folder / "v2" / "model.ckpt"), "--model",
                            ref.format(folder=folder), "--at", "logits", "--dense", "x:2",
                            "--out", str(tmp_path / "m.ckpt"))
    assert_clean_error(code, err, 2, *words)
    assert not os.listdir(tmp_path)
