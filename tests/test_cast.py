"""cast: floating variables stored in another dtype; the .meta still restores (casting back)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import read_vars, run_cli
from migrate_helpers import corpus_prefix, readable_entries, restore_values, write_checkpoint

from ckptsurgery.errors import SelectionError, UserError
from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.slots import classify_by_name as classify
from ckptsurgery.migrate.rewrite import cast_checkpoint, plan_cast

HANDSON = "haerfest__handson-ml__my_model_final"
FLOATS = ("float16", "bfloat16", "float32", "float64")


@pytest.mark.parametrize("entry", readable_entries())
def test_cast_to_float16_on_every_corpus_checkpoint(shared, entry, tmp_path):
    src = corpus_prefix(entry)
    before = read_vars(src)
    result = cast_checkpoint(src, "float16", str(tmp_path / "m"), progress=False)
    after = read_vars(result.prefix)
    roles = classify(before)
    assert set(after) == set(before)
    for k, value in before.items():
        cast = value.dtype.name in FLOATS and roles[k].kind != "step"
        if cast:
            assert after[k].dtype == np.float16
            with np.errstate(over="ignore"):  # Adagrad accumulators beyond 65504 become inf
                assert after[k].tobytes() == value.astype(np.float16).tobytes(), k
        else:
            assert after[k].dtype == value.dtype and after[k].tobytes() == value.tobytes(), k
    if os.path.isfile(src + ".meta"):
        restored = restore_values(result.prefix)
        for k, value in restored.items():
            assert value.dtype == before[k].dtype, k
            assert np.array_equal(value, after[k].astype(value.dtype)), k


def test_bfloat16_matches_tensorflows_cast(shared, tmp_path):
    import tensorflow as tf

    src = corpus_prefix(HANDSON)
    result = cast_checkpoint(src, "bfloat16", str(tmp_path / "m"), progress=False)
    reader = tf.train.load_checkpoint(result.prefix)
    assert {d.name for d in reader.get_variable_to_dtype_map().values()} == {"bfloat16"}
    before = read_vars(src)["dnn/hidden1/weights"]
    expected = tf.cast(before, tf.bfloat16).numpy()
    assert reader.get_tensor("dnn/hidden1/weights").tobytes() == expected.tobytes()


def test_only_restricts_the_cast(shared, tmp_path):
    result = cast_checkpoint(corpus_prefix(HANDSON), "float16", str(tmp_path / "m"),
                             only="weights$", progress=False)
    dtypes = {k: v.dtype.name for k, v in read_vars(result.prefix).items()}
    assert {k for k, d in dtypes.items() if d == "float16"} == {
        "dnn/hidden1/weights", "dnn/hidden2/weights", "dnn/outputs/weights"}
    assert set(result.plan.casts) == {k for k, d in dtypes.items() if d == "float16"}


def test_cast_back_to_float32_is_exact(shared, tmp_path):
    half = cast_checkpoint(corpus_prefix(HANDSON), "float16", str(tmp_path / "half" / "m"),
                           progress=False)
    full = cast_checkpoint(half.prefix, "float32", str(tmp_path / "full" / "m"), progress=False)
    h, f = read_vars(half.prefix), read_vars(full.prefix)
    assert all(f[k].dtype == np.float32 and np.array_equal(f[k], h[k].astype(np.float32))
               for k in h)
    # the .meta of a cast checkpoint is rewritten again: its savers' casts are understood
    restored = restore_values(full.prefix)
    assert all(np.array_equal(restored[k], f[k]) for k in f)


def test_step_counters_and_integers_are_left_alone(shared):
    plan = plan_cast(open_checkpoint(corpus_prefix(
        "jncharon__wine-classifier__estimator_ckpt-3374")), "float16")
    assert "global_step" not in plan.casts and len(plan.casts) == 16


def test_values_beyond_float16_are_reported(tmp_path):
    src = write_checkpoint(str(tmp_path / "in" / "m"), {
        "big": np.array([1.0, 1e6, -1e6, np.inf], np.float32), "ok": np.ones(3, np.float32)})
    result = cast_checkpoint(src, "float16", str(tmp_path / "out" / "m"), progress=False)
    assert result.overflowed == {"big": 2}
    assert any(line.startswith("warning: 1 tensor(s)") for line in result.lines())


def test_bad_dtype_and_unmatched_only_are_user_errors(shared):
    checkpoint = open_checkpoint(corpus_prefix(HANDSON))
    with pytest.raises(UserError, match="cannot cast to 'int8'"):
        plan_cast(checkpoint, "int8")
    with pytest.raises(SelectionError, match="--only 'kernel' matches no variable"):
        plan_cast(checkpoint, "float16", only="kernel")


def test_cli_cast(shared, tmp_path):
    out = str(tmp_path / "m")
    proc = run_cli("cast", corpus_prefix(HANDSON), "--dtype", "float16", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    assert len(report["plan"]["cast"]) == 6 and report["meta"]["saver_scope"] == "save"
    assert {v.dtype.name for v in read_vars(out).values()} == {"float16"}
