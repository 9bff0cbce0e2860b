"""Training data: .npz, IDX folders (.gz or not), Keras's cache, the built-in subset, class
folders; shaping to the input, splits, --classes; clear errors."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from ckptsurgery.errors import DataError
from ckptsurgery.train.data import (
    BUILTIN_SUBSET,
    Dataset,
    load_dataset,
    parse_classes,
    select_classes,
    shape_for_input,
    split,
)


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


def test_validation_is_a_seeded_stratified_draw_not_the_front_rows():
    data = load_dataset(None)
    parts = split(data, 5000)
    assert not np.array_equal(parts.x_valid, data.x_train[:5000])
    assert len(parts.y_valid) == 5000 and len(parts.y_train) == len(data.y_train) - 5000
    share = np.bincount(parts.y_valid, minlength=10) / 5000
    assert np.abs(share - np.bincount(data.y_train, minlength=10) / len(data.y_train)).max() \
        < 1e-3


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


def test_keras_without_a_cache_is_a_clear_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"not cached at .*mnist\.npz.*give the path of an \.npz"):
        load_dataset("keras")


# -- any .npz, natural shapes -----------------------------------------------------------------


def test_npz_of_colour_images_is_kept_4d_and_scaled(tmp_path):
    rng = np.random.RandomState(3)
    x = rng.randint(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "c.npz", x_train=x, y_train=np.arange(6, dtype=np.uint8))
    data = load_dataset(str(tmp_path / "c.npz"), flatten=False)
    assert data.x_train.shape == (6, 32, 32, 3) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train, x.astype(np.float32) / 255.0)
    assert data.y_train.dtype == np.int64 and data.x_test is None


def test_npz_colour_images_are_flattened_without_an_input_shape(tmp_path):
    x = np.full((2, 32, 32, 3), 255, np.uint8)
    np.savez(tmp_path / "c.npz", x_train=x, y_train=np.zeros(2, np.uint8))
    data = load_dataset(str(tmp_path / "c.npz"))
    assert data.x_train.shape == (2, 3072) and data.x_train.max() == 1.0


def test_float_npz_above_one_is_divided_by_255_and_unit_floats_are_kept(tmp_path):
    np.savez(tmp_path / "big.npz", x_train=np.full((2, 4, 4), 51.0), y_train=np.zeros(2))
    np.savez(tmp_path / "unit.npz", x_train=np.full((2, 4, 4), 0.5), y_train=np.zeros(2))
    assert load_dataset(str(tmp_path / "big.npz"), flatten=False).x_train[0, 0, 0] == \
        np.float32(0.2)
    assert load_dataset(str(tmp_path / "unit.npz"), flatten=False).x_train[0, 0, 0] == 0.5


def test_load_dataset_shapes_train_and_test_to_the_input_shape():
    data = load_dataset(None, input_shape=[None, 28, 28, 1], input_name="x:0")
    assert data.x_train.shape[1:] == (28, 28, 1) and data.x_test.shape[1:] == (28, 28, 1)
    np.testing.assert_array_equal(data.x_train.reshape(len(data.x_train), -1),
                                  load_dataset(None).x_train)


def test_load_dataset_with_an_input_shape_that_does_not_fit_names_both():
    with pytest.raises(DataError, match=r"^the data's images are 28x28 but input 'x:0' takes "
                                        r"\[None, 32, 32, 3\]; "):
        load_dataset(None, input_shape=[None, 32, 32, 3], input_name="x:0")


# -- shape_for_input --------------------------------------------------------------------------


def _grey(n=3, h=28, w=28) -> np.ndarray:
    return np.random.RandomState(0).rand(n, h, w).astype(np.float32)


def test_rank_2_input_gets_flattened_rows_as_a_view():
    x = _grey()
    rows = shape_for_input(x, [None, 784])
    assert rows.shape == (3, 784) and np.shares_memory(rows, x)
    np.testing.assert_array_equal(rows[1], x[1].ravel())


def test_rank_2_input_of_another_width_is_an_error_naming_both_shapes():
    with pytest.raises(DataError, match=r"^the data's images are 28x28 but input 'x:0' takes "
                                        r"\[None, 100\]; use data that matches the model"):
        shape_for_input(_grey(), [None, 100], name="x:0")


def test_rank_2_input_of_unknown_width_takes_any_rows():
    assert shape_for_input(_grey(h=5, w=7), [None, None]).shape == (3, 35)


def test_channel_axis_is_added_for_a_one_channel_input_as_a_view():
    x = _grey()
    shaped = shape_for_input(x, [None, 28, 28, 1])
    assert shaped.shape == (3, 28, 28, 1) and np.shares_memory(shaped, x)


def test_size_1_channel_is_dropped_for_a_rank_3_input():
    x = _grey()[..., None]
    shaped = shape_for_input(x, [None, 28, 28])
    assert shaped.shape == (3, 28, 28) and np.shares_memory(shaped, x)


def test_grey_images_are_repeated_into_3_channels_without_a_copy():
    x = _grey()
    shaped = shape_for_input(x, [None, 28, 28, 3])
    assert shaped.shape == (3, 28, 28, 3) and np.shares_memory(shaped, x)
    for c in range(3):
        np.testing.assert_array_equal(shaped[..., c], x)
    assert not shaped.flags.writeable


def test_unknown_rank_input_leaves_images_as_they_are():
    x = _grey()
    assert shape_for_input(x, None) is x


def test_unknown_height_width_and_channels_accept_the_images():
    x = _grey(h=9, w=11)
    assert shape_for_input(x, [None, None, None, None]).shape == (3, 9, 11, 1)
    assert shape_for_input(x[..., None], [None, None, None]).shape == (3, 9, 11)


def test_flattened_rows_are_reshaped_for_a_fully_known_image_input():
    rows = _grey().reshape(3, 784)
    shaped = shape_for_input(rows, [None, 28, 28, 1])
    assert shaped.shape == (3, 28, 28, 1) and np.shares_memory(shaped, rows)


def test_image_size_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"^the data's images are 28x28x1 but input 'x:0' takes "
                                        r"\[None, 32, 32, 3\]; use data that matches the model"):
        shape_for_input(_grey()[..., None], [None, 32, 32, 3], name="x:0")


def test_colour_images_for_a_grey_rank_3_input_are_an_error():
    with pytest.raises(DataError, match=r"^the data's images are 28x28x3 but the input takes "
                                        r"\[None, 28, 28\]; the input takes grey images"):
        shape_for_input(np.zeros((2, 28, 28, 3), np.float32), [None, 28, 28])


def test_colour_images_for_a_one_channel_input_are_an_error():
    with pytest.raises(DataError, match=r"images are 28x28x3 but input 'in' takes "
                                        r"\[None, 28, 28, 1\]; give 1-channel data"):
        shape_for_input(np.zeros((2, 28, 28, 3), np.float32), [None, 28, 28, 1], name="in")


def test_rows_that_do_not_fill_the_image_input_are_an_error():
    with pytest.raises(DataError, match=r"images are rows of 100 values but the input takes "
                                        r"\[None, 28, 28, 1\]"):
        shape_for_input(np.zeros((2, 100), np.float32), [None, 28, 28, 1])


def test_rank_5_input_is_an_error():
    with pytest.raises(DataError, match=r"takes \[None, 2, 28, 28, 1\]; images can be fed to "):
        shape_for_input(_grey(), [None, 2, 28, 28, 1])


# -- class folders ----------------------------------------------------------------------------

CLASSES = ("dog", "bird", "cat")  # made in this order; labels follow the sorted names


def _make_class_folder(root, classes=CLASSES, n=5, size=(10, 10), mode="RGB", seed=0,
                       train_level=True, test=True) -> dict[str, list[np.ndarray]]:
    """Write n PNGs per class (random pixels); returns class -> the training images' pixels."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    pixels = {}
    parts = (("train", n), ("test", 2)) if test else (("train", n),)
    for part, count in parts:
        base = root / part if train_level else root
        for name in classes:
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            made = []
            for i in range(count):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                array = rng.randint(0, 256, shape).astype(np.uint8)
                Image.fromarray(array, mode).save(folder / f"img{i}.png")
                made.append(array)
            if part == "train":
                pixels[name] = made
    return pixels


def test_class_folder_loads_labels_in_sorted_class_order(tmp_path):
    pixels = _make_class_folder(tmp_path)
    data = load_dataset(str(tmp_path), flatten=False)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.y_train.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert data.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.x_train.shape == (15, 10, 10, 3) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train[5], pixels["cat"][0] / np.float32(255))
    assert data.ordered_by_class is True and data.source == str(tmp_path)


def test_class_folder_without_an_input_shape_is_flattened(tmp_path):
    _make_class_folder(tmp_path)
    assert load_dataset(str(tmp_path)).x_train.shape == (15, 300)


def test_class_folder_is_resized_and_made_grey_for_a_one_channel_input(tmp_path):
    from PIL import Image

    _make_class_folder(tmp_path)
    data = load_dataset(str(tmp_path), input_shape=[None, 6, 8, 1])
    assert data.x_train.shape == (15, 6, 8, 1) and data.x_test.shape == (6, 6, 8, 1)
    with Image.open(tmp_path / "train" / "bird" / "img0.png") as im:
        expected = np.asarray(im.convert("L").resize((8, 6), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(data.x_train[0, :, :, 0], expected / np.float32(255))


def test_class_folder_is_read_in_rgb_for_a_3_channel_input(tmp_path):
    pixels = _make_class_folder(tmp_path, mode="L", test=False)
    data = load_dataset(str(tmp_path), input_shape=[None, 10, 10, 3])
    assert data.x_train.shape == (15, 10, 10, 3) and data.x_train.flags.writeable
    for c in range(3):
        np.testing.assert_array_equal(data.x_train[0, :, :, c], pixels["bird"][0] / np.float32(255))


def test_grey_class_folder_without_an_input_shape_is_rank_3(tmp_path):
    _make_class_folder(tmp_path, mode="L")
    assert load_dataset(str(tmp_path), flatten=False).x_train.shape == (15, 10, 10)


def test_class_folders_without_a_train_level_have_no_test_part(tmp_path):
    _make_class_folder(tmp_path, train_level=False, test=False)
    data = load_dataset(str(tmp_path), input_shape=[None, 10, 10, 3])
    assert data.class_names == ["bird", "cat", "dog"] and data.x_test is None
    assert len(data.y_train) == 15


def test_class_folder_images_of_different_sizes_need_the_input_shape(tmp_path):
    _make_class_folder(tmp_path, classes=("a",), test=False)
    _make_class_folder(tmp_path, classes=("b",), size=(12, 10), test=False)
    with pytest.raises(DataError, match=r"differ in size .*; give the input shape so they are "
                                        r"resized to it"):
        load_dataset(str(tmp_path))
    assert load_dataset(str(tmp_path), input_shape=[None, 10, 10]).x_train.shape == (10, 10, 10)


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    _make_class_folder(tmp_path, test=False)
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "train" / "emu" / "notes.txt").write_text("no images here")
    empty = tmp_path / "train" / "emu"
    with pytest.raises(DataError, match=rf"^class folder '{re.escape(str(empty))}' has no images "
                                        r"\(\.png, \.jpg, \.jpeg, \.bmp, \.gif\)$"):
        load_dataset(str(tmp_path))


def test_train_folder_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"^no class folders in '.*train'; expected "):
        load_dataset(str(tmp_path))


def test_unreadable_image_is_an_error_naming_the_file(tmp_path):
    _make_class_folder(tmp_path, test=False)
    bad = tmp_path / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=rf"^cannot read image '{re.escape(str(bad))}': "):
        load_dataset(str(tmp_path))


def test_test_classes_that_differ_from_the_training_classes_are_an_error(tmp_path):
    _make_class_folder(tmp_path)
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "wolf")
    with pytest.raises(DataError, match=r"test classes \['bird', 'cat', 'wolf'\] .* are not the "
                                        r"training classes \['bird', 'cat', 'dog'\]"):
        load_dataset(str(tmp_path))


def test_idx_folder_with_a_sub_folder_is_still_read_as_idx(tmp_path):
    x, y = _images(6)
    _write_idx(tmp_path / "train-images-idx3-ubyte", x, False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y, False)
    (tmp_path / "extra").mkdir()
    data = load_dataset(str(tmp_path))
    assert data.x_train.shape == (6, 784) and data.class_names is None


def test_importing_the_module_loads_neither_pillow_nor_tensorflow():
    code = ("import sys, ckptsurgery.train.data\n"
            "print(any(m.split('.')[0] in ('PIL', 'tensorflow', 'keras', 'tf_keras')"
            " for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# -- split: shuffle and per_class -------------------------------------------------------------


def _numbered(n=100, classes=4, names=None) -> Dataset:
    """Row i holds the value i, so rows can be traced; labels cycle through the classes."""
    return Dataset(np.arange(n, dtype=np.float32).reshape(n, 1),
                   np.arange(n, dtype=np.int64) % classes, source="numbered", class_names=names)


def test_shuffled_validation_is_reproducible_by_seed():
    data = _numbered()
    a, b = split(data, 20, seed=7), split(data, 20, seed=7)
    np.testing.assert_array_equal(a.x_valid, b.x_valid)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_valid, split(data, 20, seed=8).x_valid)


def test_shuffled_validation_is_disjoint_from_training_which_keeps_its_order():
    parts = split(_numbered(), 20)
    valid, train = set(parts.x_valid[:, 0].tolist()), parts.x_train[:, 0].tolist()
    assert len(valid) == 20 and not valid & set(train)
    assert valid | set(train) == set(range(100)) and train == sorted(train)
    np.testing.assert_array_equal(parts.y_valid, parts.x_valid[:, 0].astype(np.int64) % 4)
    assert parts.x_valid[:, 0].tolist() != list(range(20))


def test_per_class_keeps_exactly_n_training_rows_of_each_class():
    data = _numbered()
    parts = split(data, 20, per_class=3)
    assert np.bincount(parts.y_train).tolist() == [3, 3, 3, 3]
    train = parts.x_train[:, 0].tolist()
    assert train == sorted(train) and not set(train) & set(parts.x_valid[:, 0].tolist())
    np.testing.assert_array_equal(parts.x_valid, split(data, 20).x_valid)
    np.testing.assert_array_equal(parts.x_train, split(data, 20, per_class=3).x_train)


def test_per_class_after_a_shuffled_validation_never_takes_validation_rows():
    parts = split(_numbered(), 20, per_class=5)
    assert np.bincount(parts.y_train).tolist() == [5] * 4
    assert not set(parts.x_train[:, 0].tolist()) & set(parts.x_valid[:, 0].tolist())


def test_a_file_sorted_by_class_validates_on_every_class_in_proportion():
    y = np.repeat(np.arange(10), 100)  # 100 rows per digit, in order, as docs/strategies.md
    data = Dataset(np.arange(1000, dtype=np.float32).reshape(1000, 1), y, source="sorted")
    parts = split(data, 200, seed=3)
    assert parts.per_class() == {k: (80, 20) for k in range(10)}
    assert parts.mismatch() is None


def test_a_split_missing_classes_says_which_and_which_way():
    y = np.array([0] * 50 + [1] * 50 + [2])  # one row of class 2: it goes one way only
    parts = split(Dataset(np.zeros((101, 1), np.float32), y, source="s"), 10, seed=0)
    assert parts.per_class()[2] in ((1, 0), (0, 1))
    assert "class(es) 2" in parts.mismatch()


def test_per_class_with_too_few_rows_names_the_class_and_its_count():
    data = _numbered(names=["ant", "bee", "cow", "doe"])
    with pytest.raises(DataError, match=r"^--per-class 30: class 0 \('ant'\) has only 20 "
                                        r"training rows after 20 went to validation"):
        split(data, 20, per_class=30)


def test_per_class_counts_a_class_missing_from_training_as_zero():
    data = _numbered(n=12, names=["ant", "bee", "cow", "doe", "elk"])  # no row is an elk
    with pytest.raises(DataError, match=r"class 4 \('elk'\) has only 0 training rows"):
        split(data, 2, per_class=1)


# -- --classes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "labels"), [
    ("5-9", [5, 6, 7, 8, 9]),
    ("0,2,4", [0, 2, 4]),
    ("0-2,7", [0, 1, 2, 7]),
    (" 3 , 1-2 ", [1, 2, 3]),
    ("4,4", [4]),
])
def test_parse_classes_accepts_ranges_and_lists(text, labels):
    assert parse_classes(text) == labels


@pytest.mark.parametrize("text", ["", "5-", "a", "9-5", "1,,2", "1;2", "-3", "1-2-3"])
def test_parse_classes_rejects_anything_else_naming_the_text(text):
    with pytest.raises(DataError, match=rf"^--classes '{re.escape(text)}' is not a list of labels; "
                                        r"give a range \(5-9\), a list \(0,2,4\) or both"):
        parse_classes(text)


def test_select_classes_keeps_and_renumbers_them_recording_the_map():
    data = load_dataset(None)
    chosen = select_classes(data, parse_classes("5-9"))
    assert chosen.label_map == {5: 0, 6: 1, 7: 2, 8: 3, 9: 4}
    keep = data.y_train >= 5
    np.testing.assert_array_equal(chosen.y_train, data.y_train[keep] - 5)
    np.testing.assert_array_equal(chosen.x_train, data.x_train[keep])
    np.testing.assert_array_equal(chosen.y_test, data.y_test[data.y_test >= 5] - 5)


def test_select_classes_renumbers_in_ascending_order_and_keeps_class_names():
    data = _numbered(n=8, names=["ant", "bee", "cow", "doe"])
    chosen = select_classes(data, [3, 1])
    assert chosen.label_map == {1: 0, 3: 1} and chosen.class_names == ["bee", "doe"]
    assert chosen.y_train.tolist() == [0, 1, 0, 1]
    assert chosen.x_train[:, 0].tolist() == [1, 3, 5, 7]


def test_select_classes_twice_maps_original_labels():
    once = select_classes(_numbered(n=8), [1, 2, 3])
    assert select_classes(once, [2]).label_map == {3: 0}


def test_select_classes_naming_an_absent_label_is_an_error():
    with pytest.raises(DataError, match=r"^--classes names 11, which the data does not have "
                                        r"\(labels: 0-9\)$"):
        select_classes(load_dataset(None), [5, 11])
