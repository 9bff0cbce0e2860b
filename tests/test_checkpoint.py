"""Opening checkpoints from whatever path the user gives."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import CORPUS, FIXTURE_MLP

from ckptsurgery.errors import CheckpointNotFoundError
from ckptsurgery.formats.checkpoint import locate, open_checkpoint


@pytest.mark.parametrize("suffix", ["", ".meta", ".index", ".data-00000-of-00001"])
def test_prefix_or_any_file_gives_the_prefix(suffix):
    files = locate(FIXTURE_MLP + suffix)
    assert files.prefix == FIXTURE_MLP
    assert files.format == "V2"
    assert files.data == (FIXTURE_MLP + ".data-00000-of-00001",)
    assert files.meta == FIXTURE_MLP + ".meta"


def test_folder_with_state_file_gives_latest():
    assert locate(os.path.dirname(FIXTURE_MLP)).prefix == FIXTURE_MLP


def test_state_file_written_elsewhere_is_followed_by_base_name(tmp_path):
    for name in os.listdir(os.path.dirname(FIXTURE_MLP)):
        if name.startswith("my_model.ckpt"):
            shutil.copy(os.path.join(os.path.dirname(FIXTURE_MLP), name), tmp_path)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/run3/my_model.ckpt"\n')
    assert locate(str(tmp_path)).prefix == str(tmp_path / "my_model.ckpt")


def test_variables_are_listed_with_shapes_dtypes_and_bytes():
    variables = open_checkpoint(FIXTURE_MLP).variables
    v = variables["hidden1/kernel"]
    assert (v.shape, v.dtype, v.nbytes) == ((784, 300), "float32", 784 * 300 * 4)
    assert set(variables) == {f"{layer}/{kind}" for layer in
                              ("hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "logits")
                              for kind in ("kernel", "bias")}


def test_missing_prefix_says_what_was_looked_for(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as e:
        locate(str(tmp_path / "model.ckpt"))
    assert "looked for" in str(e.value) and "model.ckpt.index" in str(e.value)


def test_v1_single_file_format(shared):
    prefix = os.path.join(CORPUS, "AloshkaD__traffic-signs__model_v1", "model.ckpt")
    files = locate(prefix)
    assert files.format == "V1" and files.data == (prefix,) and files.index is None
    ckpt = open_checkpoint(prefix)
    assert ckpt.variables["Variable_2"].shape == (6144, 128)
    assert ckpt.read("Variable_2").shape == (6144, 128)


@pytest.mark.parametrize("folder", ["Rabbit-JCY__little_ruan__sharded2",
                                    "taiguangxing__Wide_n_deep__estimator_ckpt-2010"])
def test_sharded_checkpoints_list_every_shard(shared, folder):
    files = locate(os.path.join(CORPUS, folder))
    assert len(files.data) == 2
    assert [f.rsplit(".data-", 1)[1] for f in files.data] == ["00000-of-00002", "00001-of-00002"]
    ckpt = open_checkpoint(os.path.join(CORPUS, folder))
    assert all(ckpt.read(name) is not None for name in list(ckpt.variables)[:5])
