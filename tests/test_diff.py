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


def test_against_a_meta_lists_every_planted_mismatch(mlp_ckpt, tmp_path):
    """The MLP fixture's saver against data where hidden1/bias is reshaped, hidden2/kernel
    retyped, hidden2/bias missing, hidden3/kernel renamed hidden3/weights, plus an extra."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(mlp_ckpt)
    tensors = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    tensors["hidden1/bias"] = np.zeros(301, np.float32)
    tensors["hidden2/kernel"] = tensors["hidden2/kernel"].astype(np.float64)
    del tensors["hidden2/bias"]
    tensors["hidden3/weights"] = tensors.pop("hidden3/kernel")
    tensors["extra_thing"] = np.ones(4, np.float32)
    data = write_checkpoint(str(tmp_path / "d" / "model.ckpt"), tensors)
    proc = run_cli("diff", data, "--against", mlp_ckpt + ".meta", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["missing"] == ["hidden2/bias"]
    assert report["extra"] == ["extra_thing"]
    assert report["reshaped"] == {"hidden1/bias": [[300], [301]]}
    assert report["retyped"] == {"hidden2/kernel": ["float32", "float64"]}
    assert report["renamed"] == {"hidden3/kernel": "hidden3/weights"}
    assert report["matched"] == 8 and report["ok"] is False
    text = run_cli("diff", data, "--against", mlp_ckpt)  # a checkpoint: its .meta
    assert text.returncode == 1
    suggested = "--map '^hidden3/weights$=hidden3/kernel'"
    assert f"renamed   hidden3/weights -> hidden3/kernel  (ckptsurgery rename {suggested})" \
        in text.stdout
    fixed = str(tmp_path / "f" / "model.ckpt")  # the suggestion, run as printed, fixes the name
    assert run_cli("rename", data, "--map", "^hidden3/weights$=hidden3/kernel", "--out",
                   fixed).returncode == 0
    after = json.loads(run_cli("diff", fixed, "--against", mlp_ckpt + ".meta", "--json").stdout)
    assert after["renamed"] == {} and "hidden3/kernel" not in after["missing"]


def test_against_its_own_meta_a_checkpoint_restores_as_it_is(mlp_ckpt):
    proc = run_cli("diff", mlp_ckpt, "--against", mlp_ckpt + ".meta")
    assert proc.returncode == 0, proc.stderr
    assert "matched 12, missing 0, extra 0" in proc.stdout and "restores as it is" in proc.stdout


def test_diff_needs_b_or_against_not_both(mlp_ckpt):
    from safety_helpers import assert_clean_error

    for args in ((mlp_ckpt,), (mlp_ckpt, mlp_ckpt, "--against", mlp_ckpt)):
        r = run_cli("diff", *args)
        assert_clean_error(r.returncode, r.stderr, 2, "--against")


def test_a_graft_whose_restore_fails_prints_the_whole_report(mlp_ckpt, tmp_path):
    """Data that disagrees with its own .meta: graft stops at the restore with one error line
    and prints every mismatch first (the diff --against report)."""
    import shutil

    import tensorflow as tf
    from safety_helpers import assert_clean_error

    reader = tf.train.load_checkpoint(mlp_ckpt)
    tensors = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    tensors["hidden1/bias"] = np.zeros(301, np.float32)
    tensors["hidden2/weights"] = tensors.pop("hidden2/kernel")
    data = write_checkpoint(str(tmp_path / "d" / "model.ckpt"), tensors)
    shutil.copy(mlp_ckpt + ".meta", data + ".meta")
    r = run_cli("graft", data, "--at", "hiddens3", "--dense", "logits:10", "--out",
                str(tmp_path / "o.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "cannot restore")
    assert "reshaped  hidden1/bias  expected [300], holds [301]" in r.stdout
    assert "renamed   hidden2/weights -> hidden2/kernel" in r.stdout
