"""Training data: MNIST-like sets from an ``.npz`` (Keras's ``mnist.npz`` layout), a folder of IDX
files, Keras's cache, or the small subset shipped in the package.

Images are flattened and scaled to [0, 1] to match the graphs' float inputs; validation is the
first ``valid_size`` training rows (5,000 as in the original write-up) and is never trained on.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np

from .errors import DataError

__all__ = ["Dataset", "Split", "load_dataset", "split", "BUILTIN_SUBSET"]

#: The small real-MNIST subset shipped for the offline demo (see ``ckptsurgery/data/README.md``).
BUILTIN_SUBSET = os.path.join(os.path.dirname(__file__), "data", "mnist_subset.npz")


@dataclass
class Dataset:
    """Images as float32 rows in [0, 1], labels as int64; test part optional."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""


@dataclass
class Split:
    """Train / validation / test arrays, validation taken from the front of the training set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None


def load_dataset(source: str | None) -> Dataset:
    """Load a dataset from ``source``: a ``.npz`` path, an IDX folder, ``'keras'``, or None for
    the built-in subset.

    Raises:
        DataError: the source is missing or not in one of those layouts.
    """
    if source is None:
        return _load_npz(BUILTIN_SUBSET, "built-in MNIST subset")
    if source == "keras":
        return _load_keras()
    if os.path.isdir(source):
        return _load_idx_folder(source)
    if not os.path.exists(source):
        raise DataError(f"no data at '{source}'; give an .npz in Keras's mnist.npz layout, "
                        "a folder of MNIST IDX files, or 'keras'")
    return _load_npz(source, source)


def split(data: Dataset, valid_size: int = 5000) -> Split:
    """Split off the first ``valid_size`` training rows as the validation set."""
    if not 0 < valid_size < len(data.x_train):
        raise DataError(
            f"--valid-size {valid_size} must be between 1 and {len(data.x_train) - 1} "
            f"(the training set of {data.source} has {len(data.x_train)} rows)"
        )
    return Split(data.x_train[valid_size:], data.y_train[valid_size:],
                 data.x_train[:valid_size], data.y_train[:valid_size],
                 data.x_test, data.y_test)


def _prepare(x: np.ndarray, y: np.ndarray, what: str, source: str):
    if len(x) != len(y):
        raise DataError(f"{source}: {what} has {len(x)} images but {len(y)} labels")
    x = x.reshape(len(x), -1)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    else:
        x = x.astype(np.float32)
        if x.size and x.max() > 1.0:
            x /= 255.0
    return x, y.astype(np.int64).reshape(-1)


def _load_npz(path: str, source: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{path}' as an .npz file: {e}") from e
    if "x_train" not in arrays or "y_train" not in arrays:
        raise DataError(
            f"'{path}' has arrays {sorted(arrays)}; expected Keras's mnist.npz layout "
            "(x_train, y_train, optionally x_test, y_test)"
        )
    x_train, y_train = _prepare(arrays["x_train"], arrays["y_train"], "x_train", source)
    x_test = y_test = None
    if "x_test" in arrays and "y_test" in arrays:
        x_test, y_test = _prepare(arrays["x_test"], arrays["y_test"], "x_test", source)
    return Dataset(x_train, y_train, x_test, y_test, source)


def _load_keras() -> Dataset:
    cached = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")
    if os.path.exists(cached):
        return _load_npz(cached, "Keras's cached MNIST")
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:  # Keras absent, or no network
        raise DataError(
            f"--data keras: Keras's MNIST is not cached and cannot be downloaded ({e}); "
            "give an .npz path instead"
        ) from e
    x_train, y_train = _prepare(x_train, y_train, "x_train", "keras")
    x_test, y_test = _prepare(x_test, y_test, "x_test", "keras")
    return Dataset(x_train, y_train, x_test, y_test, "Keras's MNIST")


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _load_idx_folder(folder: str) -> Dataset:
    found = {}
    for key, names in _IDX_NAMES.items():
        for name in names:
            for candidate in (name, name + ".gz"):
                path = os.path.join(folder, candidate)
                if os.path.exists(path):
                    found[key] = _read_idx(path)
                    break
            if key in found:
                break
    if "x_train" not in found or "y_train" not in found:
        raise DataError(
            f"folder '{folder}' has no MNIST IDX files (train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz]); give an .npz path instead"
        )
    x_train, y_train = _prepare(found["x_train"], found["y_train"], "train", folder)
    x_test = y_test = None
    if "x_test" in found and "y_test" in found:
        x_test, y_test = _prepare(found["x_test"], found["y_test"], "t10k", folder)
    return Dataset(x_train, y_train, x_test, y_test, folder)


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise DataError(f"cannot read IDX file '{path}': {e}") from e
