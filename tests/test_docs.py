"""The Python examples in the docs run as written (from the repository's root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

DOCS = ["README.md", "docs/graft.md", "docs/demo.md"]


def python_blocks(path: str) -> list[str]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.parametrize("doc", DOCS)
def test_python_examples_run(doc):
    blocks = python_blocks(doc)
    assert blocks, f"{doc} has no python example"
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
