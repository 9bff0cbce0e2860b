"""Training data: image sets for ``ckptsurgery graft --data``, shaped to a graph's input.

Sources: an ``.npz`` with ``x_train``/``y_train`` (optionally ``x_test``/``y_test``; Keras's
``mnist.npz`` is one), a folder of MNIST IDX files, Keras's cached MNIST (``'keras'``), a folder
of images with one sub-folder per class (Keras's ``image_dataset_from_directory`` layout), or the
small MNIST subset shipped in the package. Images are float32 in [0, 1], labels int64.
:func:`shape_for_input` fits the images to the input placeholder (flattened rows, an added or
dropped channel axis); without an input shape :func:`load_dataset` gives flattened rows as it
always has. Validation is ``valid_size`` training rows (5,000 as in the original write-up)
drawn at random with the seed, stratified by class (each class in proportion), from every
source: the first rows of a file sorted by class would be one or two classes. It is never
trained on.

May import: :mod:`ckptsurgery.errors` only; numpy, and Pillow inside the function that reads
images. Never TensorFlow or Keras, so importing this module stays light.

Memory: a set is held once, as float32: N*H*W*C*4 bytes (60,000 28x28x1 images: 188 MB;
50,000 32x32x3: 614 MB). Flattening, adding or dropping a channel axis and repeating a grey
channel to RGB make views, not copies, wherever the array's layout allows; a class folder is
read straight into one preallocated array. ``per_class`` and :func:`select_classes` copy only
the rows they keep; a shuffled split copies the training rows (the one exception: drop the
Dataset once it is split, as ``split(load_dataset(...))`` does).
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, first_line

__all__ = [
    "Columns",
    "Dataset",
    "Split",
    "load_dataset",
    "split",
    "shape_for_input",
    "parse_classes",
    "select_classes",
    "IMAGE_EXTENSIONS",
    "BUILTIN_SUBSET",
]

#: The small real-MNIST subset shipped for the offline demo (see ``train/builtin/README.md``).
BUILTIN_SUBSET = os.path.join(os.path.dirname(__file__), "builtin", "mnist_subset.npz")

#: File types read from class folders (case-insensitive); other files there are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class Columns:
    """Rows of a model with several inputs: one array per input placeholder, all with the same
    number of rows (``input_ids``, ``input_mask``, ``segment_ids`` of a BERT classifier).

    Indexing selects rows of every array (``cols[idx]`` is a :class:`Columns`), so splitting,
    class selection and batching treat it as they treat an image array; dtypes are kept
    (integer ids stay integers).
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the input arrays have different numbers of rows: {lengths}")
        self.arrays = dict(arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, rows) -> Columns:
        return Columns({name: a[rows] for name, a in self.arrays.items()})

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def describe(self) -> str:
        """``input_ids int32 [8], input_mask int32 [8]``: each array's dtype and row shape."""
        return ", ".join(f"{n} {a.dtype} {list(a.shape[1:])}" for n, a in self.arrays.items())


@dataclass
class Dataset:
    """Images as float32 in [0, 1], labels as int64; test part optional.

    ``x_train``/``x_test`` are flattened rows (N, H*W*C) when loaded without an input shape,
    images shaped by :func:`shape_for_input` with one, or the natural (N, H, W) / (N, H, W, C)
    with ``load_dataset(..., flatten=False)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    #: Class name of each label (label i is ``class_names[i]``); set by class-folder sources.
    class_names: list[str] | None = None
    #: Original label -> label now, after :func:`select_classes`.
    label_map: dict[int, int] | None = None
    #: Rows are grouped by class (class folders).
    ordered_by_class: bool = False


@dataclass
class Split:
    """Train / validation / test arrays; validation comes from the training set, never test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None

    def per_class(self) -> dict[int, tuple[int, int]]:
        """``{label: (training rows, validation rows)}``, every label of either."""
        train = dict(zip(*np.unique(self.y_train, return_counts=True), strict=True))
        valid = dict(zip(*np.unique(self.y_valid, return_counts=True), strict=True))
        return {int(k): (int(train.get(k, 0)), int(valid.get(k, 0)))
                for k in sorted(set(train) | set(valid))}

    def mismatch(self) -> str | None:
        """Why validation does not represent training, or None: classes one has and the
        other has not."""
        counts = self.per_class()
        unseen = [k for k, (t, v) in counts.items() if v and not t]
        missing = [k for k, (t, v) in counts.items() if t and not v]
        parts = []
        if unseen:
            parts.append(f"validation has class(es) {_describe_labels(unseen)} that training "
                         "never sees (accuracy on them is 0)")
        if missing:
            parts.append(f"validation has no rows of class(es) {_describe_labels(missing)} "
                         "that training has")
        return "; ".join(parts) or None


def load_dataset(source: str | None, *, input_shape: Sequence[int | None] | None = None,
                 input_name: str | None = None, flatten: bool = True,
                 inputs: dict[str, Sequence[int | None] | None] | None = None,
                 labels: str | None = None) -> Dataset:
    """Load a dataset from ``source`` and shape its images for a graph's input.

    Args:
        source: an ``.npz`` path, an IDX folder, a class folder (``ROOT/train/<class>/*.png``
            with optional ``ROOT/test/<class>/...``, or ``ROOT/<class>/...``), ``'keras'``, or
            None for the built-in MNIST subset.
        input_shape: the input placeholder's shape (batch first, None for unknown dims); the
            images are shaped by :func:`shape_for_input`, and class-folder images are read in
            grey or RGB and resized to its height and width.
        input_name: the input's name, for error messages.
        flatten: without ``input_shape``: True gives flattened rows (as before input shapes
            were known), False keeps the natural (N, H, W[, C]) shape.
        inputs: ``{placeholder name: shape}`` of a model with several inputs: ``source`` is then
            an ``.npz`` with an array named after each (and its ``NAME_test`` for a test
            part), read into :class:`Columns` (see :func:`load_columns`).
        labels: with ``inputs``, the label placeholder's name (its array holds the labels).

    Raises:
        DataError: the source is missing, not in one of those layouts, or does not fit the input.
    """
    if inputs is not None:
        return load_columns(source, inputs, labels)
    shape = None if input_shape is None else _dims(input_shape)
    if source is None:
        data = _load_npz(BUILTIN_SUBSET, "built-in MNIST subset")
    elif source == "keras":
        data = _load_keras()
    elif os.path.isdir(source):
        if _has_idx_files(source) or _class_root(source) is None:
            data = _load_idx_folder(source)
        else:
            data = _load_class_folder(source, shape)
    elif not os.path.exists(source):
        raise DataError(f"no data at '{source}'; give an .npz with x_train and y_train, a folder "
                        "of MNIST IDX files, a folder of class sub-folders of images, or 'keras'")
    else:
        data = _load_npz(source, source)
    if shape is not None:
        data.x_train = shape_for_input(data.x_train, shape, input_name)
        if data.x_test is not None:
            data.x_test = shape_for_input(data.x_test, shape, input_name)
    elif flatten:
        data.x_train = _flat(data.x_train)
        if data.x_test is not None:
            data.x_test = _flat(data.x_test)
    return data


#: Array names taken for the labels when none is named after the label placeholder.
LABEL_ARRAYS = ("labels", "label_ids", "label", "y")


def load_columns(source: str | None, inputs: dict[str, Sequence[int | None] | None],
                 labels: str | None = None) -> Dataset:
    """A dataset for a model with several inputs, from an ``.npz`` whose arrays are named
    after the input placeholders (``input_ids``, ``input_mask``, ``segment_ids``), with the
    labels named after the label placeholder or one of :data:`LABEL_ARRAYS`; ``NAME_test``
    arrays (all of them) make the test part. Dtypes are kept; each array's row shape must fit
    its placeholder's known dimensions.

    Raises:
        DataError: no such file, an input or the labels without an array (the arrays there are
            named), rows that differ in number, or a row shape the placeholder does not take.
    """
    if source is None or not source.endswith(".npz") or not os.path.isfile(source):
        raise DataError(f"the graph has several inputs ({', '.join(inputs)}); give --data an "
                        ".npz with an array named after each, and the labels"
                        + (f" (no file '{source}')" if source else ""))
    try:
        with np.load(source, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{source}' as an .npz file: {first_line(e)}") from e
    missing = [n for n in inputs if n not in arrays]
    label_key = next((k for k in ([labels] if labels else []) + list(LABEL_ARRAYS)
                      if k in arrays), None)
    if missing or label_key is None:
        what = ", ".join(missing) + (" and the labels" if label_key is None else "")
        raise DataError(f"'{source}' has arrays {sorted(arrays)}; it needs one for {what} "
                        f"(the graph's inputs are {', '.join(inputs)}; name arrays after them, "
                        f"and the labels '{labels or 'labels'}', or pass --inputs A,B,...)")
    for name, shape in inputs.items():
        have = arrays[name].shape[1:]
        want = _dims(shape)[1:] if shape is not None else None
        if want is not None and (len(want) != len(have) or any(
                w is not None and w != h for w, h in zip(want, have, strict=False))):
            raise DataError(f"array '{name}' has rows of shape {list(have)}; its placeholder "
                            f"takes {_describe_shape(want)}")
    train = Columns({n: arrays[n] for n in inputs})
    y_train = arrays[label_key].astype(np.int64).reshape(-1)
    if len(y_train) != len(train):
        raise DataError(f"'{source}': {len(train)} rows of inputs but {len(y_train)} labels")
    test = y_test = None
    if all(f"{n}_test" in arrays for n in (*inputs, label_key)):
        test = Columns({n: arrays[f"{n}_test"] for n in inputs})
        y_test = arrays[f"{label_key}_test"].astype(np.int64).reshape(-1)
    return Dataset(train, y_train, test, y_test, source)


def shape_for_input(x: np.ndarray, input_shape: Sequence[int | None] | None,
                    name: str | None = None) -> np.ndarray:
    """Shape images ``x`` (N, ...) to fit an input placeholder of shape ``input_shape``.

    The placeholder's first dim is the batch (ignored); other dims may be None (unknown).

    - rank 2 (``[None, 784]``): flattened rows; the width must match when known.
    - rank 3 (``[None, 28, 28]``): (N, H, W) images; a size-1 channel axis is dropped.
    - rank 4 (``[None, 28, 28, 1]``): (N, H, W, C) images; a channel axis is added to
      (N, H, W) images. A 3-channel input given 1-channel (grey) images gets the grey channel
      repeated into R, G and B, as a read-only broadcast view (no copy).
    - flattened rows to a rank-3/4 input whose dims are all known are reshaped (row-major).
    - None (unknown rank): ``x`` is returned as is.

    Reshapes are views when ``x`` is contiguous: nothing is copied.

    Args:
        x: the images, float32 as loaded.
        input_shape: the placeholder's shape, or None.
        name: the input's name (e.g. ``'x:0'``) for error messages.

    Returns:
        ``x`` shaped to the input.

    Raises:
        DataError: the images do not fit (size, channels or rank), naming both shapes.
    """
    if input_shape is None:
        return x
    shape = _dims(input_shape)
    image = tuple(x.shape[1:])
    target = shape[1:]

    def mismatch(fix: str) -> DataError:
        who = f"input '{name}'" if name else "the input"
        return DataError(f"the data's images are {_describe_image(image)} but {who} takes "
                         f"{_describe_shape(shape)}; {fix}")

    size_fix = "use data that matches the model (class folders are resized to the input)"
    if len(shape) == 2:
        rows = _flat(x)
        if shape[1] is not None and rows.shape[1] != shape[1]:
            raise mismatch(size_fix)
        return rows
    if len(shape) not in (3, 4):
        raise mismatch("images can be fed to rank-2 (rows), rank-3 or rank-4 inputs only")
    if len(image) == 1:
        channels = 1 if len(target) == 2 else target[2]
        if None in target[:2] or channels is None or image[0] != target[0] * target[1] * channels:
            raise mismatch("give the images in their 2-D shape (an .npz of (N, H, W[, C]))")
        return x.reshape((len(x), *target[:2]) + ((channels,) if len(target) == 3 else ()))
    if len(image) not in (2, 3):
        raise mismatch("give (N, H, W) or (N, H, W, C) images")
    if any(t is not None and t != d for t, d in zip(target[:2], image[:2], strict=False)):
        raise mismatch(size_fix)
    have = image[2] if len(image) == 3 else 1
    if len(target) == 2:
        if have != 1:
            raise mismatch("the input takes grey images; give 1-channel data "
                           "(class folders are read in grey for it)")
        return x.reshape(x.shape[:3])
    want = target[2]
    if want is None or want == have:
        return x if len(image) == 3 else x.reshape((*x.shape, 1))
    if have == 1 and want == 3:
        grey = x if len(image) == 3 else x.reshape((*x.shape, 1))
        return np.broadcast_to(grey, (*grey.shape[:3], 3))
    raise mismatch(f"give {want}-channel data (class folders are read in grey or RGB)")


def split(data: Dataset, valid_size: int = 5000, *, seed: int = 42,
          per_class: int | None = None) -> Split:
    """Split ``valid_size`` training rows off as the validation set.

    Validation rows are drawn at random with ``np.random.RandomState(seed)``, stratified by
    class: each class gives a share of ``valid_size`` in proportion to its rows (largest
    remainders rounded up), so a file sorted by class validates on every class. The training
    rows keep their order (a copy). ``per_class=N`` then keeps N random training rows of each
    class (same seed; reproducible, in their original order), for few-shot runs; validation
    and test are left whole. :meth:`Split.mismatch` says when validation still misses a class.

    Raises:
        DataError: ``valid_size`` leaves no training rows, or a class has fewer than
            ``per_class`` training rows (naming it and its count).
    """
    n = len(data.x_train)
    if not 0 < valid_size < n:
        raise DataError(
            f"--valid-size {valid_size} must be between 1 and {n - 1} "
            f"(the training set of {data.source} has {n} rows)"
        )
    if per_class is not None and per_class < 1:
        raise DataError(f"--per-class {per_class} must be at least 1")
    rng = np.random.RandomState(seed)
    valid = _stratified(data.y_train, valid_size, rng)
    train = np.setdiff1d(np.arange(n), valid, assume_unique=True)
    if per_class is not None:
        train = _per_class(data, train, per_class, rng, valid_size)
    return Split(data.x_train[train], data.y_train[train],
                 data.x_train[valid], data.y_train[valid],
                 data.x_test, data.y_test)


def parse_classes(text: str) -> list[int]:
    """Parse a ``--classes`` value into its labels, ascending and without repeats.

    Accepts a range (``5-9``), a list (``0,2,4``) or both (``0-2,7``); spaces are ignored.

    Raises:
        DataError: anything else, naming the text and the accepted forms.
    """
    compact = re.sub(r"\s+", "", text or "")
    item = r"\d+(?:-\d+)?"
    bad = DataError(f"--classes '{text}' is not a list of labels; give a range (5-9), a list "
                    "(0,2,4) or both (0-2,7)")
    if not re.fullmatch(rf"{item}(?:,{item})*", compact):
        raise bad
    labels: set[int] = set()
    for part in compact.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if first > last:
            raise bad
        labels.update(range(first, last + 1))
    return sorted(labels)


def select_classes(data: Dataset, classes: Sequence[int]) -> Dataset:
    """Keep only the rows labelled ``classes`` and renumber them 0..k-1 (ascending order).

    For training on some of a set's classes (``--classes 5-9``). The new Dataset records
    original -> new labels in ``label_map`` (composed with an earlier one) and keeps the chosen
    ``class_names``. Only the kept rows are copied; a test part with none of them becomes None.

    Raises:
        DataError: a class is not among the training labels (naming it and the labels there).
    """
    chosen = sorted({int(c) for c in classes})
    present = np.unique(data.y_train)
    absent = sorted(set(chosen) - set(present.tolist()))
    labels = _describe_labels(present.tolist())
    if not chosen:
        raise DataError(f"--classes names no labels; name at least one of the data's ({labels})")
    if absent:
        raise DataError(f"--classes names {', '.join(map(str, absent))}, which the data does not "
                        f"have (labels: {labels})")
    lookup = np.full(int(present.max()) + 1, -1, np.int64)
    lookup[chosen] = np.arange(len(chosen))

    def keep(x, y):
        mask = np.isin(y, chosen)
        return x[mask], lookup[y[mask]]

    x_train, y_train = keep(data.x_train, data.y_train)
    x_test = y_test = None
    if data.x_test is not None and data.y_test is not None:
        x_test, y_test = keep(data.x_test, data.y_test)
        if not len(y_test):
            x_test = y_test = None
    mapping = {c: i for i, c in enumerate(chosen)}
    if data.label_map is not None:
        mapping = {o: mapping[m] for o, m in data.label_map.items() if m in mapping}
    names = None if data.class_names is None else [data.class_names[c] for c in chosen]
    return Dataset(x_train, y_train, x_test, y_test, data.source, names, mapping,
                   data.ordered_by_class)


# -- shapes ---------------------------------------------------------------------------------


def _dims(shape: Sequence[int | None]) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


def _describe_image(image: tuple[int, ...]) -> str:
    if len(image) == 1:
        return f"rows of {image[0]} values"
    return "x".join(map(str, image))


def _describe_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


def _describe_labels(labels: list[int]) -> str:
    """``0-4,7`` for [0, 1, 2, 3, 4, 7]."""
    runs: list[str] = []
    start = prev = None
    for label in labels + [None]:
        if start is not None and (label is None or label != prev + 1):
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if start is None:
            start = label
        prev = label
    return ",".join(runs) or "none"


# -- splitting ------------------------------------------------------------------------------


def _stratified(labels: np.ndarray, size: int, rng: np.random.RandomState) -> np.ndarray:
    """``size`` row indices drawn at random, each class's share in proportion to its rows
    (the largest remainders rounded up), sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    shares = np.floor(exact).astype(np.int64)
    shares[np.argsort(-(exact - shares), kind="stable")[: size - int(shares.sum())]] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), k, replace=False)
             for c, k in zip(classes, shares, strict=True) if k]
    return np.sort(np.concatenate(picks))


def _per_class(data: Dataset, rows: np.ndarray, n: int, rng: np.random.RandomState,
               valid_size: int) -> np.ndarray:
    labels = data.y_train[rows]
    if data.class_names is not None:
        classes = range(len(data.class_names))
    else:
        classes = np.unique(data.y_train).tolist()
    kept = []
    for c in classes:
        mine = rows[labels == c]
        if len(mine) < n:
            named = f"{c} ('{data.class_names[c]}')" if data.class_names else str(c)
            raise DataError(
                f"--per-class {n}: class {named} has only {len(mine)} training rows after "
                f"{valid_size} went to validation; lower --per-class or --valid-size"
            )
        kept.append(rng.choice(mine, n, replace=False))
    return np.sort(np.concatenate(kept))


# -- npz, Keras, IDX ------------------------------------------------------------------------


def _prepare(x: np.ndarray, y: np.ndarray, what: str, source: str):
    """Images in their natural shape as float32 in [0, 1] (one float copy at most)."""
    if len(x) != len(y):
        raise DataError(f"{source}: {what} has {len(x)} images but {len(y)} labels")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.dtype == np.uint8:
        x = x.astype(np.float32)
        x /= 255.0
    else:
        x = x.astype(np.float32, copy=False)
        if not x.flags.writeable:
            x = x.copy()
        if x.size and x.max() > 1.0:
            x /= 255.0
    return x, y.astype(np.int64).reshape(-1)


def _load_npz(path: str, source: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            names = sorted(f.files)
            if "x_train" not in names or "y_train" not in names:
                raise DataError(
                    f"'{path}' has arrays {names}; expected Keras's mnist.npz layout "
                    "(x_train, y_train, optionally x_test, y_test)"
                )
            x_train, y_train = _prepare(f["x_train"], f["y_train"], "x_train", source)
            x_test = y_test = None
            if "x_test" in names and "y_test" in names:
                x_test, y_test = _prepare(f["x_test"], f["y_test"], "x_test", source)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{path}' as an .npz file: {first_line(e)}") from e
    return Dataset(x_train, y_train, x_test, y_test, source)


def _load_keras() -> Dataset:
    cached = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")
    if os.path.exists(cached):
        return _load_npz(cached, "Keras's cached MNIST")
    # Read only: downloading would need Keras, which the library never depends on.
    raise DataError(
        f"--data keras: Keras's MNIST is not cached at '{cached}'; give the path of an .npz "
        "with x_train and y_train instead (or run keras.datasets.mnist.load_data() once)"
    )


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _has_idx_files(folder: str) -> bool:
    return any(os.path.exists(os.path.join(folder, name + ext))
               for names in _IDX_NAMES.values() for name in names for ext in ("", ".gz"))


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
            "train-labels-idx1-ubyte[.gz]) and no class folders (train/<class>/*.png); "
            "give an .npz path instead"
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


# -- class folders --------------------------------------------------------------------------

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _subdirs(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder)
                  if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_root(folder: str) -> str | None:
    """Where the training class folders are (``ROOT/train`` or ``ROOT``), or None if ``folder``
    has no sub-folders (then it is not a class folder)."""
    train = os.path.join(folder, "train")
    if os.path.isdir(train) and not any(_is_image(n) for n in os.listdir(train)):
        return train
    return folder if _subdirs(folder) else None


def _class_files(root: str) -> dict[str, list[str]]:
    """Class name -> its image files (sorted; sub-folders included), classes sorted by name."""
    classes = _subdirs(root)
    if not classes:
        raise DataError(f"no class folders in '{root}'; expected {root}/<class>/*.png "
                        "(one sub-folder of images per class)")
    found = {}
    for name in classes:
        folder = os.path.join(root, name)
        files = []
        for d, subdirs, fs in os.walk(folder):
            subdirs[:] = [n for n in subdirs if not n.startswith(".")]
            files += [os.path.join(d, f) for f in fs if _is_image(f)]
        files.sort()
        if not files:
            raise DataError(f"class folder '{folder}' has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        found[name] = files
    return found


def _open_image(image_module, path: str):
    try:
        return image_module.open(path)
    except Exception as e:  # Pillow raises many types for bad files; all mean "unreadable"
        raise DataError(f"cannot read image '{path}': {first_line(e)}") from e


def _load_class_folder(folder: str, input_shape: list[int | None] | None) -> Dataset:
    """Read ``ROOT/train/<class>/*`` (+ ``ROOT/test``) or ``ROOT/<class>/*`` with Pillow."""
    from PIL import Image  # here, not at the top: importing this module stays light

    root = _class_root(folder)
    parts = {"train": _class_files(root)}
    test_root = os.path.join(folder, "test")
    if root != folder and os.path.isdir(test_root):
        parts["test"] = _class_files(test_root)
        if list(parts["test"]) != list(parts["train"]):
            raise DataError(
                f"the test classes {list(parts['test'])} in '{test_root}' are not the training "
                f"classes {list(parts['train'])}; give {test_root} the same class folders"
            )
    files = [f for part in parts.values() for fs in part.values() for f in fs]

    # First pass, headers only: check every file opens, learn sizes and colours.
    sizes, grey = {}, True
    for path in files:
        with _open_image(Image, path) as im:
            sizes.setdefault(im.size, path)
            grey = grey and im.mode in _GREY_MODES
    rank = None if input_shape is None else len(input_shape)
    channels = input_shape[3] if rank == 4 else (1 if rank in (2, 3) else None)
    if channels not in (None, 1, 3):
        raise DataError(f"input shape {_describe_shape(input_shape)} takes {channels} channels; "
                        "class folders are read in grey (1) or RGB (3)")
    mode = "L" if channels == 1 or (channels is None and grey) else "RGB"
    target = tuple(input_shape[1:3]) if rank in (3, 4) else (None, None)
    if None in target:
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise DataError(
                f"the images in '{folder}' differ in size ({a[1]}x{a[0]} '{pa}', "
                f"{b[1]}x{b[0]} '{pb}'); give the input shape so they are resized to it"
            )
        width, height = next(iter(sizes))
    else:
        height, width = target

    # Second pass: decode into one preallocated float32 array per part.
    out = {}
    for part, classes in parts.items():
        count = sum(len(fs) for fs in classes.values())
        x = np.empty((count, height, width) + ((3,) if mode == "RGB" else ()), np.float32)
        y = np.empty(count, np.int64)
        i = 0
        for label, fs in enumerate(classes.values()):
            for path in fs:
                with _open_image(Image, path) as im:
                    try:
                        im = im.convert(mode)
                        if im.size != (width, height):
                            im = im.resize((width, height), Image.Resampling.BILINEAR)
                        x[i] = np.asarray(im, dtype=np.uint8)
                    except Exception as e:  # truncated or corrupt pixel data
                        raise DataError(f"cannot read image '{path}': {first_line(e)}") from e
                y[i] = label
                i += 1
        x /= 255.0
        out[part] = (x, y)
    x_test, y_test = out.get("test", (None, None))
    return Dataset(*out["train"], x_test, y_test, folder, class_names=list(parts["train"]),
                   ordered_by_class=True)
