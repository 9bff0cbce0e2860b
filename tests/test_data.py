"""Training data: .npz, IDX folders (.gz or not), Keras's cache, the built-in subset; clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from ckptsurgery.data import BUILTIN_SUBSET, load_dataset, split
from ckptsurgery.errors import DataError


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, (n, 28, 28)).astype(np.uint8), rng.randint(0, 10, n).astype(np.uint8)


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_idx_folder_loads_scaled_and_flattened(tmp_path, compress):
    x, y = _images(12)
    xt, yt = _images(4, seed=1)
    ext = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", x, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", y, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", xt, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", yt, compress)
    data = load_dataset(str(tmp_path))
    assert data.x_train.shape == (12, 784) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train, x.reshape(12, -1).astype(np.float32) / 255.0)
    np.testing.assert_array_equal(data.y_train, y.astype(np.int64))
    np.testing.assert_array_equal(data.y_test, yt.astype(np.int64))


def test_keras_cache_is_used(tmp_path, monkeypatch):
    x, y = _images(10)
    cache = tmp_path / ".keras" / "datasets"
    cache.mkdir(parents=True)
    np.savez(cache / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    monkeypatch.setenv("HOME", str(tmp_path))
    data = load_dataset("keras")
    assert data.source == "Keras's cached MNIST"
    np.testing.assert_array_equal(data.y_train, y)


def test_builtin_subset_is_real_mnist_in_order():
    data = load_dataset(None)
    assert data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert data.x_train.shape[1] == 784 and 0.0 <= data.x_train.min() < data.x_train.max() <= 1.0
    assert BUILTIN_SUBSET.endswith("mnist_subset.npz")


def test_validation_is_the_front_of_the_training_set():
    data = load_dataset(None)
    parts = split(data, 5000)
    np.testing.assert_array_equal(parts.x_valid, data.x_train[:5000])
    np.testing.assert_array_equal(parts.x_train, data.x_train[5000:])


def test_npz_without_keras_layout_names_the_expected_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"has arrays \['images'\]; expected Keras's mnist.npz"):
        load_dataset(str(tmp_path / "d.npz"))


def test_missing_data_and_bad_valid_size_are_clear(tmp_path):
    with pytest.raises(DataError, match="no data at"):
        load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="--valid-size 99999 must be between 1 and"):
        split(load_dataset(None), 99999)
