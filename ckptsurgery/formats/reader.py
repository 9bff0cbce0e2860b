"""Reading a V2 bundle's tensors without TensorFlow: numpy over memory-mapped data shards, or
over range requests to remote ones (:mod:`.storage`).

Every read is checked: the index entries were checked against the shards' sizes when the index
was parsed (:func:`~ckptsurgery.formats.bundle.check_bundle`), so no entry reads past its file,
and each tensor's bytes are checksummed (CRC-32C) against its entry, as TensorFlow's reader
does. :meth:`BundleReader.chunks` streams a tensor in pieces of a bounded size, each mapped
only while it is used, so reading a 256 MB tensor does not take 256 MB of memory; its checksum
is checked when the last piece has been read.
"""

from __future__ import annotations

import errno
import os
import struct
import weakref
from collections.abc import Iterator, Sequence

from ..errors import CheckpointCorruptError
from . import storage
from .bundle import _COPY_AGAIN, BundleEntry, check_bundle
from .crc import crc32c, unmask_crc
from .dtypes import DTYPE_NAMES, numpy_dtype
from .partitions import slice_key

__all__ = ["BundleReader", "UnreadableDtypeError"]

_READ_LIMIT = 2**20  # pieces up to this size are read, larger ones memory-mapped
_REMOTE_PIECE = 64 * 2**20  # bound of a piece of a remote shard (fetched as several ranges)


class UnreadableDtypeError(CheckpointCorruptError):
    """A tensor of a dtype this reader does not decode (``variant``); TensorFlow reads it."""


class BundleReader:
    """The tensors of one V2 checkpoint (its :class:`~ckptsurgery.formats.checkpoint.CheckpointFiles`).

    Raises (on construction):
        CheckpointCorruptError: the index or its entries do not hold (see ``check_bundle``).
    """

    def __init__(self, files):
        self.files = files
        self.index = check_bundle(files)
        self._big_endian = self.index.endianness == 1
        self._fds: dict[int, int] = {}  # shard -> descriptor, for small reads
        self._disk: dict | None = None  # shard -> DiskReader (or None), once read_from_disk()
        weakref.finalize(self, _close_all, self._fds)

    def read_from_disk(self) -> None:
        """From now on, :meth:`chunks` reads large pieces from the disk, around the page cache
        (:class:`~ckptsurgery.formats.datafile.DiskReader`), where the file system allows:
        the check of a checkpoint just written then reads what the disk holds, and needs no
        new page-cache memory."""
        if self._disk is None:
            self._disk = {}
            weakref.finalize(self, _close_readers, self._disk)

    @property
    def entries(self) -> dict[str, BundleEntry]:
        return self.index.entries

    def read(self, key: str):
        """The tensor ``key`` as a numpy array (strings as an ``object`` array of bytes), its
        parts put together for a partitioned variable.

        Raises:
            KeyError: no such key.
            CheckpointCorruptError: its bytes do not match their checksum.
            UnreadableDtypeError: a ``variant`` tensor.
        """
        import numpy as np

        entry = self.index.entries[key]
        if not entry.slices:
            return self._read_entry(entry, key)
        full = np.zeros(entry.shape, self._dtype(entry, key))
        for extents in entry.slices:
            part = self.index.parts.get(slice_key(key, extents))
            if part is None:
                raise CheckpointCorruptError(
                    f"'{self.files.index}' is damaged: part {list(extents)} of partitioned "
                    f"variable '{key}' is listed but not stored; {_COPY_AGAIN}")
            where = tuple(slice(s, None if n < 0 else s + n) for s, n in extents)
            full[where] = self._read_entry(part, key).reshape(full[where].shape)
        return full

    def read_many(self, keys: Sequence[str]) -> list:
        """The tensors ``keys``, each as :meth:`read` gives it; the bytes of tensors that lie
        near each other in a shard, in the order given, are read with one system call (the
        fixed cost of a read is most of the cost of a small tensor)."""
        entries, out, i = self.index.entries, [], 0
        while i < len(keys):
            first = entries[keys[i]]
            j, end = i + 1, first.offset + first.size
            if self._plain(first):
                while j < len(keys):
                    e = entries[keys[j]]
                    if not (self._plain(e) and e.shard_id == first.shard_id and e.offset >= end
                            and e.offset + e.size - first.offset <= _READ_LIMIT):
                        break
                    end, j = e.offset + e.size, j + 1
            if j == i + 1:
                out.append(self.read(keys[i]))
                i = j
                continue
            span = self._map(first, 0, end - first.offset)
            for key in keys[i:j]:
                e = entries[key]
                raw = span[e.offset - first.offset:e.offset - first.offset + e.size]
                self._check(e, key, crc32c(raw))
                out.append(self._native(raw.view(self._dtype(e, key))).reshape(e.shape))
            i = j
        return out

    @staticmethod
    def _plain(entry: BundleEntry) -> bool:
        """A whole tensor of a fixed-width dtype, stored in one piece."""
        return (not entry.slices and DTYPE_NAMES.get(entry.dtype, ("", 0))[1] > 0
                and 0 < entry.size <= _READ_LIMIT)

    def stored_crc(self, key: str) -> int | None:
        """The CRC-32C of the bytes :meth:`chunks` gives for ``key``, as the index records it
        (which :meth:`chunks` checks them against): for a whole fixed-width tensor in this
        machine's byte order; None otherwise (slices, strings, a big-endian bundle)."""
        entry = self.index.entries[key]
        width = DTYPE_NAMES.get(entry.dtype, ("", 0))[1]
        if entry.slices or not width or self._big_endian:
            return None
        return unmask_crc(entry.crc32c)

    def chunks(self, key: str, max_bytes: int) -> Iterator:
        """Yield the tensor ``key`` flattened, in C order, as arrays of at most ``max_bytes``
        (at least one element each). Each piece is valid until the next is asked for. The
        checksum is checked after the last piece (raises CheckpointCorruptError then)."""

        entry = self.index.entries[key]
        width = DTYPE_NAMES.get(entry.dtype, ("", 0))[1]
        if entry.slices or not width or entry.size == 0:
            yield self.read(key).reshape(-1)
            return
        dtype = self._dtype(entry, key)
        if storage.is_url(self.files.data[entry.shard_id]):
            max_bytes = min(max_bytes, _REMOTE_PIECE)  # memory, not round trips, bounds it
        step = max(1, max_bytes // width) * width
        crc = 0
        for start in range(0, entry.size, step):
            piece = self._piece(entry, start, min(step, entry.size - start))
            crc = crc32c(piece, crc)
            yield self._native(piece.view(dtype))
            del piece
        self._check(entry, key, crc)

    # -- one entry's bytes --------------------------------------------------------------------

    def _dtype(self, entry: BundleEntry, key: str):
        try:
            return numpy_dtype(entry.dtype)
        except KeyError:
            raise UnreadableDtypeError(
                f"variable '{key}' is a {entry.dtype_name} tensor, which ckptsurgery reads only "
                "through TensorFlow") from None

    def _piece(self, entry: BundleEntry, start: int, size: int):
        """Bytes ``start:start+size`` of an entry for :meth:`chunks`, from the disk when
        :meth:`read_from_disk` asked for it (valid until the next piece)."""
        if self._disk is None or size <= _READ_LIMIT or storage.is_url(
                self.files.data[entry.shard_id]):
            return self._map(entry, start, size)
        if entry.shard_id not in self._disk:
            from .datafile import DiskReader

            self._disk[entry.shard_id] = DiskReader.open(self.files.data[entry.shard_id])
        disk = self._disk[entry.shard_id]
        if disk is None:
            return self._map(entry, start, size)
        try:
            piece = disk.read(entry.offset + start, size)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            disk.close()  # opened, but direct reads refused: read through the page cache
            self._disk[entry.shard_id] = None
            return self._map(entry, start, size)
        if len(piece) != size:
            raise CheckpointCorruptError(f"'{self.files.data[entry.shard_id]}' is damaged: it "
                                         f"ends inside variable '{entry.key}'; {_COPY_AGAIN}")
        return piece

    def _map(self, entry: BundleEntry, start: int, size: int):
        """Bytes ``start:start+size`` of an entry: read into memory when small (mapping has a
        fixed cost that dominates for many small tensors), else memory-mapped; fetched by
        range requests from a remote shard."""
        import numpy as np

        path = self.files.data[entry.shard_id]
        if storage.is_url(path):
            data = np.empty(size, np.uint8)
            try:
                storage.read_ranges(path, entry.offset + start, size, data)
            except EOFError:
                raise CheckpointCorruptError(f"'{path}' is damaged: it ends inside variable "
                                             f"'{entry.key}'; {_COPY_AGAIN}") from None
            return data
        if size > _READ_LIMIT:
            return np.memmap(path, dtype=np.uint8, mode="r", offset=entry.offset + start,
                             shape=(size,))
        if hasattr(os, "preadv"):  # one system call on a descriptor kept open
            fd = self._fds.get(entry.shard_id)
            if fd is None:
                fd = self._fds[entry.shard_id] = os.open(path, os.O_RDONLY)
            data = np.empty(size, np.uint8)
            got = os.preadv(fd, [data], entry.offset + start)
        else:
            data = np.fromfile(path, dtype=np.uint8, count=size, offset=entry.offset + start)
            got = len(data)
        if got != size:
            raise CheckpointCorruptError(f"'{path}' is damaged: it ends inside variable "
                                         f"'{entry.key}'; {_COPY_AGAIN}")
        return data

    def _native(self, array):
        return array.byteswap().view(array.dtype) if self._big_endian else array

    def _check(self, entry: BundleEntry, key: str, crc: int) -> None:
        if crc != unmask_crc(entry.crc32c):
            raise self._damaged(entry, key)

    def _damaged(self, entry: BundleEntry, key: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(
            f"'{self.files.data[entry.shard_id]}' is damaged: the bytes of variable '{key}' do "
            f"not match their checksum; {_COPY_AGAIN}")

    def _read_entry(self, entry: BundleEntry, key: str):
        import numpy as np

        dtype = self._dtype(entry, key)
        if entry.size == 0:
            self._check(entry, key, 0)
            return np.zeros(entry.shape, dtype)
        raw = self._map(entry, 0, entry.size)
        if dtype == np.dtype(object):
            values = self._strings(entry, key, raw)
            return np.array(values, dtype=object).reshape(entry.shape)
        self._check(entry, key, crc32c(raw))
        owned = np.array(raw) if isinstance(raw, np.memmap) else raw  # a small read is a copy
        return self._native(owned.view(dtype)).reshape(entry.shape)

    def _strings(self, entry: BundleEntry, key: str, raw) -> list[bytes]:
        """A string tensor: varint lengths, their masked checksum, then the bytes."""
        data = bytes(raw)
        n = entry.num_elements
        lengths, pos, crc = [], 0, 0
        try:
            for _ in range(n):
                value, shift = 0, 0
                while True:
                    byte = data[pos]
                    pos += 1
                    value |= (byte & 0x7F) << shift
                    shift += 7
                    if byte < 0x80:
                        break
                lengths.append(value)
                crc = crc32c(struct.pack("<I" if value <= 0xFFFFFFFF else "<Q", value), crc)
            stored = data[pos:pos + 4]
            if len(stored) < 4 or unmask_crc(struct.unpack("<I", stored)[0]) != crc:
                raise IndexError
        except IndexError:
            raise CheckpointCorruptError(
                f"'{self.files.data[entry.shard_id]}' is damaged: the string lengths of variable "
                f"'{key}' do not match their checksum; {_COPY_AGAIN}") from None
        crc = crc32c(stored, crc)
        pos += 4
        if pos + sum(lengths) != len(data):
            raise self._damaged(entry, key)
        values = []
        for length in lengths:
            values.append(data[pos:pos + length])
            pos += length
        self._check(entry, key, crc32c(data[len(data) - sum(lengths):], crc))
        return values


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def _close_readers(readers: dict) -> None:
    for reader in readers.values():
        if reader is not None:
            reader.close()
    readers.clear()
