"""The Python examples of docs/migrate.md run as written, on the corpus, from the repository's root."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_migrate_doc_examples_run(shared):
    with open(os.path.join(ROOT, "docs", "migrate.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 2
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
