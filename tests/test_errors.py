"""Every bad input gets one line on stderr naming the thing and the fix, exit 2 (user) or 1
(internal), no traceback without --debug.

Most cases run ``main(argv)`` in this process (see safety_helpers.run_main); the ones that need
the real process (the entry point, a crash, a full disk, dropped privileges) run the command.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import subprocess
import sys

import pytest
from conftest import CORPUS, ROOT, run_cli
from safety_helpers import (
    assert_clean_error,
    copy_checkpoint,
    craft_index,
    entry_bytes,
    flip_bit,
    make_mismatched,
    run_main,
    sha256_files,
    small_disk,
    truncate,
)

GRAFT = ("--at", "hiddens3", "--dense", "hidden4:20:relu", "--dense", "logits:10")
DATA = ".data-00000-of-00001"


@pytest.fixture
def ckpt(mlp_ckpt, tmp_path) -> str:
    """A private copy of the fixture, to damage."""
    return copy_checkpoint(mlp_ckpt, str(tmp_path / "in"))


def as_user(*cmd: str) -> list[str]:
    """``cmd`` run without root's power to ignore file permissions."""
    if os.geteuid() != 0:
        return list(cmd)
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]


# --- the real entry point ----------------------------------------------------------------------

def test_missing_checkpoint_is_one_line_from_the_real_command(tmp_path):
    r = run_cli("verify", str(tmp_path / "nothing.ckpt"), process=True)
    assert_clean_error(r.returncode, r.stderr, 2, "no checkpoint at", "nothing.ckpt")
    assert r.stdout == ""


def test_debug_shows_the_traceback(tmp_path):
    code, _, err = run_main("verify", str(tmp_path / "nothing.ckpt"))
    assert code == 2 and "Traceback" not in err
    r = run_cli("verify", str(tmp_path / "nothing.ckpt"), "--debug", process=True)
    assert r.returncode != 0 and "Traceback" in r.stderr and "CheckpointNotFoundError" in r.stderr


@pytest.mark.slow
def test_a_tensorflow_abort_becomes_one_line_with_exit_1(ckpt):
    """Bypass the pure-Python check and let TensorFlow's reader hit a negative dimension: it
    aborts (SIGABRT); the guard reports it in one line with TensorFlow's failed check."""
    craft_index(ckpt, "hidden1/bias", entry_bytes(1, [-5], size=1200))
    script = (
        "import sys\n"
        "from ckptsurgery.cli.crashguard import run_guarded\n"
        "def read(argv):\n"
        "    import tensorflow as tf\n"
        "    tf.compat.v1.train.NewCheckpointReader(argv[0])\n"
        "    return 0\n"
        "sys.exit(run_guarded(read, sys.argv[1:]))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, ckpt], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    line = assert_clean_error(r.returncode, _without_tf_startup(r.stderr), 1,
                              "TensorFlow crashed (SIGABRT", "Check failed")
    assert "please report it" in line


@pytest.mark.slow
def test_the_same_index_through_the_cli_is_caught_before_tensorflow(ckpt):
    craft_index(ckpt, "hidden1/bias", entry_bytes(1, [-5], size=1200))
    r = run_cli("verify", ckpt, process=True)
    line = assert_clean_error(r.returncode, r.stderr, 2, "hidden1/bias", "invalid shape [-5]")
    assert "copy the checkpoint again" in line


def _without_tf_startup(err: str) -> str:
    """TensorFlow's own start-up lines (a bare script does not silence them as the CLI does)."""
    noise = ("WARNING: All log messages", "oneDNN custom operations", "cpu_feature_guard",
             "To enable the following", "I0000 ", "W0000 ")
    return "\n".join(ln for ln in err.splitlines() if not any(n in ln for n in noise))


def test_no_space_left_on_device(tmp_path):
    """(Where no tmpfs can be mounted, the in-process test below covers it.)"""
    with small_disk(tmp_path / "small") as small:
        r = run_cli("graft", os.path.join(ROOT, "fixtures/mlp/my_model.ckpt"), *GRAFT,
                    "--out", str(small / "x.ckpt"))
        assert_clean_error(r.returncode, r.stderr, 2, "x.ckpt", "no space left on the device",
                           "another disk")
        assert os.listdir(small) == []  # no partial output, no temporary folder


def test_no_space_left_while_moving_into_place(mlp_ckpt, tmp_path, monkeypatch):
    import errno

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    code, _, err = run_main("graft", mlp_ckpt, *GRAFT, "--out", str(tmp_path / "o" / "x.ckpt"))
    assert_clean_error(code, err, 2, "no space left on the device")
    assert os.listdir(tmp_path / "o") == []


@pytest.mark.slow
def test_permission_denied_on_the_output_folder(mlp_ckpt, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    r = subprocess.run(as_user(sys.executable, "-m", "ckptsurgery", "graft", mlp_ckpt, *GRAFT,
                               "--out", str(locked / "x.ckpt")),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert_clean_error(r.returncode, r.stderr, 2, str(locked), "permission denied")
    assert os.listdir(locked) == []


def test_permission_denied_on_an_input_file(ckpt):
    os.chmod(ckpt + DATA, 0)
    r = subprocess.run(as_user(sys.executable, "-m", "ckptsurgery", "verify", ckpt),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert_clean_error(r.returncode, r.stderr, 2, "my_model.ckpt" + DATA, "permission denied",
                       "chmod u+r")


# --- finding the checkpoint --------------------------------------------------------------------

def test_prefix_without_its_extension_lists_the_checkpoint_meant(mlp_ckpt):
    code, _, err = run_main("verify", mlp_ckpt[: -len(".ckpt")])
    assert_clean_error(code, err, 2, "no checkpoint at", "checkpoints in that folder",
                       "my_model.ckpt")


@pytest.mark.parametrize("suffix", [".index", ".meta", DATA])
def test_a_file_of_the_checkpoint_stands_for_its_prefix(mlp_ckpt, suffix):
    code, out, _ = run_main("verify", mlp_ckpt + suffix)
    assert code == 0 and "OK" in out


def test_a_file_that_is_no_checkpoint_given_as_prefix():
    code, _, err = run_main("verify", os.path.join(ROOT, "pyproject.toml"))
    assert_clean_error(code, err, 2, "pyproject.toml", "neither a V2 checkpoint prefix",
                       "pass the checkpoint prefix")


@pytest.mark.parametrize("suffix", [".index", ".meta", DATA])
def test_an_output_given_as_a_file_name_says_which_prefix_was_meant(mlp_ckpt, tmp_path, suffix):
    code, _, err = run_main("graft", mlp_ckpt, *GRAFT, "--out", str(tmp_path / f"x.ckpt{suffix}"))
    assert_clean_error(code, err, 2, "not a prefix", f"did you mean '{tmp_path / 'x.ckpt'}'")
    assert os.listdir(tmp_path) == []


def test_missing_data_file(ckpt):
    os.remove(ckpt + DATA)
    code, _, err = run_main("verify", ckpt)
    assert_clean_error(code, err, 2, "no data file", "copy the .data-* files")


def test_missing_one_shard_of_two(shared, tmp_path):
    prefix = copy_checkpoint(
        os.path.join(CORPUS, "taiguangxing__Wide_n_deep__estimator_ckpt-2010", "model.ckpt-2010"),
        str(tmp_path))
    os.remove(prefix + ".data-00001-of-00002")
    code, _, err = run_main("verify", prefix)
    assert_clean_error(code, err, 2, "missing shard(s)", "model.ckpt-2010.data-00001-of-00002",
                       "copy every .data-* file")


def test_folder_without_state_file(ckpt):
    """(verify, inspect... take such a folder for a batch of the checkpoints in it.)"""
    os.remove(os.path.join(os.path.dirname(ckpt), "checkpoint"))
    code, _, err = run_main("diff", os.path.dirname(ckpt), ckpt)
    assert_clean_error(code, err, 2, "no 'checkpoint' state file",
                       "pass one of its checkpoints instead", ckpt)


# --- damaged files -----------------------------------------------------------------------------

def test_truncated_index(ckpt):
    truncate(ckpt + ".index", 300)
    code, _, err = run_main("inspect", ckpt)
    assert_clean_error(code, err, 2, "my_model.ckpt.index", "damaged", "copy the checkpoint again")


def test_bit_flipped_index(ckpt):
    flip_bit(ckpt + ".index", 100, 3)
    code, _, err = run_main("inspect", ckpt)
    assert_clean_error(code, err, 2, "my_model.ckpt.index", "fails its checksum", "bit-flipped")


def test_truncated_data(ckpt):
    truncate(ckpt + DATA, 500_000)
    code, _, err = run_main("verify", ckpt)
    assert_clean_error(code, err, 2, "my_model.ckpt" + DATA, "truncated", "hidden")


def test_bit_flipped_data_found_by_verify(ckpt):
    flip_bit(ckpt + DATA, 5000)
    code, out, err = run_main("verify", ckpt)
    assert_clean_error(code, err, 2, "is broken", "hidden1/kernel", "checksum")


def test_bit_flipped_data_stops_a_graft_before_it_writes(ckpt, tmp_path):
    flip_bit(ckpt + DATA, 5000)
    code, _, err = run_main("graft", ckpt, *GRAFT, "--out", str(tmp_path / "o" / "x.ckpt"))
    assert_clean_error(code, err, 2, "hidden1/kernel", "do not match their checksum", "damaged",
                       "copy the checkpoint again")
    assert not glob.glob(str(tmp_path / "o" / "x.ckpt*"))


def test_truncated_meta(ckpt):
    truncate(ckpt + ".meta", 20_000)
    code, _, err = run_main("graft", ckpt, *GRAFT, "--out", "x", "--dry-run")
    assert_clean_error(code, err, 2, "my_model.ckpt.meta", "is not a MetaGraphDef")


@pytest.mark.parametrize("content", ["random", "index", "json"])
def test_a_meta_that_is_not_a_metagraphdef(ckpt, content):
    data = {"random": random.Random(5).randbytes(4000),
            "index": open(ckpt + ".index", "rb").read(),
            "json": b'{"model": "not a graph"}'}[content]
    with open(ckpt + ".meta", "wb") as f:
        f.write(data)
    code, _, err = run_main("graft", ckpt, *GRAFT, "--out", "x", "--dry-run")
    assert_clean_error(code, err, 2, "my_model.ckpt.meta", "MetaGraphDef")


def test_ops_this_tensorflow_does_not_register_are_named_with_both_versions(ckpt):
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef.FromString(open(ckpt + ".meta", "rb").read())
    for node in meta.graph_def.node:
        if node.op == "MatMul":
            node.op = "FancyMatMul"
    meta.meta_info_def.tensorflow_version = "1.4.0"
    with open(ckpt + ".meta", "wb") as f:
        f.write(meta.SerializeToString())
    code, _, err = run_main("graft", ckpt, *GRAFT, "--out", "x", "--dry-run")
    assert_clean_error(code, err, 2, "FancyMatMul", f"TensorFlow {tf.__version__}",
                       "written by TensorFlow 1.4.0", "inspect")


# --- naming things -----------------------------------------------------------------------------

def test_unknown_collection_suggests_the_nearest(mlp_ckpt):
    code, _, err = run_main("graft", mlp_ckpt, "--at", "hidden3", "--dense", "logits:10",
                            "--out", "x", "--dry-run")
    assert_clean_error(code, err, 2, "no collection or tensor 'hidden3'", "did you mean",
                       "collection 'hiddens3'")


def test_unknown_tensor_suggests_the_nearest_op(mlp_ckpt):
    code, _, err = run_main("graft", mlp_ckpt, "--at", "dnn/hiden3/Relu:0", "--dense",
                            "logits:10", "--out", "x", "--dry-run")
    assert_clean_error(code, err, 2, "'dnn/hiden3/Relu:0'", "op 'dnn/hidden3/Relu'")


def test_scope_regex_matching_no_variable_is_an_error(mlp_ckpt):
    code, _, err = run_main("graft", mlp_ckpt, *GRAFT, "--train-scope", "hiden4", "--out", "x",
                            "--dry-run")
    assert_clean_error(code, err, 2, "--train-scope 'hiden4' matches no variable",
                       "top-level scopes are", "hidden1")


def test_regex_matching_through_part_of_a_scope_name_warns(mlp_ckpt):
    code, out, err = run_main("graft", mlp_ckpt, "--at", "hiddens3", "--dense", "hidden10:20:relu",
                              "--dense", "logits:10", "--train-scope", "hidden1", "--out", "x",
                              "--dry-run")
    assert code == 0 and "dry run" in out
    warning = [ln for ln in err.splitlines() if ln.startswith("ckptsurgery: warning:")]
    assert any("'hidden10/kernel' only through part of a scope name" in ln
               and "'hidden1/'" in ln for ln in warning), err


def test_shape_and_dtype_mismatch_on_restore_name_both_sides(mlp_ckpt, tmp_path):
    prefix = make_mismatched(mlp_ckpt, str(tmp_path))
    code, _, err = run_main("graft", prefix, *GRAFT, "--out", str(tmp_path / "o" / "x.ckpt"))
    assert_clean_error(code, err, 2, "hidden1/kernel: checkpoint [784, 200] float32, graph "
                       "[784, 300] float32", "hidden1/bias: checkpoint [300] float64, graph [300] "
                       "float32", "--lenient")
    assert not os.path.exists(tmp_path / "o" / "x.ckpt.index")


# --- outputs -----------------------------------------------------------------------------------

def test_output_equal_to_the_input_is_refused(ckpt):
    before = sha256_files(glob.glob(ckpt + "*"))
    code, _, err = run_main("graft", ckpt, *GRAFT, "--out", ckpt, "--force")
    assert_clean_error(code, err, 2, "is the input checkpoint", "choose another output")
    assert sha256_files(glob.glob(ckpt + "*")) == before


def test_output_inside_an_input_is_refused(ckpt):
    code, _, err = run_main("graft", ckpt, *GRAFT, "--out", ckpt + ".meta/x.ckpt")
    assert_clean_error(code, err, 2, "is inside the input", "my_model.ckpt.meta")


def test_existing_output_needs_force(mlp_ckpt, tmp_path):
    out = str(tmp_path / "x.ckpt")
    assert run_main("graft", mlp_ckpt, *GRAFT, "--out", out)[0] == 0
    code, _, err = run_main("graft", mlp_ckpt, *GRAFT, "--out", out)
    assert_clean_error(code, err, 2, "exists", "pass --force")
    assert run_main("graft", mlp_ckpt, *GRAFT, "--out", out, "--force")[0] == 0


def test_unexpected_exception_is_an_internal_error_with_exit_1(mlp_ckpt, monkeypatch):
    import ckptsurgery.safety.verify

    def bug(path, **options):
        raise KeyError("boom")

    monkeypatch.setattr(ckptsurgery.safety.verify, "verify_checkpoint", bug)
    code, _, err = run_main("verify", mlp_ckpt)
    assert_clean_error(code, err, 1, "KeyError", "boom", "--debug")


def test_interrupting_the_command_stops_it_with_one_line(mlp_ckpt, tmp_path):
    """SIGINT sent to the command's process alone (not a terminal's Ctrl-C to its group) still
    reaches the work running in its child: exit 130, one line, no output."""
    import signal
    import time

    out = str(tmp_path / "x.ckpt")
    proc = subprocess.Popen([sys.executable, "-m", "ckptsurgery", "graft", mlp_ckpt, *GRAFT,
                             "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.5)  # inside the TensorFlow import, long before the export
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "ckptsurgery: interrupted\n"
    assert not os.path.exists(out + ".index")
