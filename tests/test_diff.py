"""diff: added, removed, reshaped, changed and identical variables of two checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from migrate_helpers import corpus_prefix, write_checkpoint

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.migrate.diff import diff_checkpoints
from ckptsurgery.migrate.rewrite import strip_checkpoint


@pytest.fixture
def pair(tmp_path) -> tuple[str, str]:
    ones = np.ones((2, 3), np.float32)
    a = write_checkpoint(str(tmp_path / "a" / "m"), {
        "same": ones, "moved": ones, "grown": np.zeros(2, np.float32),
        "gone": np.int64(7), "step": np.int64(3)})
    b = write_checkpoint(str(tmp_path / "b" / "m"), {
        "same": ones, "moved": ones + 0.25, "grown": np.zeros(3, np.float32),
        "new": np.float32(1), "step": np.int64(5)})
    return a, b


def test_every_kind_of_difference_is_reported(pair):
    d = diff_checkpoints(open_checkpoint(pair[0]), open_checkpoint(pair[1]))
    assert (d.added, d.removed, d.reshaped) == (["new"], ["gone"], ["grown"])
    assert d.changed == {"moved": 0.25, "step": 2.0}
    assert d.identical == ["same"]


def test_scalars_compare_bitwise(tmp_path):
    a = write_checkpoint(str(tmp_path / "a" / "m"), {"s": np.float32(0.0), "t": np.float32(1)})
    b = write_checkpoint(str(tmp_path / "b" / "m"), {"s": np.float32(-0.0), "t": np.float32(1)})
    d = diff_checkpoints(open_checkpoint(a), open_checkpoint(b))
    assert d.identical == ["t"] and d.changed == {"s": 0.0}


def test_atol_counts_small_differences_as_identical(pair):
    d = diff_checkpoints(open_checkpoint(pair[0]), open_checkpoint(pair[1]), atol=0.5)
    assert d.identical == ["moved", "same"] and d.changed == {"step": 2.0}


def test_stripped_checkpoint_differs_only_by_removals(shared, tmp_path):
    src = corpus_prefix("irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4")
    out = strip_checkpoint(src, str(tmp_path / "m"), optimizer_slots=True, progress=False)
    d = diff_checkpoints(open_checkpoint(src), open_checkpoint(out.prefix))
    assert len(d.identical) == 12 and len(d.removed) == 26
    assert not (d.added or d.reshaped or d.changed)


def test_cli_diff_json_and_text(pair):
    proc = run_cli("diff", *pair, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {k: report[k] for k in ("added", "removed", "reshaped", "identical")} == {
        "added": ["new"], "removed": ["gone"], "reshaped": ["grown"], "identical": ["same"]}
    assert {c["name"]: c["max_abs_diff"] for c in report["changed"]} == {"moved": 0.25,
                                                                          "step": 2.0}
    proc = run_cli("diff", *pair, "--atol", "1", "--only", "moved|grown")
    assert proc.returncode == 0, proc.stderr
    assert "identical 1, changed 0, reshaped 1" in proc.stdout
    assert "reshaped  grown  [2] float32 -> [3] float32" in proc.stdout
