"""The checkpoint file formats, read in pure Python and checked before TensorFlow sees them.

TensorFlow's C++ reader trusts a bundle's metadata: an SSTable footer whose block handle points
past the end of the file, a tensor entry with an unknown dtype or a shape of 2**40 elements make
it allocate without bound or fail a ``CHECK``, which aborts the whole process instead of raising.
This module parses the ``.index`` file (a LevelDB table: footer, blocks each with a masked CRC32C
checksum, prefix-compressed keys), the ``BundleHeaderProto`` and every ``BundleEntryProto``, and
checks them against the data shards on disk, so that a damaged checkpoint becomes a
:class:`~ckptsurgery.errors.CheckpointCorruptError` naming the file, the entry and the fix.
The old V1 single-file format is a LevelDB table too; its footer, index and block bounds are
checked (block checksums with ``thorough``).

Nothing here imports TensorFlow: the two protos are parsed with the ``protobuf`` package from
TensorFlow's vendored descriptors (:mod:`.protos`), so the check costs milliseconds and runs
before TensorFlow is even loaded. Reading the tensors themselves is :mod:`.reader`.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import CheckpointCorruptError
from . import storage
from .crc import crc32c, mask_crc, unmask_crc
from .dtypes import DTYPE_NAMES, dtype_name

__all__ = [
    "BundleEntry",
    "BundleIndex",
    "read_table",
    "write_table",
    "read_index",
    "check_bundle",
]

_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5  # block type byte + masked crc32c
_MAX_RANK = 254  # TensorShape::MaxDimensions()
_COPY_AGAIN = "copy the checkpoint again from its source"

@dataclass(frozen=True)
class BundleEntry:
    """One tensor's ``BundleEntryProto``: where its bytes are and what they must hash to.

    ``crc32c`` is the masked checksum as stored; ``slices`` holds, for a partitioned variable,
    one ``((start, length), ...)`` tuple per saved slice (length -1: to the end of the dim).
    """

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: tuple[tuple[tuple[int, int], ...], ...] = ()
    unknown_rank: bool = False

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class BundleIndex:
    """A V2 ``.index`` file: its header fields, its entries by key (the header excluded), and
    the parts of partitioned variables by their encoded key (:mod:`.partitions`)."""

    path: str
    num_shards: int
    endianness: int
    producer: int
    min_consumer: int
    entries: dict[str, BundleEntry]
    parts: dict[bytes, BundleEntry] = field(default_factory=dict)
    #: The data shard sizes every entry was found to fit (:func:`check_bundle`; a memo, so
    #: that the entries of an index kept for its file are checked once per shard sizes).
    fits: set[tuple[int, ...]] = field(default_factory=set, compare=False, repr=False)


# --- the LevelDB table format -----------------------------------------------------------------

class _Malformed(Exception):
    """A structural problem, turned into a CheckpointCorruptError naming the file by the caller."""


def _varint(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    limit = len(buf) if limit is None else limit
    result = shift = 0
    while True:
        if pos >= limit or shift > 63:
            raise _Malformed("bad varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _block_handle(buf: bytes, pos: int, file_size: int, what: str) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    if offset + size + _TRAILER_SIZE > file_size:
        raise _Malformed(f"{what} block ({size} bytes at offset {offset}) lies past the end of "
                         f"the file ({file_size} bytes): truncated or damaged")
    return offset, size, pos


def _read_block(f, offset: int, size: int, what: str) -> bytes:
    f.seek(offset)
    raw = f.read(size + _TRAILER_SIZE)
    if len(raw) != size + _TRAILER_SIZE:
        raise _Malformed(f"{what} block at offset {offset} is cut short: truncated")
    stored = unmask_crc(struct.unpack_from("<I", raw, size + 1)[0])
    if crc32c(raw[: size + 1]) != stored:
        raise _Malformed(f"{what} block at offset {offset} fails its checksum: bit-flipped or "
                         "overwritten")
    kind = raw[size]
    if kind == 0:
        return raw[:size]
    if kind == 1:
        return _snappy_decompress(raw[:size])
    raise _Malformed(f"{what} block at offset {offset} has unknown compression type {kind}")


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _BlockBuilder:
    """A table block being built: prefix-compressed entries, then the restart array."""

    def __init__(self, restart_interval: int = 16):
        self.interval = restart_interval
        self.out, self.restarts, self.previous, self.count = bytearray(), [], b"", 0

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count % self.interval:
            limit = min(len(self.previous), len(key))
            while shared < limit and self.previous[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.out))
        self.out += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value))
        self.out += key[shared:] + value
        self.previous = key
        self.count += 1

    def size(self) -> int:
        return len(self.out) + 4 * max(1, len(self.restarts)) + 4

    def finish(self) -> bytes:
        restarts = self.restarts or [0]
        return bytes(self.out + b"".join(struct.pack("<I", r) for r in restarts)
                     + struct.pack("<I", len(restarts)))


def _build_block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    """A table block of ``entries``."""
    builder = _BlockBuilder(restart_interval)
    for key, value in entries:
        builder.add(key, value)
    return builder.finish()


def _separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's ``FindShortestSeparator``: a short key in ``[start, limit)``."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """LevelDB's ``FindShortSuccessor``: a short key ``>= key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_table(path: str, entries: list[tuple[bytes, bytes]], *,
                block_size: int = 262144) -> None:
    """Write ``entries`` (sorted by key) as a LevelDB table, the format of a bundle's ``.index``,
    laid out as TensorFlow's table builder does (uncompressed data blocks of about
    ``block_size`` bytes, an index block keyed by short separators, an empty metaindex block,
    the footer), so that the bytes equal TensorFlow's for the same entries. The caller takes
    care of atomicity."""
    def block_with_trailer(block: bytes) -> bytes:
        crc = crc32c(block + b"\x00")
        return block + b"\x00" + struct.pack("<I", mask_crc(crc))

    out = bytearray()
    index: list[tuple[bytes, bytes]] = []
    block = _BlockBuilder()
    for i, (key, value) in enumerate(entries):
        block.add(key, value)
        last = i + 1 == len(entries)
        if block.size() < block_size and not last:
            continue
        data = block.finish()
        handle = _put_varint(len(out)) + _put_varint(len(data))
        out += block_with_trailer(data)
        index.append((_successor(key) if last else _separator(key, entries[i + 1][0]), handle))
        block = _BlockBuilder()
    if not entries:
        data = block.finish()
        index.append((b"", _put_varint(0) + _put_varint(len(data))))
        out += block_with_trailer(data)
    meta_offset = len(out)
    meta = _build_block([])
    out += block_with_trailer(meta)
    index_offset = len(out)
    index_block = _build_block(index, restart_interval=1)
    out += block_with_trailer(index_block)
    handles = (_put_varint(meta_offset) + _put_varint(len(meta))
               + _put_varint(index_offset) + _put_varint(len(index_block)))
    out += handles.ljust(_FOOTER_SIZE - len(_TABLE_MAGIC), b"\x00") + _TABLE_MAGIC
    storage.write_bytes(path, bytes(out))


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed("block too small to hold its restart array")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    if n_restarts > (len(block) - 4) // 4:
        raise _Malformed("block restart count exceeds its size")
    limit = len(block) - 4 - 4 * n_restarts
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        unshared, pos = _varint(block, pos, limit)
        vlen, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise _Malformed("block entry overruns its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def _snappy_decompress(data: bytes) -> bytes:
    """Snappy's raw format (TensorFlow 1.1 wrote compressed index blocks)."""
    n, pos = _varint(data, 0)
    if n > 32 * len(data) + 64:  # copies expand at most ~21x: anything more is garbage
        raise _Malformed("compressed block claims an impossible uncompressed size")
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:
                width = length - 59
                if pos + width > end:
                    raise _Malformed("compressed block is cut short")
                length = int.from_bytes(data[pos:pos + width], "little")
                pos += width
            length += 1
            if pos + length > end:
                raise _Malformed("compressed block is cut short")
            out += data[pos:pos + length]
            pos += length
            continue
        width = (0, 1, 2, 4)[kind]
        if pos + width > end:
            raise _Malformed("compressed block is cut short")
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            back = ((tag >> 5) << 8) | data[pos]
        else:
            length = (tag >> 2) + 1
            back = int.from_bytes(data[pos:pos + width], "little")
        pos += width
        if back == 0 or back > len(out) or len(out) + length > n:
            raise _Malformed("compressed block has a bad back-reference")
        start = len(out) - back
        for i in range(length):  # may overlap its own output: byte by byte
            out.append(out[start + i])
    if len(out) != n:
        raise _Malformed("compressed block decompresses to the wrong size")
    return bytes(out)


def _table_blocks(f, file_size: int) -> tuple[bytes, list[tuple[bytes, int, int]]]:
    """The checked index block of an open table and its ``(last key, offset, size)`` handles."""
    if file_size < _FOOTER_SIZE:
        raise _Malformed(f"only {file_size} bytes, shorter than a table footer: truncated")
    f.seek(file_size - _FOOTER_SIZE)
    footer = f.read(_FOOTER_SIZE)
    if footer[-8:] != _TABLE_MAGIC:
        raise _Malformed("no table magic number at its end: truncated, or not this kind of file")
    _, _, pos = _block_handle(footer, 0, file_size, "metaindex")
    offset, size, _ = _block_handle(footer, pos, file_size, "index")
    index = _read_block(f, offset, size, "index")
    handles = []
    for key, value in _block_entries(index):
        block_offset, block_size, _ = _block_handle(value, 0, file_size, "data")
        handles.append((key, block_offset, block_size))
    return index, handles


def read_table(path: str, *, thorough: bool = True) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a LevelDB table file, checking its structure on the way.

    Args:
        path: the table (a V2 ``.index`` or a V1 checkpoint file).
        thorough: also read the data blocks and check their checksums and key order; otherwise
            only the footer, the index block and the bounds of the data blocks are checked, and
            nothing is returned.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointCorruptError: truncated, bit-flipped or not a table; the message says where.
    """
    try:
        file_size = storage.size(path)
        with storage.open_read(path) as f:
            _, handles = _table_blocks(f, file_size)
            if not thorough:
                return []
            entries: list[tuple[bytes, bytes]] = []
            for _, offset, size in handles:
                for key, value in _block_entries(_read_block(f, offset, size, "data")):
                    if entries and key <= entries[-1][0]:
                        raise _Malformed("keys out of order")
                    entries.append((key, value))
            return entries
    except _Malformed as e:
        raise CheckpointCorruptError(f"'{path}' is damaged: {e}; {_COPY_AGAIN}") from None
    except FileNotFoundError as e:
        from ..errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"no file '{path}'") from e
    except OSError as e:
        raise CheckpointCorruptError(f"cannot read '{path}': {e.strerror}") from e


# --- the bundle protos (BundleHeaderProto, BundleEntryProto) ---------------------------------

def _entry_decoder() -> Callable[[str, bytes], BundleEntry]:
    """``decode(key, value)``: a ``BundleEntryProto`` as a :class:`BundleEntry` (the imports
    and class lookup done once: an index can hold 10,000s of entries)."""
    from google.protobuf.message import DecodeError

    from .protos import message_class

    parse = message_class("tensorflow.BundleEntryProto").FromString

    def decode(key: str, buf: bytes) -> BundleEntry:
        try:
            e = parse(buf)
        except DecodeError as err:
            raise _Malformed(str(err) or "not a BundleEntryProto") from None
        shape, slices = e.shape, e.slices  # each field read once
        if slices:
            slices = tuple(tuple((x.start, x.length if x.HasField("length") else -1)
                                 for x in s.extent) for s in slices)
        return BundleEntry(key=key, dtype=e.dtype, shape=tuple([d.size for d in shape.dim]),
                           shard_id=e.shard_id, offset=e.offset, size=e.size, crc32c=e.crc32c,
                           slices=slices or (), unknown_rank=shape.unknown_rank)
    return decode


def read_index(path: str) -> BundleIndex:
    """Parse and check a V2 ``.index`` file (every block checksum, the header, every entry).

    The result is kept for the file as it is on disk (same inode, size and modification time;
    for a remote file, size and ETag),
    so a command that opens, writes and verifies checkpoints parses each index once.

    Raises:
        CheckpointCorruptError: the file is damaged; the message names what and where.
    """
    try:
        if storage.is_url(path):
            version = tuple(sorted(storage.identity(path).items()))
        else:
            st = os.stat(path)
            version = (st.st_ino, st.st_size, st.st_mtime_ns)
    except FileNotFoundError as e:
        from ..errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"no file '{path}'") from e
    return _parse_index(path, version)


@functools.lru_cache(maxsize=8)
def _parse_index(path: str, version: tuple) -> BundleIndex:
    table = read_table(path)
    if not table or table[0][0] != b"":
        raise CheckpointCorruptError(
            f"'{path}' has no bundle header entry: not a checkpoint index, or damaged; "
            f"{_COPY_AGAIN}")
    from google.protobuf.message import DecodeError

    from .protos import message_class

    entries: dict[str, BundleEntry] = {}
    key = ""
    decode = _entry_decoder()
    try:
        try:
            header = message_class("tensorflow.BundleHeaderProto").FromString(table[0][1])
        except DecodeError as e:
            raise _Malformed(str(e) or "not a BundleHeaderProto") from None
        for raw_key, value in table[1:]:
            if raw_key[:1] == b"\x00":  # a part of a partitioned variable (formats.partitions)
                continue
            key = raw_key.decode("utf-8", errors="backslashreplace")
            entries[key] = decode(key, value)
    except _Malformed as e:
        what = f"the entry of '{key}'" if key else "the bundle header"
        raise CheckpointCorruptError(f"'{path}' is damaged: {what} does not parse ({e}); "
                                     f"{_COPY_AGAIN}") from None
    parts = {k: decode(repr(k), v) for k, v in table[1:] if k[:1] == b"\x00"}
    return BundleIndex(path, header.num_shards, header.endianness, header.version.producer,
                       header.version.min_consumer, entries, parts)


# --- checking a checkpoint's files ------------------------------------------------------------

def check_bundle(files, *, thorough: bool = False) -> BundleIndex | None:
    """Check a checkpoint's files before TensorFlow reads them.

    For V2: the ``.index`` (all of it), the header against the data shards found, and each entry
    (dtype, shape, size, shard, byte range inside its shard). For V1: the table structure
    (block checksums too with ``thorough``).

    Args:
        files: a :class:`~ckptsurgery.formats.checkpoint.CheckpointFiles`.
        thorough: for V1, read every block (slow on big files); V2 is always checked fully
            (its data bytes are checksummed by TensorFlow's reader, tensor by tensor).

    Returns:
        The parsed :class:`BundleIndex` (None for V1).

    Raises:
        CheckpointCorruptError: anything that does not hold; the message names the file, the
            variable and the fix.
    """
    if files.format == "V1":
        for path in files.data:
            read_table(path, thorough=thorough)
        return None
    index = read_index(files.index)
    if index.num_shards != len(files.data):
        raise CheckpointCorruptError(
            f"'{files.index}' says the checkpoint has {index.num_shards} data shard(s) but "
            f"{len(files.data)} were found ({storage.basename(files.data[0])}...); the index and "
            f"the data files are from different saves or damaged; {_COPY_AGAIN}")
    if index.endianness not in (0, 1):
        raise CheckpointCorruptError(
            f"'{files.index}' has an invalid byte-order field ({index.endianness}): damaged; "
            f"{_COPY_AGAIN}")
    sizes = [storage.size(p) for p in files.data]
    if tuple(sizes) in index.fits:
        return index
    for entry in [*index.entries.values(), *index.parts.values()]:
        problem = _entry_problem(entry, sizes)
        if problem:
            shard = files.data[entry.shard_id] if 0 <= entry.shard_id < len(sizes) else None
            where = f"'{shard}'" if shard and "data shard" in problem else f"'{files.index}'"
            raise CheckpointCorruptError(
                f"{where} is damaged: variable '{entry.key}' {problem}; {_COPY_AGAIN}")
    index.fits.add(tuple(sizes))
    return index


def _entry_problem(entry: BundleEntry, shard_sizes: list[int]) -> str | None:
    """What is wrong with one entry, or None."""
    if entry.dtype not in DTYPE_NAMES:
        return f"has an invalid dtype ({entry.dtype})"
    if entry.unknown_rank or len(entry.shape) > _MAX_RANK or any(d < 0 for d in entry.shape):
        return f"has an invalid shape {list(entry.shape)}"
    n = entry.num_elements
    if n >= 1 << 62:
        return f"has an impossible shape {list(entry.shape)}"
    for extents in entry.slices:
        if len(extents) != len(entry.shape) or any(
                s < 0 or length < -1 or (length >= 0 and s + length > d)
                for (s, length), d in zip(extents, entry.shape, strict=True)):
            return f"has a slice {list(extents)} that does not fit its shape {list(entry.shape)}"
    if entry.slices:
        return None  # a partitioned variable's slices are entries of their own
    if not 0 <= entry.shard_id < len(shard_sizes):
        return f"is in shard {entry.shard_id}, which does not exist"
    if entry.offset < 0 or entry.size < 0:
        return f"has a negative offset or size ({entry.offset}, {entry.size})"
    _, width = DTYPE_NAMES[entry.dtype]
    if width and entry.size != n * width:
        return (f"is {entry.size} bytes for shape {list(entry.shape)} {entry.dtype_name}, "
                f"which takes {n * width}")
    if not width and entry.size < n:
        return f"is {entry.size} bytes, too few for {n} {entry.dtype_name} elements"
    end = entry.offset + entry.size
    if end > shard_sizes[entry.shard_id]:
        return (f"needs bytes {entry.offset}..{end} of its data shard, which has only "
                f"{shard_sizes[entry.shard_id]}: truncated")
    return None
