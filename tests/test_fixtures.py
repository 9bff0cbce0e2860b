"""fixtures/ is what the project's own code makes: regenerating it gives the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, read_vars

FIXTURES = {"mlp": "mlp/my_model.ckpt", "mixed": "mixed/model.ckpt", "cnn": "cnn/model.ckpt",
            "rnn": "rnn/model.ckpt", "sparse": "sparse/model.ckpt",
            "bert_classifier": "bert_classifier/model.ckpt", "bert_squad": "bert_squad/model.ckpt",
            "bert_pretraining": "bert_pretraining/model.ckpt",
            "albert_pretraining": "albert_pretraining/model.ckpt",
            "electra_pretraining": "electra_pretraining/model.ckpt", "gpt2": "gpt2/model.ckpt"}
#: The files the families' releases ship beside the checkpoint, made with it.
SIDE_FILES = {"bert_classifier": ("bert_config.json", "vocab.txt"),
              "bert_squad": ("bert_config.json", "vocab.txt"),
              "bert_pretraining": ("bert_config.json", "vocab.txt"),
              "albert_pretraining": ("albert_config.json", "30k-clean.model"),
              "electra_pretraining": ("vocab.txt",), "gpt2": ("hparams.json",)}


@pytest.fixture(scope="module")
def remade(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("fixtures")
    proc = subprocess.run([sys.executable, "fixtures/make_fixtures.py", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(out)


def _made_on(folder: str, name: str) -> dict:
    with open(os.path.join(folder, "made_on.json")) as f:
        return json.load(f)[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_reproducible(remade, name):
    """Bit for bit where the committed fixtures were made with the same TensorFlow, numpy and
    processor features (the fixture's record in ``made_on.json``); elsewhere TensorFlow's kernels round differently,
    so the variables' names, dtypes and shapes are compared, and the values of the fixtures
    made in a step or two (all but the CNN, whose epoch of Adam and batch norm drifts by up to
    0.04 from one processor to another) within float32 rounding."""
    committed = read_vars(os.path.join(ROOT, "fixtures", FIXTURES[name]))
    again = read_vars(os.path.join(remade, FIXTURES[name]))
    assert sorted(again) == sorted(committed)
    same_machine = _made_on(remade, name) == _made_on(os.path.join(ROOT, "fixtures"), name)
    for key, value in committed.items():
        assert (again[key].dtype, again[key].shape) == (value.dtype, value.shape), key
        if same_machine:
            assert again[key].tobytes() == value.tobytes(), key
        elif name != "cnn":
            np.testing.assert_allclose(again[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SIDE_FILES))
def test_side_files_are_remade(remade, name):
    """The configs and vocabularies beside the families' checkpoints are what the maker writes."""
    for side in SIDE_FILES[name]:
        with open(os.path.join(ROOT, "fixtures", name, side), "rb") as a, \
                open(os.path.join(remade, name, side), "rb") as b:
            assert a.read() == b.read(), side
