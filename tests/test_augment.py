"""--augment: small random shifts, flips and rotations of training image batches, reproducible
by seed; flattened rows are refused."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURE_CNN, FIXTURE_MLP, run_cli
from safety_helpers import assert_clean_error

from ckptsurgery.errors import UserError
from ckptsurgery.train.augment import _rotate, _shift, augment_batch, parse_augment
from ckptsurgery.train.data import BUILTIN_SUBSET


def test_a_shift_moves_the_image_and_zeroes_the_border():
    image = np.arange(1, 26, dtype=np.float32).reshape(5, 5)
    moved = _shift(image, 1, -2)
    np.testing.assert_array_equal(moved[1:, :3], image[:4, 2:])
    assert not moved[0].any() and not moved[:, 3:].any()


def test_a_rotation_by_zero_is_the_identity_and_keeps_the_centre():
    rng = np.random.RandomState(0)
    image = rng.rand(9, 9).astype(np.float32)
    np.testing.assert_array_equal(_rotate(image, 0.0), image)
    assert _rotate(image, 10.0)[4, 4] == image[4, 4]
    assert not np.array_equal(_rotate(image, 10.0), image)


def test_batches_are_augmented_reproducibly_and_the_input_is_left_alone():
    batch = np.random.RandomState(1).rand(6, 12, 12, 1).astype(np.float32)
    original = batch.copy()
    a = augment_batch(batch, ("shift", "flip", "rotate"), np.random.RandomState(7))
    b = augment_batch(batch, ("shift", "flip", "rotate"), np.random.RandomState(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(batch, original)
    assert a.shape == batch.shape and not np.array_equal(a, batch)
    flipped = augment_batch(batch, ("flip",), np.random.RandomState(3))
    for got, src in zip(flipped, batch, strict=True):
        assert np.array_equal(got, src) or np.array_equal(got, src[:, ::-1])


def test_unknown_augmentations_and_flat_rows_are_refused():
    with pytest.raises(UserError, match="use any of shift, flip, rotate"):
        parse_augment("shift,blur")
    with pytest.raises(UserError, match="needs image inputs"):
        augment_batch(np.zeros((2, 784), np.float32), ("shift",), np.random.RandomState(0))


def test_graft_trains_a_cnn_on_augmented_batches(tmp_path):
    r = run_cli("graft", FIXTURE_CNN, "--at", "pool2/MaxPool", "--pool", "avg", "--cut-after",
                "pool2/MaxPool", "--dense", "n:5", "--classes", "5-9", "--per-class", "50",
                "--valid-size", "500", "--data", BUILTIN_SUBSET, "--epochs", "1", "--augment",
                "shift,flip,rotate", "--out", str(tmp_path / "a.ckpt"), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("graft", FIXTURE_MLP, "--at", "hiddens3", "--dense", "n:10", "--data",
                BUILTIN_SUBSET, "--augment", "shift", "--out", str(tmp_path / "b.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "--augment needs image inputs")
