"""Helpers for the safety tests: the CLI in this process, damaged and crafted checkpoints.

Running ``python -m ckptsurgery`` costs a TensorFlow import (about 4 s) per run; the tests that
check dozens of error messages call :func:`run_main` instead, which runs the same ``main(argv)``
in this process and captures what it prints. A few tests still use ``run_cli`` (conftest) to
cover the real entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import struct
import warnings

from ckptsurgery.formats.bundle import read_table
from ckptsurgery.formats.crc import crc32c

FILES = (".index", ".data-00000-of-00001", ".meta")


def run_main(*argv: str) -> tuple[int, str, str]:
    """``ckptsurgery ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    from ckptsurgery.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("always")
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def run_main_on_local_cluster(*argv: str) -> tuple[int, str, str]:
    """``ckptsurgery ARGV --dask ADDRESS`` (as :func:`run_main`), ADDRESS a Dask
    ``LocalCluster`` of two worker processes of one thread each, made for it."""
    import pytest

    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        return run_main(*argv, "--dask", cluster.scheduler_address)


def assert_clean_error(code: int, err: str, expected: int, *words: str) -> str:
    """Exit ``expected``, one ``ckptsurgery: [internal ]error:`` line on stderr (warnings aside),
    no traceback, and every one of ``words`` in it. Returns the line."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ckptsurgery: warning:")]
    assert code == expected, f"exit {code}, expected {expected}; stderr: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    kind = "ckptsurgery: error: " if expected == 2 else "ckptsurgery: internal error: "
    assert lines[0].startswith(kind), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def copy_checkpoint(prefix: str, folder: str, *, state: bool = True) -> str:
    """Copy a checkpoint's files (and its folder's ``checkpoint`` state file) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    src = os.path.dirname(prefix)
    base = os.path.basename(prefix)
    for name in os.listdir(src):
        if name == base or name.startswith(base + ".") or (state and name == "checkpoint"):
            shutil.copy(os.path.join(src, name), os.path.join(folder, name))
    return os.path.join(folder, base)


def sha256_files(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


def flip_bit(path: str, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


@contextlib.contextmanager
def small_disk(folder):
    """A 256 KB tmpfs mounted at ``folder`` (made here), unmounted after; skips the test where
    mounting is not allowed."""
    import subprocess

    import pytest

    os.makedirs(folder)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def truncate(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


# --- writing LevelDB tables, to craft indexes with valid checksums but bad contents ----------

def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _block(entries) -> bytes:
    out, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(out))
        out += varint(0) + varint(len(key)) + varint(len(value)) + key + value
    for r in restarts:
        out += struct.pack("<I", r)
    return bytes(out + struct.pack("<I", len(restarts)))


def write_table(path: str, entries) -> None:
    """A one-data-block LevelDB table with correct checksums (what TensorFlow writes)."""
    buf = bytearray()

    def add(block: bytes) -> tuple[int, int]:
        offset = len(buf)
        buf.extend(block + b"\x00" + struct.pack("<I", _mask(crc32c(block + b"\x00"))))
        return offset, len(block)

    data = add(_block(entries))
    meta = add(_block([]))
    index = add(_block([(entries[-1][0] + b"\xff", varint(data[0]) + varint(data[1]))]))
    footer = b"".join(varint(v) for v in (*meta, *index))
    buf += footer + b"\x00" * (40 - len(footer)) + bytes.fromhex("57fb808b247547db")
    with open(path, "wb") as f:
        f.write(bytes(buf))


def entry_bytes(dtype: int, dims, *, shard: int = 0, offset: int = 0, size: int = 0) -> bytes:
    """A serialised ``BundleEntryProto`` (crc32c left 0)."""
    def field(number: int, wire: int, payload: bytes) -> bytes:
        return varint(number << 3 | wire) + payload

    def length_delimited(number: int, payload: bytes) -> bytes:
        return field(number, 2, varint(len(payload)) + payload)

    shape = b"".join(length_delimited(2, field(1, 0, varint(d & (2**64 - 1)))) for d in dims)
    return (field(1, 0, varint(dtype)) + length_delimited(2, shape) + field(3, 0, varint(shard))
            + field(4, 0, varint(offset)) + field(5, 0, varint(size)))


def craft_index(prefix: str, key: str, entry: bytes) -> None:
    """Replace the entry of ``key`` in ``prefix``'s index by ``entry``, checksums kept valid."""
    table = read_table(prefix + ".index")
    write_table(prefix + ".index",
                [(k, entry if k == key.encode() else v) for k, v in table])


def make_mismatched(fixture: str, folder: str) -> str:
    """The fixture's ``.meta`` over data whose ``hidden1/kernel`` is [784, 200], whose
    ``hidden1/bias`` is float64, and which lacks ``logits/bias``."""
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(fixture)
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    values["hidden1/kernel"] = values["hidden1/kernel"][:, :200]
    values["hidden1/bias"] = values["hidden1/bias"].astype(np.float64)
    del values["logits/bias"]
    prefix = os.path.join(folder, "mismatched.ckpt")
    graph = tf.Graph()
    with graph.as_default():
        variables = {k: tf.compat.v1.Variable(v, name=f"v{i}")
                     for i, (k, v) in enumerate(sorted(values.items()))}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)
    shutil.copy(fixture + ".meta", prefix + ".meta")
    return prefix
