"""The TensorFlow-free bundle reader and writer against TensorFlow's own.

The reader must return exactly what ``tf.train.load_checkpoint`` returns (names, shapes, dtypes,
bytes) for every corpus checkpoint and fixture; the writer's output must read back in
TensorFlow with equal tensors, and its ``.index`` must be byte for byte what ``SaveV2`` writes
for the same tensors.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from conftest import FIXTURE_CNN, FIXTURE_MIXED, FIXTURE_MLP, FIXTURE_RNN, ROOT
from migrate_helpers import corpus_prefix, readable_entries, write_checkpoint

from ckptsurgery.errors import CheckpointCorruptError, InternalError
from ckptsurgery.formats.checkpoint import locate, open_checkpoint
from ckptsurgery.formats.crc import _python_crc32c, crc32c
from ckptsurgery.formats.reader import BundleReader
from ckptsurgery.formats.writer import BundleFileWriter, data_path

FIXTURES = [FIXTURE_MLP, FIXTURE_MIXED, FIXTURE_CNN, FIXTURE_RNN]


def _v2_corpus() -> list[str]:
    return [e for e in readable_entries() if locate(corpus_prefix(e)).format == "V2"]


def assert_reads_like_tensorflow(prefix: str) -> int:
    import tensorflow as tf

    ours = BundleReader(locate(prefix))
    theirs = tf.train.load_checkpoint(prefix)
    shapes, dtypes = theirs.get_variable_to_shape_map(), theirs.get_variable_to_dtype_map()
    assert sorted(ours.entries) == sorted(shapes)
    for key in shapes:
        mine, want = ours.read(key), np.asarray(theirs.get_tensor(key))
        assert ours.entries[key].dtype_name == dtypes[key].name, key
        assert list(mine.shape) == list(shapes[key]) == list(want.shape), key
        if mine.dtype == object:
            assert [bytes(v) for v in want.reshape(-1)] == list(mine.reshape(-1)), key
        else:
            assert mine.tobytes() == want.tobytes(), key
    return len(shapes)


@pytest.mark.parametrize("prefix", FIXTURES, ids=os.path.basename)
def test_reader_equals_tensorflow_on_fixtures(prefix):
    assert assert_reads_like_tensorflow(prefix) > 10


@pytest.mark.parametrize("entry", _v2_corpus())
def test_reader_equals_tensorflow_on_the_corpus(shared, entry):
    assert assert_reads_like_tensorflow(corpus_prefix(entry)) > 0


def test_the_corpus_has_v2_checkpoints_to_compare(shared):
    assert len(_v2_corpus()) >= 8


def _every_dtype() -> dict:
    rng = np.random.RandomState(0)
    return {
        "f32/kernel": rng.randn(30, 7).astype(np.float32), "f64": np.float64(3.5),
        "f16": rng.randn(4, 2).astype(np.float16), "bf16": rng.randn(6).astype(ml_dtypes.bfloat16),
        "i8": np.arange(-3, 3, dtype=np.int8), "i16": np.arange(3, dtype=np.int16),
        "i32": np.arange(5, dtype=np.int32), "i64": np.arange(5, dtype=np.int64),
        "u8": np.arange(7, dtype=np.uint8), "u16": np.arange(3, dtype=np.uint16),
        "u32": np.arange(3, dtype=np.uint32), "u64": np.arange(3, dtype=np.uint64),
        "bool": np.array([True, False]), "c64": (rng.randn(3) + 1j).astype(np.complex64),
        "c128": (rng.randn(2) - 2j).astype(np.complex128), "empty": np.zeros((0, 3), np.float32),
        "strings": np.array([b"abc", b"", b"x" * 300], dtype=object),
        "scalar_string": np.array(b"hello", dtype=object),
    }


def _save_v2(prefix: str, tensors: dict) -> None:
    import tensorflow as tf

    values = [tf.constant(list(v.reshape(-1)) if v.ndim else v.item(), shape=v.shape)
              if isinstance(v, np.ndarray) and v.dtype == object else tf.constant(v)
              for v in tensors.values()]
    write_checkpoint(prefix, dict(zip(tensors, values, strict=True)))


def test_writer_output_reads_back_in_tensorflow_and_its_index_equals_savev2(tmp_path):
    import tensorflow as tf

    tensors = _every_dtype()
    ours, theirs = str(tmp_path / "ours" / "m"), str(tmp_path / "tf" / "m")
    os.makedirs(os.path.dirname(ours))
    with BundleFileWriter(ours) as writer:
        for key, value in tensors.items():
            writer.add(key, value)
    reader = tf.train.load_checkpoint(ours)
    for key, value in tensors.items():
        got = np.asarray(reader.get_tensor(key))
        assert got.shape == np.shape(value), key
        if np.asarray(value).dtype == object:
            assert list(got.reshape(-1)) == list(np.asarray(value).reshape(-1)), key
        else:
            assert got.tobytes() == np.asarray(value).tobytes(), key
    _save_v2(theirs, tensors)
    with open(ours + ".index", "rb") as a, open(theirs + ".index", "rb") as b:
        mine, want = a.read(), b.read()
    assert mine == want, _first_difference(mine, want)
    with open(data_path(ours), "rb") as a, open(data_path(theirs), "rb") as b:
        assert a.read() == b.read()


def _first_difference(a: bytes, b: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
              min(len(a), len(b)))
    return f"the .index differs from SaveV2's at byte {at} of {len(a)} (SaveV2: {len(b)})"


def test_a_many_block_index_equals_savev2(tmp_path):
    """12,002 entries: the index spans several table blocks, keyed by shortest separators."""
    tensors = {f"layer{i:05d}/kernel": np.full(2, i, np.float32) for i in range(12002)}
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    with BundleFileWriter(ours) as writer:
        for key, value in tensors.items():
            writer.add(key, value)
    _save_v2(theirs, tensors)
    with open(ours + ".index", "rb") as a, open(theirs + ".index", "rb") as b:
        mine, want = a.read(), b.read()
    assert len(want) > 262144, "the case must span more than one block"
    assert mine == want, _first_difference(mine, want)


def test_partitioned_variable_with_large_offsets_is_put_together(tmp_path):
    """Parts starting at row 100 and 200 have multi-byte keys (OrderedCode signed numbers)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    prefix = str(tmp_path / "p" / "model.ckpt")
    value = np.arange(300 * 70, dtype=np.float32).reshape(300, 70)
    graph = tf.Graph()
    with graph.as_default():
        v = tf1.get_variable("big", initializer=tf1.constant(value),
                             partitioner=tf1.fixed_size_partitioner(3))
        big_neg = tf1.get_variable("offset", initializer=tf1.constant(value[:, :2] - 1e4),
                                   partitioner=tf1.fixed_size_partitioner(3))
        saver = tf1.train.Saver([v, big_neg])
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False)
    reader = BundleReader(locate(prefix))
    assert len(reader.index.parts) == 6
    assert reader.read("big").tobytes() == value.tobytes()
    assert_reads_like_tensorflow(prefix)


def test_a_flipped_byte_is_a_checksum_error_naming_the_variable(tmp_path):
    prefix = str(tmp_path / "m")
    with BundleFileWriter(prefix) as writer:
        writer.add("w", np.arange(1000, dtype=np.float32))
        writer.add("s", np.array([b"abc", b"de"], dtype=object))
    with open(data_path(prefix), "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 1]))
    reader = BundleReader(locate(prefix))
    with pytest.raises(CheckpointCorruptError, match=r"variable 'w' do not match their checksum"):
        reader.read("w")
    with pytest.raises(CheckpointCorruptError, match="'w'"):
        list(reader.chunks("w", 400))
    assert list(reader.read("s")) == [b"abc", b"de"]


def test_an_entry_pointing_past_its_shard_is_refused_before_reading(tmp_path):
    prefix = str(tmp_path / "m")
    with BundleFileWriter(prefix) as writer:
        writer.add("w", np.arange(100, dtype=np.float32))
    BundleReader(locate(prefix))  # fits: the index (kept for its file) remembers that
    with open(data_path(prefix), "r+b") as f:
        f.truncate(200)
    with pytest.raises(CheckpointCorruptError, match="needs bytes 0..400 of its data shard"):
        BundleReader(locate(prefix))  # the same index, other shard sizes: checked again


def test_read_many_reads_neighbours_together_and_checks_each(tmp_path, monkeypatch):
    """read_many gives what read gives, key by key, in the order asked (gaps, a key asked out
    of the shard's order, a string, an empty and a big tensor between), with one read for
    neighbours; a flipped byte in a run names its own tensor."""
    import ckptsurgery.formats.reader as reader_module

    prefix = str(tmp_path / "m")
    rng = np.random.RandomState(3)
    values = {f"t{i:02d}": rng.randn(rng.randint(1, 50)).astype((np.float32, np.int64)[i % 2])
              for i in range(30)}
    values["t05"] = np.array([b"ab", b"c"], dtype=object)
    values["t06"] = np.zeros(0, np.float32)
    values["t07"] = rng.randn(300_000).astype(np.float32)  # past the read limit: alone
    with BundleFileWriter(prefix) as writer:
        for key, value in values.items():
            writer.add(key, value)
    reader = BundleReader(locate(prefix))
    reads = []
    monkeypatch.setattr(reader, "_map", lambda e, start, size, m=reader._map: (
        reads.append(size), m(e, start, size))[1])
    keys = [k for k in values if k not in ("t03", "t11")] + ["t01"]  # gaps, and back
    got = reader.read_many(keys)
    calls = len(reads)
    for key, value in zip(keys, got, strict=True):
        want = reader.read(key)
        assert value.dtype == want.dtype and value.shape == want.shape
        assert value.tolist() == want.tolist() == values[key].tolist()
    assert calls == 5, reads[:calls]  # t00-t04, t05 (strings), t07 (big), t08-t29, t01
    monkeypatch.undo()
    entry = reader.entries["t09"]
    with open(data_path(prefix), "r+b") as f:
        f.seek(entry.offset + 3)
        byte = f.read(1)
        f.seek(entry.offset + 3)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CheckpointCorruptError, match="variable 't09' do not match"):
        reader.read_many(["t08", "t09", "t10"])
    assert reader_module._READ_LIMIT == 2**20


def test_tensors_added_joined_are_written_as_one_by_one(tmp_path):
    """add_joined (one write for a run of small tensors) gives the bytes, .index included,
    that adding each tensor gives."""
    values = [("a", np.arange(6, dtype=np.float16).reshape(2, 3)), ("b", np.ones(0, np.float16)),
              ("c", np.full(5, 7, np.float16))]
    one, joined = str(tmp_path / "one"), str(tmp_path / "joined")
    with BundleFileWriter(one) as writer:
        for key, value in values:
            writer.add(key, value)
    with BundleFileWriter(joined) as writer:
        writer.add_joined(np.float16, [(k, v.shape) for k, v in values],
                          np.concatenate([v.reshape(-1) for _, v in values]))
    for suffix in (".index", ".data-00000-of-00001"):
        assert open(one + suffix, "rb").read() == open(joined + suffix, "rb").read()
    with BundleFileWriter(str(tmp_path / "bad")) as writer, pytest.raises(
            InternalError, match="2 tensors take 11 values, 10 were given"):
        writer.add_joined(np.float16, [("a", (2, 3)), ("c", (5,))], np.ones(10, np.float16))


@pytest.mark.parametrize("size", [7, 300_000], ids=["small", "big"])
def test_a_quantized_tensor_is_copied_as_itself(tmp_path, size):
    """qint8 shares numpy's int8: a copy (small ones in runs, big ones alone) records qint8
    again, as TensorFlow reads it, not int8."""
    import tensorflow as tf

    from ckptsurgery.formats.dtypes import enum_of
    from ckptsurgery.formats.stream import CopySpec, copy_tensors

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    value = (np.arange(size) % 200 - 100).astype(np.int8)
    with BundleFileWriter(src) as writer:
        writer.add_pieces("q", np.int8, value.shape, [value], enum=enum_of("qint8"))
        writer.add("w", np.ones(3, np.float32))
    copy_tensors(open_checkpoint(src), out, [CopySpec("q", "r/q"), CopySpec("w", "r/w")],
                 progress=False)
    assert open_checkpoint(out).variables["r/q"].dtype == "qint8"
    reader = tf.train.load_checkpoint(out)
    assert reader.get_variable_to_dtype_map()["r/q"] == tf.qint8
    assert open_checkpoint(out).read("r/q").tobytes() == value.tobytes()


def test_chunks_are_bounded_and_add_up_to_the_tensor(tmp_path):
    prefix = str(tmp_path / "m")
    value = np.random.RandomState(1).randn(1000, 33).astype(np.float32)
    with BundleFileWriter(prefix) as writer:
        writer.add_pieces("w", np.float32, value.shape,
                          (value.reshape(-1)[i:i + 5000] for i in range(0, value.size, 5000)))
    pieces = [p.copy() for p in BundleReader(locate(prefix)).chunks("w", 4096)]
    assert max(p.nbytes for p in pieces) <= 4096 and len(pieces) == -(-value.nbytes // 4096)
    assert np.concatenate(pieces).tobytes() == value.tobytes()


def test_crc32c_fallback_gives_the_same_values():
    data = np.random.RandomState(2).bytes(3000)
    assert crc32c(data) == _python_crc32c(data) == crc32c(data[1000:], crc32c(data[:1000]))
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_migration_verbs_do_not_import_tensorflow(tmp_path):
    """inspect, verify, diff, strip, cast, rename and convert on a V2 checkpoint, in a fresh
    process that fails if anything imports TensorFlow."""
    out = str(tmp_path)
    script = f"""
import sys, io, contextlib
from ckptsurgery.cli import main
ckpt = {FIXTURE_MIXED!r}
runs = [["inspect", ckpt, "--json"], ["verify", ckpt], ["diff", ckpt, {FIXTURE_MLP!r}],
        ["strip", ckpt, "--optimizer-slots", "--out", {out!r} + "/s/m.ckpt"],
        ["cast", ckpt, "--dtype", "bfloat16", "--out", {out!r} + "/c/m.ckpt"],
        ["rename", ckpt, "--map", "dense=fc", "--out", {out!r} + "/r/m.ckpt"],
        ["convert", ckpt, "--to", "safetensors", "--out", {out!r} + "/x.safetensors"]]
for args in runs:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    assert code in (0, 1), (args, code)
    assert "tensorflow" not in sys.modules, args[0] + " imported TensorFlow"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_streamed_cast_of_a_tensor_larger_than_the_budget(tmp_path):
    """A tensor four times the read budget is cast piece by piece; TensorFlow reads the result
    and it equals numpy's cast of the whole."""
    import tensorflow as tf

    from ckptsurgery.migrate.rewrite import cast_checkpoint

    src = str(tmp_path / "in" / "m.ckpt")
    os.makedirs(os.path.dirname(src))
    value = np.random.RandomState(3).randn(256, 256).astype(np.float32) * 1e5
    with BundleFileWriter(src) as writer:
        writer.add("w", value)
    out = str(tmp_path / "out" / "m.ckpt")
    result = cast_checkpoint(src, "float16", out, progress=False,
                             max_batch_bytes=value.nbytes // 4)
    assert (result.bytes_read, result.bytes_written) == (value.nbytes, value.nbytes // 2)
    assert result.lines()[-1].endswith(f"{value.nbytes // 2:,} bytes of tensors from "
                                       f"{value.nbytes:,} read)")
    got = tf.train.load_checkpoint(out).get_tensor("w")
    assert got.dtype == np.float16 and got.tobytes() == value.astype(np.float16).tobytes()
    assert open_checkpoint(out).variables["w"].dtype == "float16"


def test_float16_cast_gives_numpys_bits_on_every_kind_of_value():
    """The fast float32 -> float16 conversion against numpy's: every float16 value and the
    float32 values around each (ties, just above and below), a million random bit patterns
    (NaNs, infinities, subnormals, overflow included), and Adam-like tiny values. (All 2**32
    float32 values were checked once by hand: 0 differences.)"""
    from ckptsurgery.formats.cast import cast

    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    centre = halves[np.isfinite(halves)].astype(np.float32).view(np.uint32).astype(np.int64)
    near = np.concatenate([centre + d for d in (-4097, -4096, -4095, -1, 0, 1, 4095, 4096, 4097)])
    near = (near % 2**32).astype(np.uint32)
    rng = np.random.RandomState(4)
    patterns = np.concatenate([
        near, rng.randint(0, 2**32, size=2**20, dtype=np.uint64).astype(np.uint32),
        (rng.randn(2**18) * 1e-7).astype(np.float32).view(np.uint32)]).astype(np.uint32)
    x = patterns.view(np.float32).reshape(-1, 8)
    with np.errstate(all="ignore"):
        want = x.astype(np.float16)
    got = cast(x, np.float16)
    assert got.shape == x.shape and got.dtype == np.float16
    differ = want.view(np.uint16) != got.view(np.uint16)
    assert not differ.any(), f"{int(differ.sum())} values differ, first {x[differ][:3]}"


@pytest.mark.parametrize("kind", ["adam_second_moments", "weights", "weights_near_zero", "mixed",
                                  "with_nan_and_inf"])
def test_float16_cast_of_blocks_of_one_kind_gives_numpys_bits(kind):
    """Each 2**17-value block takes the rounding its range needs (only subnormal results, only
    normal ones, normal ones with a few subnormal ones gathered, many of both); several
    blocks, so the threads run too."""
    from ckptsurgery.formats.cast import _BLOCK, cast_counted

    rng = np.random.RandomState(5)
    n = 3 * _BLOCK + 17
    x = {"adam_second_moments": rng.rand(n) * 6e-5, "weights": rng.randn(n) * 0.05 + 0.5,
         "weights_near_zero": rng.randn(n) * 0.02, "mixed": rng.randn(n) * 1e-4,
         "with_nan_and_inf": rng.randn(n) * 3e4}[kind]
    x = x.astype(np.float32)
    small = np.abs(x) < 2.0**-14
    assert (0 < small.mean() < 1 / 8) == (kind == "weights_near_zero")  # what the kind is for
    if kind == "with_nan_and_inf":
        x[::1001] = np.inf
        x[5::997] = np.array([0x7FC01234, 0xFF800001], np.uint32).view(np.float32)[
            np.arange(len(x[5::997])) % 2]  # NaNs with payloads, both signs
    if kind == "with_nan_and_inf":  # the edges of float16's range, both signs
        edges = np.array([65504, 65519.996, 65520, 65536, 1e38], np.float32)
        x[7:17] = np.concatenate([edges, -edges])
    with np.errstate(all="ignore"):
        want = x.astype(np.float16)
    got, lost = cast_counted(x, np.float16)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    assert lost == np.count_nonzero(np.isfinite(x) & np.isinf(want))
    assert (lost > 1000) == (kind == "with_nan_and_inf")
    into = np.full(n, 7, np.float16)  # a streaming cast's reused buffer
    again, lost_again = cast_counted(x, np.float16, into)
    assert again.base is into or again is into
    assert np.array_equal(into.view(np.uint16), want.view(np.uint16)) and lost_again == lost


def test_a_cast_into_a_given_buffer_of_another_dtype():
    """Casts other than float32 -> float16 write into the given buffer too (``astype``'s
    values, bfloat16 included)."""
    from ckptsurgery.formats.cast import cast_counted

    x = np.array([[1.5, -2.25], [1e40, 3.0]])
    into = np.zeros(4, np.float32)
    with np.errstate(over="ignore"):
        got, lost = cast_counted(x, np.float32, into)
    assert got.shape == (2, 2) and np.shares_memory(got, into)
    assert into.tolist() == [1.5, -2.25, np.inf, 3.0] and lost == 1
    weights = np.random.RandomState(6).randn(1000).astype(np.float32)  # to bfloat16 too
    into = np.zeros(1000, ml_dtypes.bfloat16)
    got, lost = cast_counted(weights, ml_dtypes.bfloat16, into)
    assert got.tobytes() == weights.astype(ml_dtypes.bfloat16).tobytes() and lost == 0


def test_small_casts_run_together_and_keep_each_tensors_values(tmp_path, monkeypatch):
    """Small tensors cast in runs (several runs here, of mixed dtypes and with uncast ones
    between): TensorFlow reads each back as numpy's cast of it, under its own name."""
    import tensorflow as tf

    import ckptsurgery.formats.stream as stream
    from ckptsurgery.formats.stream import CopySpec, copy_tensors

    monkeypatch.setattr(stream, "_SMALL_RUN", 4096)
    rng = np.random.RandomState(6)
    values = {}
    for i in range(40):
        dtype = (np.float32, np.float64, np.int32)[i % 3]
        values[f"t{i:02d}"] = (rng.randn(rng.randint(1, 300)) * 1e3).astype(dtype)
    values["t07"] = np.full(5, 1e6, np.float32)  # overflows float16
    src = str(tmp_path / "in" / "m")
    os.makedirs(os.path.dirname(src))
    with BundleFileWriter(src) as writer:
        for key, value in values.items():
            writer.add(key, value)
    specs = [CopySpec(k, "out/" + k, {"float32": "float16", "float64": "float32"}.get(v.dtype.name))
             for k, v in values.items()]
    out = str(tmp_path / "out" / "m")
    os.makedirs(os.path.dirname(out))
    stats = copy_tensors(open_checkpoint(src), out, specs, progress=False)
    assert stats.overflowed == {"out/t07": 5}
    assert stats.bytes_read == sum(v.nbytes for v in values.values())
    reader = tf.train.load_checkpoint(out)
    for spec in specs:
        want = values[spec.source].astype(spec.dtype or values[spec.source].dtype)
        got = reader.get_tensor(spec.target)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), spec
    assert stats.bytes_written == sum(
        values[s.source].astype(s.dtype or values[s.source].dtype).nbytes for s in specs)


def test_a_damaged_piece_of_a_big_cast_stops_it_and_writes_nothing(tmp_path):
    """The pieces of a big cast are read and cast ahead, in a thread; a checksum error there
    still reaches the caller, and no output is left."""
    from ckptsurgery.migrate.rewrite import cast_checkpoint

    src = str(tmp_path / "in" / "m.ckpt")
    os.makedirs(os.path.dirname(src))
    value = np.random.RandomState(7).randn(256, 256).astype(np.float32)
    with BundleFileWriter(src) as writer:
        writer.add("w", value)
    data = src + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.seek(value.nbytes - 5)
        f.write(b"\xff")
    out = str(tmp_path / "out" / "m.ckpt")
    with pytest.raises(CheckpointCorruptError, match="'w' do not match their checksum"):
        cast_checkpoint(src, "float16", out, progress=False, max_batch_bytes=value.nbytes // 4)
    assert not os.path.exists(os.path.dirname(out)) or not os.listdir(os.path.dirname(out))


def test_a_strip_keeps_the_checksum_of_a_tensor_copied_unchanged_and_a_cast_makes_a_new_one(
        tmp_path):
    """The copy takes the input's stored checksum (not computed again); a cast computes one."""
    from safety_helpers import run_main

    source = BundleReader(locate(FIXTURE_MLP))
    key = "hidden1/kernel"
    assert source.stored_crc(key) == crc32c(np.ascontiguousarray(source.read(key)))
    for verb, extra in (("strip", ("--keep", ".")), ("cast", ("--dtype", "float16"))):
        out = str(tmp_path / verb / "m.ckpt")
        code, _, err = run_main(verb, FIXTURE_MLP, *extra, "--out", out, "--quiet")
        assert code == 0, err
        written = BundleReader(locate(out))
        assert written.stored_crc(key) == crc32c(np.ascontiguousarray(written.read(key)))
        same = written.stored_crc(key) == source.stored_crc(key)
        assert same is (verb == "strip")
