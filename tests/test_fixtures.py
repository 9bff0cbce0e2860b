"""fixtures/ is what the project's own code makes: regenerating it gives the same weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, read_vars

FIXTURES = {"mlp": "mlp/my_model.ckpt", "mixed": "mixed/model.ckpt", "cnn": "cnn/model.ckpt",
            "rnn": "rnn/model.ckpt"}


@pytest.fixture(scope="module")
def remade(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("fixtures")
    proc = subprocess.run([sys.executable, "fixtures/make_fixtures.py", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_reproducible(remade, name):
    committed = read_vars(os.path.join(ROOT, "fixtures", FIXTURES[name]))
    again = read_vars(os.path.join(remade, FIXTURES[name]))
    assert sorted(again) == sorted(committed)
    for key, value in committed.items():
        assert again[key].tobytes() == value.tobytes(), key
