"""``ckptsurgery export`` and ``graft --export``: TF1 checkpoints as SavedModel, TFLite, ONNX.

Every export is judged by its destination's own loader: ``tf.saved_model.load`` in eager
TensorFlow 2, ``tf.lite.Interpreter``, Keras 3's ``TFSMLayer``, onnxruntime; and against a
plain TF1 session of the checkpoint (``import_meta_graph`` + ``Saver.restore``, the switch
fed false) that ckptsurgery's code does not touch.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from conftest import CORPUS, FIXTURE_CNN, FIXTURE_MIXED, FIXTURE_MLP, FIXTURE_RNN
from safety_helpers import assert_clean_error, run_main


def _export(tmp, ckpt, to, name, *extra):
    out = str(tmp / name)
    code, stdout, err = run_main("export", ckpt, "--to", to, "--out", out, "--json", *extra)
    assert code == 0, err
    return out, json.loads(stdout)


def _rows(shape, n=100, seed=1):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def _tf1_outputs(ckpt, output, feed):
    """The output of a plain TF1 session: import_meta_graph + Saver.restore, ``feed`` by name."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        saver = tf1.train.import_meta_graph(ckpt + ".meta", clear_devices=True)
        saver.restore(sess, ckpt)
        return sess.run(output, {graph.get_tensor_by_name(k): v for k, v in feed.items()})


def _saved_model(path, **inputs):
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()})
            .items()}


def _tflite(path, **inputs):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    return interpreter.get_signature_runner("serving_default")(**inputs)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cnn")
    saved, saved_info = _export(tmp, FIXTURE_CNN, "saved-model", "cnn_saved_model")
    lite, lite_info = _export(tmp, FIXTURE_CNN, "tflite", "cnn.tflite")
    x = _rows((28, 28, 1))
    expected = _tf1_outputs(FIXTURE_CNN, "logits/BiasAdd:0",
                            {"x:0": x, "is_training:0": False, "keep_prob:0": 1.0})
    return {"saved": saved, "saved_info": saved_info, "lite": lite, "lite_info": lite_info,
            "x": x, "expected": expected}


def test_cnn_saved_model_signature_takes_the_input_alone(cnn):
    info = cnn["saved_info"]
    assert [(p["key"], p["dtype"], p["shape"]) for p in info["inputs"]] == [
        ("x", "float32", [None, 28, 28, 1])]
    assert [(p["key"], p["tensor"], p["shape"]) for p in info["outputs"]] == [
        ("logits", "logits/BiasAdd:0", [None, 5])]
    assert {f["name"]: f["value"] for f in info["feeds"]} == {"is_training": False}
    assert info["dropout_off"] == ["dropout"]
    assert info["check"]["max_diff"]["logits"] <= 1e-5
    got = _saved_model(cnn["saved"], x=cnn["x"])["logits"]
    assert got.shape == (100, 5)
    np.testing.assert_allclose(got, cnn["expected"], atol=1e-5, rtol=0)


def test_cnn_saved_model_runs_another_batch_size_and_is_deterministic(cnn):
    first = _saved_model(cnn["saved"], x=cnn["x"][:7])["logits"]
    again = _saved_model(cnn["saved"], x=cnn["x"][:7])["logits"]
    assert first.shape == (7, 5)
    np.testing.assert_array_equal(first, again)  # dropout off, batch norm in inference mode
    np.testing.assert_allclose(first, cnn["expected"][:7], atol=1e-5, rtol=0)


def test_cnn_saved_model_has_no_devices_and_saved_model_cli_reads_it(cnn):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(cnn["saved"], "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    meta = proto.meta_graphs[0]
    assert not [n.name for n in meta.graph_def.node if n.device]
    signature = meta.signature_def["serving_default"]
    assert list(signature.inputs) == ["x"] and list(signature.outputs) == ["logits"]
    assert not [n for n in meta.graph_def.node if n.op == "Placeholder" and n.name != "x"]


@pytest.mark.slow
def test_saved_model_cli_shows_the_signature(cnn):
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all",
         "--dir", cnn["saved"]], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "signature_def['serving_default']" in shown.stdout
    assert "inputs['x'] tensor_info" in shown.stdout
    assert "outputs['logits'] tensor_info" in shown.stdout
    assert "shape: (-1, 28, 28, 1)" in shown.stdout


def test_keras3_tfsmlayer_predicts_what_the_saved_model_gives(cnn):
    import keras

    model = keras.Sequential([keras.layers.TFSMLayer(cnn["saved"],
                                                     call_endpoint="serving_default")])
    predicted = model.predict(cnn["x"], verbose=0)
    np.testing.assert_allclose(predicted["logits"], _saved_model(cnn["saved"], x=cnn["x"])
                               ["logits"], atol=1e-6, rtol=0)


def test_cnn_tflite_runs_in_the_interpreter_within_1e_4(cnn):
    assert cnn["lite_info"]["check"]["max_diff"]["logits"] <= 1e-4
    got = _tflite(cnn["lite"], x=cnn["x"])["logits"]
    assert got.shape == (100, 5)
    np.testing.assert_allclose(got, cnn["expected"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(_tflite(cnn["lite"], x=cnn["x"][:3])["logits"],
                               cnn["expected"][:3], atol=1e-4, rtol=0)


def test_check_data_is_used_and_a_difference_above_atol_writes_nothing(cnn, tmp_path):
    data = str(tmp_path / "batch.npz")
    np.savez(data, x=cnn["x"][:10])
    out = str(tmp_path / "strict.tflite")
    code, _, err = run_main("export", FIXTURE_CNN, "--to", "tflite", "--out", out,
                            "--check-data", data, "--atol", "0")
    line = assert_clean_error(code, err, 2, "differs from the TF1 session's", "10 rows",
                              "nothing written")
    assert "logits" in line
    assert os.listdir(tmp_path) == ["batch.npz"]


@pytest.mark.parametrize("args,words", [
    (["--outputs", "logits/BiasAdz"], ["'logits/BiasAdz'", "logits/BiasAdd"]),
    (["--inputs", "x", "--feed", "is_trainin=false"], ["'is_trainin'", "is_training"]),
], ids=["missing-output", "unknown-feed"])
def test_bad_names_are_one_line(tmp_path, args, words):
    code, _, err = run_main("export", FIXTURE_CNN, "--to", "saved-model",
                            "--out", str(tmp_path / "m"), *args)
    assert_clean_error(code, err, 2, *words)
    assert not os.listdir(tmp_path)


def test_placeholder_with_no_value_and_no_default_is_one_line(tmp_path):
    code, _, err = run_main("export", FIXTURE_RNN, "--inputs", "x", "--to", "saved-model",
                            "--out", str(tmp_path / "rnn"))
    assert_clean_error(code, err, 2, "init_state", "--feed init_state=zeros")
    assert not os.listdir(tmp_path)


def test_existing_output_needs_force(cnn, tmp_path):
    out = tmp_path / "taken.tflite"
    out.write_bytes(b"keep me")
    code, _, err = run_main("export", FIXTURE_CNN, "--to", "tflite", "--out", str(out))
    assert_clean_error(code, err, 2, "exists", "--force")
    assert out.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["taken.tflite"]


def test_dropout_sites_plain_and_inside_a_cond():
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graphdef.dropout import dropout_sites, without_dropout

    cnn = open_checkpoint(FIXTURE_CNN).meta_graph
    assert [(s.scope, s.input, s.output) for s in dropout_sites(cnn)] == [
        ("dropout", "flatten/Reshape:0", "dropout/SelectV2:0")]
    mixed = open_checkpoint(FIXTURE_MIXED).meta_graph
    sites = dropout_sites(mixed)  # tf.cond(is_training, dropout, identity): x via a Switch
    assert [(s.scope, s.input) for s in sites] == [
        ("dropout_switch/dropout", "dropout_switch/dropout/Mul/Switch:1")]
    bypassed = without_dropout(mixed, sites)
    merge = next(n for n in bypassed.graph_def.node if n.name == "dropout_switch/Merge")
    assert list(merge.input) == ["dropout_switch/Identity", "dropout_switch/dropout/Mul/Switch:1"]
    assert dropout_sites(bypassed) == []


def test_dropout_stays_off_with_the_training_switch_on(tmp_path):
    out, info = _export(tmp_path, FIXTURE_MIXED, "saved-model", "m", "--feed",
                        "is_training=true")
    assert info["dropout_off"] == ["dropout_switch/dropout"]
    x = _rows((4,))
    first, again = _saved_model(out, x=x)["logits"], _saved_model(out, x=x)["logits"]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(_saved_model(out, x=x[:9])["logits"], first[:9], atol=1e-6,
                               rtol=0)


def test_a_feed_the_outputs_do_not_need_is_a_warning(tmp_path):
    code, _, err = run_main("export", FIXTURE_CNN, "--to", "saved-model", "--out",
                            str(tmp_path / "m"), "--feed", "keep_prob=0.5")
    assert code == 0, err
    assert "warning: --feed keep_prob: not needed by the output(s)" in err


def _tiny_checkpoint(folder, build):
    """A checkpoint of ``build(x)`` on a [None, 4] input ``x``, saved by plain TF1."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, (None, 4), name="x")
        w = tf1.get_variable("w", initializer=tf1.ones((4, 4)))
        out = tf.identity(build(tf.matmul(x, w)), name="out")
        tf1.add_to_collection("outputs", out)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            prefix = os.path.join(folder, "model.ckpt")
            tf1.train.Saver().save(sess, prefix)
    return prefix


def test_an_op_tflite_refuses_is_named(tmp_path):
    import tensorflow as tf

    prefix = _tiny_checkpoint(
        str(tmp_path), lambda h: tf.reshape(tf.linalg.det(tf.reshape(h, (-1, 2, 2))), (-1, 1)))
    out = tmp_path / "det.tflite"
    code, _, err = run_main("export", prefix, "--to", "tflite", "--out", str(out))
    assert_clean_error(code, err, 2, "TFLite has no built-in kernel for MatrixDeterminant",
                       "--to saved-model")
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_a_py_func_is_named(tmp_path):
    import tensorflow as tf

    prefix = _tiny_checkpoint(
        str(tmp_path), lambda h: tf.compat.v1.py_func(lambda a: a, [h], tf.float32))
    code, _, err = run_main("export", prefix, "--to", "saved-model", "--out",
                            str(tmp_path / "m"), "--outputs", "out", "--allow-unsafe-ops")
    assert_clean_error(code, err, 2, "PyFunc", "py_func")
    assert not (tmp_path / "m").exists()


def test_onnx_without_tf2onnx_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_tf2onnx(name, *args, **kwargs):
        if name.startswith("tf2onnx"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tf2onnx)
    code, _, err = run_main("export", FIXTURE_MLP, "--to", "onnx", "--out",
                            str(tmp_path / "m.onnx"))
    assert_clean_error(code, err, 2, "tf2onnx", "pip install tf2onnx")
    assert not os.listdir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("ckpt,extra,output,feed", [
    (FIXTURE_MLP, [], "dnn/logits/BiasAdd:0", {}),
    (FIXTURE_RNN, ["--inputs", "x", "--feed", "init_state=zeros"], "logits/BiasAdd:0",
     {"init_state:0": np.zeros((100, 32), np.float32)}),
], ids=["mlp", "rnn"])
def test_mlp_and_rnn_export_to_saved_model_and_tflite(tmp_path, ckpt, extra, output, feed):
    saved, info = _export(tmp_path, ckpt, "saved-model", "sm", *extra)
    lite, lite_info = _export(tmp_path, ckpt, "tflite", "m.tflite", *extra)
    key = info["inputs"][0]["key"]
    x = _rows(info["inputs"][0]["shape"][1:])
    expected = _tf1_outputs(ckpt, output, {f"{key}:0": x, **feed})
    out_key = info["outputs"][0]["key"]
    np.testing.assert_allclose(_saved_model(saved, **{key: x})[out_key], expected, atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(_saved_model(saved, **{key: x[:3]})[out_key], expected[:3],
                               atol=1e-5, rtol=0)
    if lite_info["single_batch"]:  # a TF1 RNN's arrays: one row per call
        got = np.concatenate([_tflite(lite, **{key: x[i:i + 1]})[out_key] for i in range(100)])
    else:
        got = _tflite(lite, **{key: x})[out_key]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_dynamic_quantization_is_checked_against_a_share_of_the_output(tmp_path, cnn):
    out, info = _export(tmp_path, FIXTURE_CNN, "tflite", "q.tflite", "--quantize", "dynamic")
    assert info["quantize"] == "dynamic"
    assert os.path.getsize(out) < os.path.getsize(cnn["lite"]) / 2  # int8 weights
    got = _tflite(out, x=cnn["x"])["logits"]
    allowed = 0.05 * np.abs(cnn["expected"]).max()
    assert 1e-3 < info["check"]["atol"] <= allowed * 1.5  # 5% of its check batch's largest
    assert np.abs(got - cnn["expected"]).max() <= allowed


@pytest.mark.slow
def test_force_replaces_a_saved_model_folder_whole(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("from before")
    code, _, err = run_main("export", FIXTURE_MLP, "--to", "saved-model", "--out", str(out),
                            "--force")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["m"]
    assert "stale.txt" not in os.listdir(out) and "saved_model.pb" in os.listdir(out)
    assert _saved_model(str(out), X=_rows((784,), n=2))["logits"].shape == (2, 10)


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    out, info = _export(tmp_path, FIXTURE_RNN, "onnx", "rnn.onnx", "--inputs", "x",
                        "--feed", "init_state=zeros")
    x = _rows((28, 28))
    expected = _tf1_outputs(FIXTURE_RNN, "logits/BiasAdd:0",
                            {"x:0": x, "init_state:0": np.zeros((100, 32), np.float32)})
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = session.run(["logits/BiasAdd:0"], {"x:0": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert info["check"]["max_diff"]["logits"] <= 1e-4


@pytest.mark.slow
def test_graft_export_writes_a_checked_saved_model_and_tflite_beside_the_checkpoint(tmp_path):
    out = str(tmp_path / "g" / "cnn.ckpt")
    for to in ("saved-model", "tflite"):
        code, stdout, err = run_main(
            "graft", FIXTURE_CNN, "--at", "pool2/MaxPool", "--pool", "flatten",
            "--dense", "fc2:16:relu", "--dense", "logits:5", "--out", out, "--export", to,
            "--force", "--json")
        assert code == 0, err
        assert json.loads(stdout)["export"]["check"]["max_diff"]["logits"] <= 1e-4
    x = _rows((28, 28, 1))
    expected = _tf1_outputs(out, "logits/BiasAdd:0", {"x:0": x, "is_training:0": False})
    np.testing.assert_allclose(_saved_model(out + "_saved_model", x=x)["logits"], expected,
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(_tflite(out + ".tflite", x=x)["logits"], expected, atol=1e-4,
                               rtol=0)


# Real checkpoints with a .meta: the flags their graph needs, or why it cannot be exported.
CORPUS_EXPORTS = {
    "AloshkaD__traffic-signs__model_v1/model.ckpt": [],
    "Aplain__rnnRepo__model/model.ckpt": ["--inputs", "input", "--feed", "istate=zeros"],
    "Chris-Slattery__Multilayer-Neural-Network__model/model.ckpt": [],
    "DerflaNehc__MNIST_NN_P2__model/model.ckpt": [],
    "daniellazabari__chatbot__tflearn_model/model.tfl": [],
    "haerfest__handson-ml__my_model_final/my_model_final.ckpt": [],
    "irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4/"
    "my_best_mnist_model_0_to_4": [],
    "jncharon__wine-classifier__estimator_ckpt-3374/model.ckpt-3374":
        ["--inputs", "dnn/input_from_feature_columns/input_layer/concat"],
    # The wide part reads the sparse features from the input queue, not a dense layer: the
    # whole model is refused, its DNN part (partitioned resource variables) exports.
    "taiguangxing__Wide_n_deep__estimator_ckpt-2010/model.ckpt-2010": "queue",
}


def test_every_corpus_checkpoint_with_a_meta_is_listed(shared):
    with open(os.path.join(CORPUS, "INDEX.json"), encoding="utf-8") as f:
        index = json.load(f)
    assert sorted(CORPUS_EXPORTS) == sorted(f"{r['dir']}/{r['prefix']}" for r in index
                                            if r["has_meta"])


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(CORPUS_EXPORTS))
def test_corpus_checkpoint_exports_and_passes_the_check(shared, tmp_path, path):
    extra = CORPUS_EXPORTS[path]
    ckpt = os.path.join(CORPUS, path)
    if extra == "queue":
        code, _, err = run_main("export", ckpt, "--to", "saved-model", "--out",
                                str(tmp_path / "m"), "--inputs",
                                "dnn/input_from_feature_columns/input_layer/concat")
        assert_clean_error(code, err, 2, "cannot export", "a queue or dataset input")
        assert not os.listdir(tmp_path)
        extra = ["--inputs", "dnn/input_from_feature_columns/input_layer/concat",
                 "--outputs", "dnn/logits/BiasAdd"]
    out, info = _export(tmp_path, ckpt, "saved-model", "m", *extra)
    assert max(info["check"]["max_diff"].values()) <= 1e-5
    assert info["check"]["rows"] == 100
    inputs = {p["key"]: _rows([d or 8 for d in p["shape"][1:]], n=5) for p in info["inputs"]}
    got = _saved_model(out, **inputs)
    assert sorted(got) == sorted(p["key"] for p in info["outputs"])
    assert all(len(v) == 5 for v in got.values())


# TFLite from the same checkpoints: the Estimators' outputs are their logits layer (the head's
# logits wait on asserts that depend on the global step, a ref variable no converter freezes).
CORPUS_TFLITE = {
    **{path: extra for path, extra in CORPUS_EXPORTS.items() if extra != "queue"},
    "jncharon__wine-classifier__estimator_ckpt-3374/model.ckpt-3374":
        ["--inputs", "dnn/input_from_feature_columns/input_layer/concat",
         "--outputs", "dnn/logits/BiasAdd"],
    "taiguangxing__Wide_n_deep__estimator_ckpt-2010/model.ckpt-2010":
        ["--inputs", "dnn/input_from_feature_columns/input_layer/concat",
         "--outputs", "dnn/logits/BiasAdd"],
}


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(CORPUS_TFLITE))
def test_corpus_checkpoint_exports_to_tflite(shared, tmp_path, path):
    out, info = _export(tmp_path, os.path.join(CORPUS, path), "tflite", "m.tflite",
                        *CORPUS_TFLITE[path])
    assert max(info["check"]["max_diff"].values()) <= 1e-4
    key = info["inputs"][0]["key"]
    rows = 1 if info["single_batch"] else 5
    got = _tflite(out, **{key: _rows([d or 8 for d in info["inputs"][0]["shape"][1:]],
                                     n=rows)})
    assert sorted(got) == sorted(p["key"] for p in info["outputs"])
