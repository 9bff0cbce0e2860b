"""fixtures/ is what the project's own code makes: regenerating it gives the same weights."""

from __future__ import annotations

import subprocess
import sys

from conftest import FIXTURE_MLP, ROOT, read_vars


def test_fixture_mlp_is_reproducible(tmp_path):
    proc = subprocess.run([sys.executable, "fixtures/make_fixtures.py", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    committed, remade = read_vars(FIXTURE_MLP), read_vars(str(tmp_path / "mlp" / "my_model.ckpt"))
    assert sorted(remade) == sorted(committed)
    for name, value in committed.items():
        assert remade[name].tobytes() == value.tobytes(), name
