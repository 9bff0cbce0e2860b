"""``ckptsurgery verify``: every tensor read back with its checksum, the .meta checked against
the data, each problem named; every checkpoint written is verified before it moves into place."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import CORPUS, corpus_entries, run_cli
from safety_helpers import (
    assert_clean_error,
    copy_checkpoint,
    flip_bit,
    make_mismatched,
    run_main,
)

DATA = ".data-00000-of-00001"


def _offset_of(prefix: str, key: str) -> int:
    from ckptsurgery.formats.bundle import read_index

    return read_index(prefix + ".index").entries[key].offset


def test_intact_checkpoint_verifies(mlp_ckpt):
    code, out, err = run_main("verify", mlp_ckpt)
    assert code == 0 and err == ""
    assert "12 read back, 1,034,840 bytes, checksums match" in out
    assert "12 tensor(s) the saver restores checked" in out
    assert out.rstrip().endswith("OK")


@pytest.mark.parametrize("entry", corpus_entries())
def test_every_corpus_checkpoint_verifies(shared, entry):
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.safety.verify import verify_checkpoint

    record = json.load(open(os.path.join(CORPUS, entry, "record.json")))
    prefix = os.path.join(CORPUS, entry, record["prefix"])
    report = verify_checkpoint(prefix)
    assert report.ok, report.problems
    assert report.tensors_read == len(open_checkpoint(prefix).variables)
    assert report.meta_checked == record["has_meta"]
    if record["has_meta"]:
        assert report.restored_checked >= report.tensors_read


def test_tensorflow_reader_checks_each_entrys_crc32c(mlp_ckpt, tmp_path):
    """What verify relies on: TensorFlow recomputes the checksum of a tensor's bytes."""
    import tensorflow as tf

    prefix = copy_checkpoint(mlp_ckpt, str(tmp_path))
    flip_bit(prefix + DATA, _offset_of(prefix, "hidden2/kernel") + 7)
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    reader.get_tensor("hidden1/kernel")  # the other tensors still read
    with pytest.raises(tf.errors.OpError, match="Checksum does not match"):
        reader.get_tensor("hidden2/kernel")


def test_a_flipped_bit_names_the_variable_it_is_in(mlp_ckpt, tmp_path):
    prefix = copy_checkpoint(mlp_ckpt, str(tmp_path))
    flip_bit(prefix + DATA, _offset_of(prefix, "hidden3/bias") + 2, 5)
    code, out, err = run_main("verify", prefix, "--json")
    assert_clean_error(code, err, 2, "is broken", "hidden3/bias")
    report = json.loads(out)
    assert not report["ok"] and report["tensors_read"] == 11
    assert [(p["kind"], p["name"]) for p in report["problems"]] == [("data", "hidden3/bias")]
    assert "checksum" in report["problems"][0]["message"]


def test_meta_against_data_names_shape_dtype_and_missing(mlp_ckpt, tmp_path):
    from ckptsurgery.safety.verify import verify_checkpoint

    report = verify_checkpoint(make_mismatched(mlp_ckpt, str(tmp_path)))
    found = {(p.kind, p.name): p.message for p in report.problems}
    assert set(found) == {("shape", "hidden1/kernel"), ("dtype", "hidden1/bias"),
                          ("missing", "logits/bias")}
    assert "[784, 300]" in found["shape", "hidden1/kernel"]
    assert "[784, 200]" in found["shape", "hidden1/kernel"]
    assert "float32" in found["dtype", "hidden1/bias"]
    assert "float64" in found["dtype", "hidden1/bias"]
    assert report.tensors_read == 11  # the data itself is intact


def test_unparseable_meta_is_a_problem_not_a_crash(mlp_ckpt, tmp_path):
    prefix = copy_checkpoint(mlp_ckpt, str(tmp_path))
    with open(prefix + ".meta", "wb") as f:
        f.write(b"\x0a\xff\xff\xff\xff\x0f")
    code, out, err = run_main("verify", prefix)
    assert_clean_error(code, err, 2, "is broken", "meta", "MetaGraphDef")
    assert "12 read back" in out


def test_no_checkpoint_is_an_error_not_a_verdict(tmp_path):
    code, out, err = run_main("verify", str(tmp_path / "none.ckpt"))
    assert_clean_error(code, err, 2, "no checkpoint at")
    assert out == ""


def test_a_staged_checkpoint_that_does_not_verify_never_moves_into_place(tmp_path):
    """The gate every writer goes through: damage the temporary output inside the staging block
    (a failing disk); nothing appears at the prefix and the temporary folder goes."""
    import tensorflow as tf

    from ckptsurgery.errors import InternalError
    from ckptsurgery.safety.staging import staged_checkpoint

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.Variable(tf.ones([1000]), name="w")
        saver = tf.compat.v1.train.Saver()
    prefix = str(tmp_path / "out" / "w.ckpt")
    os.makedirs(tmp_path / "out")
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        with pytest.raises(InternalError, match="does not verify.*'w'.*nothing was moved"):
            with staged_checkpoint(prefix) as tmp:
                saver.save(sess, tmp, write_state=False)
                flip_bit(tmp + DATA, 100)
    assert os.listdir(tmp_path / "out") == []


def test_a_meta_written_from_known_bytes_is_compared_with_them(tmp_path):
    """check_written with a WrittenMeta compares the .meta with the bytes written instead of
    parsing it: a changed byte fails as a damaged disk would, and the saver's restores the
    writer traced are still checked against the data."""
    import shutil

    from conftest import FIXTURE_MIXED

    from ckptsurgery.errors import CheckpointCorruptError, InternalError
    from ckptsurgery.formats.metafile import read_meta_graph
    from ckptsurgery.graphdef.saver import saver_tensors
    from ckptsurgery.safety.verify import WrittenMeta, check_written

    src = str(tmp_path / "m")
    shutil.copytree(os.path.dirname(FIXTURE_MIXED), src)
    prefix = os.path.join(src, os.path.basename(FIXTURE_MIXED))
    data = open(prefix + ".meta", "rb").read()
    restored = saver_tensors(read_meta_graph(prefix + ".meta"))
    check_written(prefix, WrittenMeta(data, restored))  # as written: passes
    with pytest.raises(InternalError, match=r"\.meta' does not read back as the bytes written"):
        check_written(prefix, WrittenMeta(data[:-1] + bytes([data[-1] ^ 1]), restored))
    with pytest.raises(InternalError, match="does not read back"):
        check_written(prefix, WrittenMeta(data + b"\0", restored))
    key, _, shape = restored[0]
    with pytest.raises(CheckpointCorruptError, match=f"'{key}'.*reads it as int8"):
        check_written(prefix, WrittenMeta(data, [(key, "int8", shape), *restored[1:]]))


def test_graft_output_is_verified_before_the_rename(mlp_ckpt, tmp_path, monkeypatch):
    """export_checkpoint runs verify on the staged files: seen here by recording the call."""
    import ckptsurgery.safety.verify

    seen = []
    original = ckptsurgery.safety.verify.check_written
    monkeypatch.setattr(ckptsurgery.safety.verify, "check_written",
                        lambda p, meta=None, read_back=None: (
                            seen.append((p, os.path.exists(out + ".index"))),
                            original(p, meta, read_back)))
    out = str(tmp_path / "x.ckpt")
    code, _, _ = run_main("graft", mlp_ckpt, "--at", "hiddens3", "--dense", "logits:10",
                          "--out", out)
    assert code == 0
    (staged, final_existed), = seen
    assert staged != out and os.path.basename(staged) == "x.ckpt" and not final_existed
    assert run_main("verify", out)[0] == 0


def test_damaged_tensors_among_neighbours_read_together_are_each_named(tmp_path):
    """Small tensors are read back in runs; a damaged one is still reported alone, by name,
    and the others of its run are read and counted."""
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.formats.writer import BundleFileWriter, data_path
    from ckptsurgery.safety.verify import verify_checkpoint

    prefix = str(tmp_path / "m")
    with BundleFileWriter(prefix) as writer:
        for i in range(30):
            writer.add(f"t{i:02d}", np.arange(i + 10, dtype=np.float32))
    entries = open_checkpoint(prefix).bundle.entries
    with open(data_path(prefix), "r+b") as f:
        for key in ("t04", "t17"):
            f.seek(entries[key].offset + 2)
            byte = f.read(1)
            f.seek(entries[key].offset + 2)
            f.write(bytes([byte[0] ^ 1]))
    report = verify_checkpoint(prefix)
    assert [(p.kind, p.name) for p in report.problems] == [("data", "t04"), ("data", "t17")]
    assert "checksum" in report.problems[0].message
    assert report.tensors_read == 28 and not report.ok


def test_nan_and_inf_are_reported_per_tensor_unless_allowed(tmp_path):
    from migrate_helpers import write_checkpoint

    from ckptsurgery.safety.verify import verify_checkpoint

    bad = np.ones(10, np.float32)
    bad[[1, 2]] = np.nan
    bad[5] = np.inf
    prefix = write_checkpoint(str(tmp_path / "n" / "m"), {"w": bad, "fine": np.ones(3, np.float32),
                                                           "step": np.int64(3)})
    report = verify_checkpoint(prefix)
    assert [(p.kind, p.name) for p in report.problems] == [("nonfinite", "w")]
    assert "2 NaN and 1 Inf of 10 values" in report.problems[0].message
    assert verify_checkpoint(prefix, allow_nonfinite=True).ok
    r = run_cli("verify", prefix)
    assert_clean_error(r.returncode, r.stderr, 2, "2 NaN and 1 Inf", "--allow-nonfinite")
    assert run_cli("verify", prefix, "--allow-nonfinite").returncode == 0
