"""Writing a V2 bundle without TensorFlow: one data shard and its ``.index``, as ``Saver`` does.

Tensors go into ``prefix.data-00000-of-00001`` in the order they are added, whole
(:meth:`BundleFileWriter.add`) or streamed in pieces (:meth:`BundleFileWriter.add_pieces`, for
tensors larger than memory should hold), each with its CRC-32C; :meth:`BundleFileWriter.close`
fsyncs the data and writes the index (the header, then the entries sorted by key) as TensorFlow's
``BundleWriter`` does, so TensorFlow's reader and other tools read the result. Atomicity is the
caller's (write to a staged prefix, then move it into place).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

from ..errors import InternalError
from . import storage
from .bundle import write_table
from .crc import crc32c, mask_crc
from .datafile import open_data_file
from .dtypes import DTYPE_NAMES, enum_of_numpy
from .protos import message_class

__all__ = ["BundleFileWriter", "data_path"]

#: ``kTensorBundleVersion``: the format version TensorFlow's writer records.
_PRODUCER = 1
_STRING = 7  # DataType DT_STRING: its entry's checksum is not of its bytes as stored
_READ_BACK_MIN = 2**20  # smaller tensors are left to the caller's read-back, read in runs


def data_path(prefix: str) -> str:
    """The single data shard of the bundle at ``prefix``."""
    return prefix + ".data-00000-of-00001"


class BundleFileWriter:
    """A new V2 bundle at ``prefix``; use as a context manager (closed on success, removed on
    error) or call :meth:`close` / :meth:`abort`.

    ``fsync=False`` leaves the data to the kernel on closing, for a caller that fsyncs the
    files itself later (:func:`~ckptsurgery.safety.staging.staged_checkpoint` does, after
    reading them back). The data goes around the page cache where the file system allows
    (:func:`~ckptsurgery.formats.datafile.open_data_file`).

    ``read_back=True``: each large tensor is read back from the disk and its checksum checked
    while the next ones are written (:meth:`~ckptsurgery.formats.datafile.DirectFile.read_back`);
    after :meth:`close`, :attr:`read_back` maps the names so checked to their
    ``(offset, size, masked crc32c)``, which the caller's own read-back need not read again.
    """

    def __init__(self, prefix: str, *, fsync: bool = True, read_back: bool = False):
        self.prefix = prefix
        self._fsync = fsync
        self._data = open_data_file(data_path(prefix))
        self._read_back = read_back and self._data.direct
        self.read_back: dict[str, tuple[int, int, int]] = {}
        self._offset = 0
        self._entries: dict[str, bytes] = {}

    def add(self, key: str, value) -> None:
        """Append the tensor ``value`` (a numpy array or scalar; ``object``/bytes arrays are
        strings) under ``key``."""
        import numpy as np

        array = np.asarray(value)
        if array.dtype.kind in "OSU":
            self._add_strings(key, array)
            return
        self.add_pieces(key, array.dtype, array.shape, [np.ascontiguousarray(array).reshape(-1)])

    def add_pieces(self, key: str, dtype, shape, pieces: Iterable, *,
                   enum: int | None = None, crc: int | None = None) -> None:
        """Append a fixed-width tensor of ``dtype`` and ``shape`` given as flat pieces in C
        order (each written, then dropped), under ``key``. ``enum``: the ``DataType`` to
        record, when not numpy's dtype's (``qint8`` is stored as numpy's ``int8``). ``crc``:
        the pieces' CRC-32C when the caller knows it (a tensor copied unchanged from a
        checkpoint whose reader checks that checksum), not computed again.

        Raises:
            InternalError: the pieces do not add up to the shape.
        """
        import numpy as np

        enum = enum_of_numpy(dtype) if enum is None else enum
        width = DTYPE_NAMES[enum][1]
        start, computed = self._offset, 0
        for piece in pieces:
            piece = np.ascontiguousarray(piece, dtype=dtype).reshape(-1)
            if crc is None:
                computed = crc32c(piece, computed)
            self._data.write(piece)
            self._offset += piece.nbytes
        crc = computed if crc is None else crc
        size = self._offset - start
        expected = math.prod(int(d) for d in shape) * width
        if size != expected:
            raise InternalError(f"tensor '{key}' got {size} bytes for shape {list(shape)} "
                                f"{np.dtype(dtype).name}, which takes {expected}")
        self._entry(key, enum, shape, start, size, crc)

    def add_joined(self, dtype, tensors: Sequence[tuple[str, tuple]], joined, *,
                   enum: int | None = None) -> None:
        """Append the fixed-width tensors ``tensors``, ``(key, shape)`` each, whose values are
        the flat array ``joined`` of ``dtype``, one after the other: one write for all.
        ``enum`` as for :meth:`add_pieces`.

        Raises:
            InternalError: the shapes do not add up to ``joined``.
        """
        import numpy as np

        joined = np.ascontiguousarray(joined, dtype=dtype).reshape(-1)
        counts = [math.prod(int(d) for d in shape) for _, shape in tensors]
        if sum(counts) != joined.size:
            raise InternalError(f"{len(tensors)} tensors take {sum(counts)} values, "
                                f"{joined.size} were given")
        enum = enum_of_numpy(dtype) if enum is None else enum
        raw = joined.view(np.uint8)
        self._data.write(raw)
        start = 0
        for (key, shape), count in zip(tensors, counts, strict=True):
            size = count * joined.itemsize
            self._entry(key, enum, shape, self._offset + start, size,
                        crc32c(raw[start:start + size]))
            start += size
        self._offset += start

    def _add_strings(self, key: str, array) -> None:
        """Strings: varint lengths, their masked checksum, the bytes (``WriteStringTensor``)."""
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        lengths, crc = bytearray(), 0
        for v in values:
            n = len(v)
            while n >= 0x80:
                lengths.append((n & 0x7F) | 0x80)
                n >>= 7
            lengths.append(n)
            crc = crc32c(struct.pack("<I" if len(v) <= 0xFFFFFFFF else "<Q", len(v)), crc)
        checksum = struct.pack("<I", mask_crc(crc))
        crc = crc32c(checksum, crc)
        body = b"".join(values)
        crc = crc32c(body, crc)
        blob = bytes(lengths) + checksum + body
        start = self._offset
        self._data.write(blob)
        self._offset += len(blob)
        self._entry(key, _STRING, array.shape, start, len(blob), crc)

    def _entry(self, key: str, enum: int, shape, offset: int, size: int, crc: int) -> None:
        if key in self._entries:
            raise InternalError(f"tensor '{key}' written twice into '{self.prefix}'")
        entry = message_class("tensorflow.BundleEntryProto")()
        entry.dtype = enum
        entry.shape.SetInParent()
        for d in shape:
            entry.shape.dim.add().size = int(d)
        entry.offset = offset
        entry.size = size
        entry.crc32c = mask_crc(crc)
        self._entries[key] = entry.SerializeToString(deterministic=True)
        if self._read_back and enum != _STRING and size > _READ_BACK_MIN:
            self._data.read_back(key, offset, size, crc)

    def close(self) -> None:
        """Write out and fsync the data (unless made with ``fsync=False``), write the index."""
        self._data.close(fsync=self._fsync)
        if self._read_back:
            if self._data.mismatched:
                raise InternalError(
                    f"the checkpoint just written does not verify ('{self._data.mismatched[0]}' "
                    "does not read back from the disk as written); nothing was moved into "
                    "place: check the disk, then report this")
            self.read_back = {name: (offset, size, mask_crc(crc))
                              for name, offset, size, crc in self._data.checked}
        header = message_class("tensorflow.BundleHeaderProto")()
        header.num_shards = 1
        header.version.producer = _PRODUCER
        rows = [(b"", header.SerializeToString(deterministic=True))]
        rows += sorted((k.encode(), v) for k, v in self._entries.items())
        write_table(self.prefix + ".index", rows)

    def abort(self) -> None:
        """Stop and remove what was written."""
        self._data.discard()
        for path in (data_path(self.prefix), self.prefix + ".index"):
            storage.remove(path)

    def __enter__(self) -> BundleFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
