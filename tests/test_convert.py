"""convert: npz, Keras HDF5, safetensors and TF2 outputs that their own loaders read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import read_vars, run_cli
from migrate_helpers import corpus_prefix, readable_entries

from ckptsurgery.errors import SelectionError, UserError
from ckptsurgery.graphdef.slots import classify_by_name as classify
from ckptsurgery.graphdef.slots import clean_name
from ckptsurgery.migrate.convert import convert_checkpoint

IRIS = "irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4"


def _model_vars(src: str) -> dict:
    values = read_vars(src)
    roles = classify(values)
    return {k: v for k, v in values.items() if roles[k].kind in ("model", "bookkeeping")
            and k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _module_tree(names_to_values: dict):
    """TF2 objects whose attribute paths are the names, holding zero variables."""
    import tensorflow as tf

    root = tf.Module()
    for name, value in names_to_values.items():
        obj, parts = root, name.split("/")
        for part in parts[:-1]:
            if not hasattr(obj, part):
                setattr(obj, part, tf.Module())
            obj = getattr(obj, part)
        setattr(obj, parts[-1], tf.Variable(tf.zeros(value.shape, value.dtype)))
    return root


def _texts(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _get(root, name: str):
    for part in name.split("/"):
        root = getattr(root, part)
    return root


@pytest.mark.parametrize("entry", readable_entries())
def test_npz_and_tf2_hold_the_model_bit_for_bit(shared, entry, tmp_path):
    import tensorflow as tf

    src = corpus_prefix(entry)
    expected = {clean_name(k): v for k, v in _model_vars(src).items()}
    result = convert_checkpoint(src, "npz", str(tmp_path / "w.npz"), progress=False)
    with np.load(result.path) as z:
        assert set(z.files) == set(expected)
        assert all(z[n].tobytes() == expected[n].tobytes() for n in expected)
    result = convert_checkpoint(src, "tf2", str(tmp_path / "tf2" / "ckpt"), progress=False)
    root = _module_tree(expected)
    attrs = {k: v for k, v in vars(root).items() if not k.startswith("_")}
    tf.train.Checkpoint(**attrs).restore(result.path).assert_existing_objects_matched()
    for name, value in expected.items():
        assert _get(root, name).numpy().tobytes() == value.tobytes(), name


def test_keras_h5_loads_into_a_keras_model_by_name(shared, tmp_path):
    import keras

    src = corpus_prefix(IRIS)
    result = convert_checkpoint(src, "keras-h5", str(tmp_path / "w.h5"), progress=False)
    model = keras.Sequential([keras.Input((784,))]
                             + [keras.layers.Dense(90, name=f"hidden{i}") for i in range(1, 6)]
                             + [keras.layers.Dense(5, name="logits")])
    model.load_weights(result.path, by_name=True)
    values = read_vars(src)
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        assert np.array_equal(kernel, values[f"{layer.name}/kernel"])
        assert np.array_equal(bias, values[f"{layer.name}/bias"])
    model.load_weights(result.path)  # in layer order too


def test_keras_h5_lists_layers_in_graph_order_and_loads_by_order(shared, tmp_path):
    """Batch norm after the dense layer it normalises, not alphabetically before hidden1; Keras 3
    itself (no tf_keras needed) loads the legacy file into a model built in that order."""
    import h5py
    import keras

    src = corpus_prefix("DerflaNehc__MNIST_NN_P2__model")
    result = convert_checkpoint(src, "keras-h5", str(tmp_path / "w.h5"), progress=False)
    with h5py.File(result.path) as f:
        assert _texts(f.attrs["layer_names"]) == [
            "hidden1", "batch_normalization", "hidden2", "batch_normalization_1", "hidden3",
            "batch_normalization_2", "hidden4", "batch_normalization_3", "hidden5",
            "batch_normalization_4", "output"]
    layers = [keras.Input((784,))]
    for _ in range(5):
        layers += [keras.layers.Dense(100), keras.layers.BatchNormalization()]
    model = keras.Sequential(layers + [keras.layers.Dense(5)])
    model.load_weights(result.path)
    values = read_vars(src)
    suffix = [""] + [f"_{i}" for i in range(1, 5)]
    for i in range(5):
        dense, norm = model.layers[2 * i], model.layers[2 * i + 1]
        assert np.array_equal(dense.get_weights()[0], values[f"hidden{i + 1}/kernel"])
        assert np.array_equal(dense.get_weights()[1], values[f"hidden{i + 1}/bias"])
        for got, name in zip(norm.get_weights(), ("gamma", "beta", "moving_mean",
                                                   "moving_variance"), strict=True):
            assert np.array_equal(got, values[f"batch_normalization{suffix[i]}/{name}"]), name
    assert np.array_equal(model.layers[-1].get_weights()[0], values["output/kernel"])


def test_keras_h5_layout_maps_tf1_names(shared, tmp_path):
    import h5py

    src = corpus_prefix("haerfest__handson-ml__my_model_final")
    result = convert_checkpoint(src, "keras-h5", str(tmp_path / "w.h5"), maps=[("^dnn/", "")],
                                progress=False)
    values = read_vars(src)
    with h5py.File(result.path) as f:
        assert _texts(f.attrs["layer_names"]) == ["hidden1", "hidden2", "outputs"]
        group = f["hidden1"]
        assert _texts(group.attrs["weight_names"]) == ["hidden1/kernel:0", "hidden1/bias:0"]
        assert np.array_equal(group["hidden1/kernel:0"][()], values["dnn/hidden1/weights"])


def test_safetensors_torch_layout(shared, tmp_path):
    from safetensors.numpy import load_file

    src = corpus_prefix(IRIS)
    result = convert_checkpoint(src, "safetensors", str(tmp_path / "m.safetensors"),
                                torch_layout=True, progress=False)
    tensors, values = load_file(result.path), read_vars(src)
    assert set(tensors) == {f"{layer}.{w}" for layer in
                            [f"hidden{i}" for i in range(1, 6)] + ["logits"]
                            for w in ("weight", "bias")}
    assert tensors["hidden1.weight"].shape == (90, 784)
    assert np.array_equal(tensors["hidden1.weight"], values["hidden1/kernel"].T)
    assert np.array_equal(tensors["logits.bias"], values["logits/bias"])


def test_slots_only_when_asked(shared, tmp_path):
    src = corpus_prefix(IRIS)
    plain = convert_checkpoint(src, "safetensors", str(tmp_path / "a.safetensors"),
                               progress=False)
    assert len(plain.names) == 12 and set(plain.skipped.values()) == {
        "optimizer slots", "optimizer state"}
    full = convert_checkpoint(src, "safetensors", str(tmp_path / "b.safetensors"),
                              include_slots=True, progress=False)
    assert len(full.names) == 38 and not full.skipped


def test_bad_requests_are_user_errors(shared, tmp_path):
    src = corpus_prefix(IRIS)
    with pytest.raises(UserError, match="unknown format 'onnx'"):
        convert_checkpoint(src, "onnx", str(tmp_path / "x"))
    with pytest.raises(UserError, match="--torch-layout applies to"):
        convert_checkpoint(src, "tf2", str(tmp_path / "x"), torch_layout=True)
    with pytest.raises(SelectionError, match="would both be written as"):
        convert_checkpoint(src, "npz", str(tmp_path / "x.npz"), maps=[("/.*", "")])


def test_cli_convert(shared, tmp_path):
    out = str(tmp_path / "w.npz")
    proc = run_cli("convert", corpus_prefix(IRIS), "--to", "npz", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["format"] == "npz" and len(report["names"]) == 12
    proc = run_cli("convert", corpus_prefix(IRIS), "--to", "npz", "--out", out)
    assert proc.returncode == 2 and "exists" in proc.stderr
