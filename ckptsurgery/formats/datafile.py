"""How a data shard's bytes reach the disk and come back: around the page cache where it can.

A rewrite writes GBs that nothing reads soon after except its own check. Through the page cache,
every new page is memory the kernel must find and clear (in a VM, memory the host must back
again): on the project's machine, writing 1.5 GB and fsyncing it took 2-4.4 s, almost all of it
processor time in the kernel, against 0.55 s for the same bytes written with ``O_DIRECT``
(bench/README.md). :func:`open_data_file` gives a :class:`DirectFile` (aligned buffers,
written by a thread while the caller makes the next bytes) where the file system takes
``O_DIRECT``, else a :class:`BufferedFile` (the page cache, asked to write back early).
:class:`DiskReader` reads such a file back from the disk itself, for the check after writing.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

from .crc import crc32c
from .storage import Upload, is_url

__all__ = ["open_data_file", "DirectFile", "BufferedFile", "DiskReader", "ALIGN"]

#: Alignment of ``O_DIRECT`` transfers: offsets, sizes and memory (a multiple of every
#: common logical block size, 512 and 4096).
ALIGN = 4096
_DIRECT_BUFFER = 16 * 2**20  # bytes per direct write; two such buffers per file
_WRITEBACK_BYTES = 64 * 2**20  # a buffered file asks the kernel to write back this often
_READ_BACK_PIECE = 16 * 2**20  # bytes per read of the read-back


def _aligned_empty(nbytes: int):
    """An uninitialised uint8 array of ``nbytes`` whose address is a multiple of ``ALIGN``."""
    import numpy as np

    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


def _as_bytes(data):
    """``data`` (bytes, or a contiguous numpy array) as a flat uint8 array, not copied."""
    import numpy as np

    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data).reshape(-1).view(np.uint8)


def open_data_file(path: str, *, direct: bool = True) -> DirectFile | BufferedFile | Upload:
    """A new file at ``path`` (replacing one there) to append a data shard's bytes to: a
    :class:`DirectFile` when ``direct`` and the file system takes ``O_DIRECT`` writes (a
    4 KiB probe write says; tmpfs and some network and FUSE file systems refuse them), else a
    :class:`BufferedFile`; a streamed :class:`~ckptsurgery.formats.storage.Upload` for a URL."""
    if is_url(path):
        return Upload(path)
    if direct and hasattr(os, "O_DIRECT"):
        fd = -1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
            os.pwrite(fd, _aligned_empty(ALIGN), 0)
            os.ftruncate(fd, 0)
        except OSError as e:
            if fd >= 0:
                os.close(fd)
            if e.errno != errno.EINVAL:
                raise
        else:
            return DirectFile(fd, path)
    return BufferedFile(path)


class DirectFile:
    """A file appended to with ``O_DIRECT``: what :meth:`write` is given is copied into one of
    two aligned buffers; a full buffer is written by a thread while the other fills, so the
    disk works while the caller makes the next bytes. The last partial block is written
    without ``O_DIRECT`` by :meth:`close`.

    :meth:`read_back` has ranges read back from the disk by another thread as soon as they are
    written, and their CRC-32C checked, while the next bytes are made and written."""

    direct = True

    def __init__(self, fd: int, path: str):
        self._fd = fd
        self._path = path
        self._buffers = [_aligned_empty(_DIRECT_BUFFER) for _ in range(2)]
        self._turn = 0  # the buffer being filled
        self._filled = 0  # bytes in it
        self._written = 0  # bytes handed to the thread: where the buffer being filled starts
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ckptsurgery-write")
        self._pending = None  # the write in flight
        self._on_disk = 0  # bytes written so far; -1 once writing stopped
        self._progress = threading.Condition()
        self._checks: queue.SimpleQueue | None = None
        self._checker: threading.Thread | None = None
        self.checked: list[tuple] = []  # (name, offset, size, crc) read back and matching
        self.mismatched: list[str] = []  # names whose bytes read back wrong

    def write(self, data) -> None:
        """Append ``data`` (bytes, or a contiguous numpy array)."""
        src = _as_bytes(data)
        done = 0
        while done < len(src):
            buffer = self._buffers[self._turn]
            n = min(len(src) - done, len(buffer) - self._filled)
            buffer[self._filled:self._filled + n] = src[done:done + n]
            self._filled += n
            done += n
            if self._filled == len(buffer):
                self._hand_over(self._filled)

    def read_back(self, name: str, offset: int, size: int, crc: int) -> None:
        """Once bytes ``offset:offset+size`` are on the disk, read them back (in a thread, by
        :class:`DiskReader`) and check that their CRC-32C is ``crc``: the range goes into
        :attr:`checked` or its ``name`` into :attr:`mismatched` by the time :meth:`close`
        returns."""
        if self._checks is None:
            self._checks = queue.SimpleQueue()
            self._checker = threading.Thread(target=self._check_loop, daemon=True,
                                             name="ckptsurgery-read-back")
            self._checker.start()
        self._checks.put((name, offset, size, crc))

    def _check_loop(self) -> None:
        """The checker thread. A range it cannot read (no ``O_DIRECT`` reads, a read error)
        stays out of :attr:`checked`, for the caller's own read-back to find."""
        reader = DiskReader.open(self._path)
        if reader is None:
            return
        try:
            while (job := self._checks.get()) is not None:
                name, offset, size, crc = job
                with self._progress:
                    self._progress.wait_for(lambda end=offset + size: not 0 <= self._on_disk < end)
                if self._on_disk < 0:
                    return
                got = 0
                for start in range(0, size, _READ_BACK_PIECE):
                    piece = reader.read(offset + start, min(_READ_BACK_PIECE, size - start))
                    got = crc32c(piece, got)
                if got == crc:
                    self.checked.append(job)
                else:
                    self.mismatched.append(name)
        except OSError:
            return
        finally:
            reader.close()

    def _written_to(self, end: int) -> None:
        with self._progress:
            if self._on_disk >= 0:
                self._on_disk = end
            self._progress.notify_all()

    def _stop_checks(self, *, finish: bool) -> None:
        """Let the checker finish the ranges queued (``finish``) or give up, and wait for it."""
        if self._checker is None:
            return
        if not finish:
            self._written_to(-1)
        self._checks.put(None)
        self._checker.join()
        self._checker = None

    def _hand_over(self, nbytes: int) -> None:
        """Have the thread write the first ``nbytes`` (a multiple of ``ALIGN``) of the buffer
        being filled; go on filling the other."""
        self._wait()
        buffer = self._buffers[self._turn]
        self._pending = self._pool.submit(self._write_at, buffer[:nbytes], self._written)
        self._written += nbytes
        self._turn ^= 1
        rest = self._filled - nbytes  # under ALIGN bytes, only when closing
        self._buffers[self._turn][:rest] = buffer[nbytes:self._filled]
        self._filled = rest

    def _write_at(self, data, offset: int) -> None:
        try:
            _pwrite_all(self._fd, data, offset)
        except OSError as e:  # refused after the probe (another alignment): the page cache
            if e.errno != errno.EINVAL or not self._buffered():
                raise
            _pwrite_all(self._fd, data, offset)
        self._written_to(offset + len(data))

    def _buffered(self) -> bool:
        """Clear ``O_DIRECT`` on the descriptor: later writes go through the page cache.
        False when it was clear already."""
        import fcntl

        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        return bool(flags & os.O_DIRECT)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # raises the thread's OSError here

    def close(self, fsync: bool = True) -> None:
        """Write what is left (its last partial block through the page cache), fsync when
        asked, close."""
        try:
            aligned = self._filled - self._filled % ALIGN
            if aligned:
                self._hand_over(aligned)
            self._wait()
            if self._filled:  # under a block: through the page cache
                self._buffered()
                self._write_at(self._buffers[self._turn][:self._filled], self._written)
            self._stop_checks(finish=True)
            if fsync:
                os.fsync(self._fd)
        finally:
            self.discard()

    def discard(self) -> None:
        """Stop (waiting for the write in flight) and close the descriptor; the file stays."""
        self._pool.shutdown(wait=True)
        self._stop_checks(finish=False)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class BufferedFile:
    """A file appended to through the page cache; every 64 MB the kernel is asked to start
    writing to the disk (Linux ``sync_file_range``, without waiting), so the disk works while
    the next pieces are made and the final fsync finds little left to do."""

    direct = False

    def __init__(self, path: str):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()/discard()
        self._offset = 0
        self._flushed = 0  # bytes handed to the disk so far

    def write(self, data) -> None:
        """Append ``data`` (bytes, or a contiguous numpy array)."""
        src = _as_bytes(data)
        self._file.write(src.data)
        self._offset += len(src)
        if self._offset - self._flushed >= _WRITEBACK_BYTES and _SYNC_FILE_RANGE is not None:
            self._file.flush()
            _SYNC_FILE_RANGE(self._file.fileno(), self._flushed, self._offset - self._flushed, 2)
            self._flushed = self._offset

    def close(self, fsync: bool = True) -> None:
        """Flush, fsync when asked, close."""
        try:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def discard(self) -> None:
        """Close; the file stays."""
        self._file.close()


def _sync_file_range():
    """libc's ``sync_file_range(fd, offset, nbytes, flags)`` (Linux), or None elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _sync_file_range()


class DiskReader:
    """Reads ranges of one file from the disk, not the page cache (``O_DIRECT``), into one
    reused aligned buffer: the check of a file just written with :class:`DirectFile` then reads
    what the disk holds, and needs no new page-cache memory. Use :func:`DiskReader.open`."""

    def __init__(self, fd: int):
        self._fd = fd
        self._buffer = _aligned_empty(0)

    @classmethod
    def open(cls, path: str) -> DiskReader | None:
        """A reader of ``path``, or None where the file system does not take ``O_DIRECT``."""
        if not hasattr(os, "O_DIRECT"):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return None
            raise
        return cls(fd)

    def read(self, offset: int, size: int):
        """Bytes ``offset:offset+size`` (fewer at the end of the file) as a uint8 array, valid
        until the next read.

        Raises:
            OSError: the read fails (EINVAL: the file system refused the direct read).
        """
        start = offset - offset % ALIGN
        span = -(-(offset + size - start) // ALIGN) * ALIGN
        if len(self._buffer) < span:
            self._buffer = _aligned_empty(span)
        got, view = 0, self._buffer[:span]
        while got < span:
            n = os.preadv(self._fd, [view[got:]], start + got)
            if n == 0:
                break
            got += n
        return self._buffer[offset - start:min(got, offset - start + size)]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
