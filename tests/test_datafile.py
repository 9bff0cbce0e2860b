"""The data shard's file: written around the page cache (O_DIRECT) where the file system takes
it, buffered elsewhere; read back from the disk for the check after writing."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from ckptsurgery.formats import datafile

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT here")


@pytest.fixture
def direct_dir(tmp_path):
    """``tmp_path``, where its file system takes O_DIRECT writes and reads (else skip)."""
    f = datafile.open_data_file(str(tmp_path / "probe"))
    f.close(fsync=False)
    reader = datafile.DiskReader.open(str(tmp_path / "probe"))
    if not f.direct or reader is None:
        pytest.skip("the test folder's file system refuses O_DIRECT")
    reader.close()
    os.remove(tmp_path / "probe")
    return tmp_path


def _pieces(rng) -> list:
    """Bytes and arrays of awkward sizes: under a block, across buffers, exactly a buffer."""
    sizes = [1, 4095, 4096, 5000, 3 * 8192 + 7, 8192, 0, 12345, 3]
    out = []
    for i, n in enumerate(sizes):
        raw = rng.randint(0, 256, n).astype(np.uint8)
        out.append(raw.tobytes() if i % 2 else raw.view(np.uint8))
    out.append(np.arange(1001, dtype=np.float16))  # not bytes: written as its bytes
    return out


def _expected(pieces) -> bytes:
    return b"".join(p if isinstance(p, bytes) else p.tobytes() for p in pieces)


@pytest.mark.parametrize("direct", [True, False])
def test_a_data_file_holds_exactly_the_bytes_written(request, monkeypatch, direct):
    folder = request.getfixturevalue("direct_dir" if direct else "tmp_path")
    monkeypatch.setattr(datafile, "_DIRECT_BUFFER", 8192)  # many hand-overs to the thread
    pieces = _pieces(np.random.RandomState(0))
    path = str(folder / "d")
    f = datafile.open_data_file(path, direct=direct)
    assert f.direct == direct
    for p in pieces:
        f.write(p)
    f.close()
    with open(path, "rb") as got:
        assert got.read() == _expected(pieces)


def test_where_the_file_system_refuses_o_direct_the_file_is_buffered(tmp_path, monkeypatch):
    """EINVAL on opening with O_DIRECT (older tmpfs), or on the first direct write (some FUSE
    and network file systems): the same bytes go through the page cache."""
    real_open, real_pwrite = os.open, os.pwrite

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def refusing_pwrite(fd, data, offset):
        if _is_direct(fd):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    pieces = _pieces(np.random.RandomState(1))
    for name, fake in (("open", refusing_open), ("pwrite", refusing_pwrite)):
        with monkeypatch.context() as m:
            m.setattr(os, name, fake)
            path = str(tmp_path / name)
            f = datafile.open_data_file(path)
            assert not f.direct
            for p in pieces:
                f.write(p)
            f.close()
        with open(path, "rb") as got:
            assert got.read() == _expected(pieces)


def test_a_direct_write_refused_after_the_probe_goes_through_the_page_cache(direct_dir,
                                                                           monkeypatch):
    monkeypatch.setattr(datafile, "_DIRECT_BUFFER", 8192)
    real_pwrite = os.pwrite
    refused = []

    def refusing(fd, data, offset):
        if offset > 0 and _is_direct(fd):
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    pieces = _pieces(np.random.RandomState(7))
    path = str(direct_dir / "d")
    f = datafile.open_data_file(path)
    assert f.direct
    for p in pieces:
        f.write(p)
    f.close()
    assert refused == [8192]  # once; the descriptor is buffered from then on
    with open(path, "rb") as got:
        assert got.read() == _expected(pieces)


def _is_direct(fd: int) -> bool:
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def test_a_failed_direct_write_is_raised_to_the_writer(direct_dir, monkeypatch):
    """The thread's error (a full disk) reaches the caller, at a later write or at close."""
    monkeypatch.setattr(datafile, "_DIRECT_BUFFER", 8192)
    f = datafile.open_data_file(str(direct_dir / "d"))
    assert f.direct
    real_pwrite = os.pwrite

    def full(fd, data, offset):
        if offset >= 8192:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    f.read_back("waits for bytes never written", 8192, 8192, 0)  # must not hang the close
    with pytest.raises(OSError) as raised:
        for _ in range(10):
            f.write(bytes(8192))
        f.close()
    assert raised.value.errno == errno.ENOSPC
    assert f.checked == [] and f.mismatched == []
    f.discard()  # closing twice is harmless


def test_ranges_are_read_back_from_the_disk_as_they_are_written(direct_dir, monkeypatch):
    from ckptsurgery.formats.crc import crc32c

    monkeypatch.setattr(datafile, "_DIRECT_BUFFER", 8192)
    data = np.random.RandomState(4).randint(0, 256, 5 * 8192 + 300).astype(np.uint8)
    f = datafile.open_data_file(str(direct_dir / "d"))
    f.write(data[:9000])
    f.read_back("first", 0, 9000, crc32c(data[:9000]))  # its last bytes still in a buffer
    f.read_back("wrong", 100, 50, crc32c(data[100:150]) ^ 1)
    f.write(data[9000:])
    f.read_back("tail", 9000, len(data) - 9000, crc32c(data[9000:]))  # ends in the last block
    f.close()
    assert sorted(c[0] for c in f.checked) == ["first", "tail"] and f.mismatched == ["wrong"]


def test_the_disk_reader_gives_any_range_of_the_file(direct_dir):
    data = np.random.RandomState(2).randint(0, 256, 3 * 4096 + 100).astype(np.uint8)
    path = direct_dir / "d"
    path.write_bytes(data.tobytes())
    reader = datafile.DiskReader.open(str(path))
    assert reader is not None
    try:
        for offset, size in [(0, 1), (1, 4096), (4095, 2), (4096, 4096), (100, 3 * 4096),
                             (3 * 4096, 100), (3 * 4096 + 50, 500), (0, len(data))]:
            want = data[offset:offset + size]
            assert np.array_equal(reader.read(offset, size), want), (offset, size)
    finally:
        reader.close()


def test_a_cast_reads_its_output_back_from_the_disk(direct_dir, monkeypatch):
    """The check after writing reads the large tensors through the disk reader, and a byte
    the disk got wrong stops the cast with nothing moved into place."""
    from conftest import read_vars

    from ckptsurgery.formats.writer import BundleFileWriter
    from ckptsurgery.migrate.rewrite import cast_checkpoint

    src = str(direct_dir / "src" / "m.ckpt")
    os.makedirs(os.path.dirname(src))
    value = np.random.RandomState(3).randn(2**20).astype(np.float32)  # 2 MB as float16
    with BundleFileWriter(src) as writer:
        writer.add("w", value)
        writer.add("b", np.ones(3, np.float32))
    reads = []
    real_read = datafile.DiskReader.read

    def spy(self, offset, size):
        reads.append(size)
        return real_read(self, offset, size)

    monkeypatch.setattr(datafile.DiskReader, "read", spy)
    out = str(direct_dir / "out" / "m.ckpt")
    cast_checkpoint(src, "float16", out, progress=False)
    assert sum(reads) == value.size * 2  # the float16 tensor, from the disk
    got = read_vars(out)
    assert got["w"].tobytes() == value.astype(np.float16).tobytes()

    def flipped(self, offset, size):  # the disk hands back one byte changed
        piece = np.array(real_read(self, offset, size))
        piece[size // 2] ^= 1
        return piece

    monkeypatch.setattr(datafile.DiskReader, "read", flipped)
    from ckptsurgery.errors import InternalError

    with pytest.raises(InternalError, match="does not verify"):
        cast_checkpoint(src, "float16", str(direct_dir / "bad" / "m.ckpt"), progress=False)
    assert not os.path.exists(direct_dir / "bad" / "m.ckpt.index")


def test_the_check_after_writing_skips_only_what_the_writer_read_back(direct_dir, monkeypatch):
    """verify_checkpoint does not read again a tensor whose index entry is the range and
    checksum the writer checked on the disk; any other entry it reads."""
    from ckptsurgery.formats.writer import BundleFileWriter
    from ckptsurgery.safety.verify import verify_checkpoint

    prefix = str(direct_dir / "m")
    rng = np.random.RandomState(5)
    with BundleFileWriter(prefix, read_back=True) as writer:
        for name in ("a", "b"):
            writer.add(name, rng.randn(2**19).astype(np.float32))  # 2 MB each
        writer.add("small", np.ones(3, np.float32))
    assert sorted(writer.read_back) == ["a", "b"]
    reads = []
    real_read = datafile.DiskReader.read
    monkeypatch.setattr(datafile.DiskReader, "read",
                        lambda self, offset, size: (reads.append(offset),
                                                    real_read(self, offset, size))[1])
    told = dict(writer.read_back)
    offset, size, crc = told["b"]
    told["b"] = (offset, size, crc ^ 1)  # not what the index says: read again
    report = verify_checkpoint(prefix, allow_nonfinite=True, from_disk=True, read_back=told)
    assert report.ok and report.tensors_read == 3 and report.bytes_read == 2 * 2**21 + 12
    assert reads == [offset]
    reads.clear()
    verify_checkpoint(prefix, from_disk=True, read_back=writer.read_back)  # NaN counts: reads
    assert sorted(reads) == sorted(v[0] for v in writer.read_back.values())


def test_a_full_disk_during_a_cast_is_one_clear_error_and_leaves_nothing(tmp_path):
    """On a small tmpfs (which takes O_DIRECT on this kernel, or is written buffered where it
    does not), the thread's ENOSPC becomes the usual one-line error."""
    from conftest import run_cli
    from safety_helpers import assert_clean_error, small_disk

    from ckptsurgery.formats.writer import BundleFileWriter

    src = str(tmp_path / "m.ckpt")
    with BundleFileWriter(src) as writer:
        writer.add("w", np.ones(2**20, np.float32))  # 4 MB; 2 MB as float16
    with small_disk(tmp_path / "small") as small:
        r = run_cli("cast", src, "--dtype", "float16", "--out", str(small / "x.ckpt"))
        assert_clean_error(r.returncode, r.stderr, 2, "x.ckpt", "no space left on the device")
        assert os.listdir(small) == []


def test_where_direct_reads_are_refused_the_check_reads_through_the_page_cache(direct_dir,
                                                                               monkeypatch):
    from safety_helpers import flip_bit

    from ckptsurgery.formats.writer import BundleFileWriter, data_path
    from ckptsurgery.safety.verify import verify_checkpoint

    prefix = str(direct_dir / "m")
    value = np.random.RandomState(6).randn(2**19).astype(np.float32)
    with BundleFileWriter(prefix) as writer:
        writer.add("w", value)
    refused = []

    def refuse(self, offset, size):
        refused.append(offset)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(datafile.DiskReader, "read", refuse)
    report = verify_checkpoint(prefix, from_disk=True)
    assert report.ok and report.tensors_read == 1 and refused == [0]
    flip_bit(data_path(prefix), 1000)  # and damage is still found that way
    report = verify_checkpoint(prefix, from_disk=True)
    assert not report.ok and "'w'" in str(report.problems[0])



def test_a_cast_on_a_file_system_without_o_direct_writes_and_checks_through_the_page_cache(
        tmp_path, monkeypatch):
    from conftest import read_vars

    from ckptsurgery.formats.writer import BundleFileWriter
    from ckptsurgery.migrate.rewrite import cast_checkpoint

    src = str(tmp_path / "src" / "m.ckpt")
    os.makedirs(os.path.dirname(src))
    value = np.random.RandomState(8).randn(2**20).astype(np.float32)
    with BundleFileWriter(src) as writer:
        writer.add("w", value)
    real_open = os.open
    refused = []

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            refused.append(os.path.basename(path))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    out = str(tmp_path / "out" / "m.ckpt")
    result = cast_checkpoint(src, "float16", out, progress=False)
    assert result.bytes_written == value.size * 2
    assert refused == ["m.ckpt.data-00000-of-00001"] * 2  # the writer, then the check's reader
    assert read_vars(out)["w"].tobytes() == value.astype(np.float16).tobytes()
