"""The Python examples in README and docs/ run as written, from the repository's root.

They run in this process (``exec`` with fresh globals), so TensorFlow loads once for all of
them; each block of a page runs in order with the globals of the blocks before it, as a reader
would paste them. Pages whose examples read ../shared are skipped without it.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re

import pytest
from conftest import ROOT, SHARED

DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT)
                             for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]


def python_blocks(path: str) -> list[str]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.parametrize("doc", [d for d in DOCS if python_blocks(d)])
def test_python_examples_run(doc, tmp_path):
    blocks = python_blocks(doc)
    if any("../shared" in code for code in blocks) and not os.path.isdir(SHARED):
        pytest.skip("the examples read ../shared, which is not beside the checkout")
    namespace: dict = {"__name__": "__doc_example__"}
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        for i, code in enumerate(blocks):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, f"{doc} (python block {i + 1})", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(here)


def test_the_main_pages_have_python_examples():
    for doc in ("README.md", "docs/graft.md", "docs/demo.md", "docs/migrate.md",
                "docs/safety.md"):
        assert python_blocks(doc), f"{doc} has no python example"
