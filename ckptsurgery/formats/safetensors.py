"""The safetensors file layout, written and checked without the ``safetensors`` package: an
8-byte little-endian header length, a JSON header (every tensor's dtype, shape and byte range,
padded with spaces to 8 bytes), then the tensors' bytes back to back.

The header is known from a checkpoint's index before any tensor is read, so a file is written
header first and each tensor's bytes streamed after it, one piece in memory at a time.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

from ..errors import CheckpointCorruptError

__all__ = ["DTYPES", "header_bytes", "read_header"]

#: safetensors' dtype codes of the numpy dtype names a checkpoint's tensors have.
DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
          "int64": "I64", "uint64": "U64", "int32": "I32", "uint32": "U32", "int16": "I16",
          "uint16": "U16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "complex64": "C64"}


def header_bytes(entries: Sequence[tuple[str, str, Sequence[int], int]],
                 metadata: dict[str, str]) -> bytes:
    """The length and JSON header of a file holding ``entries`` (``(name, dtype name, shape,
    nbytes)``) in that order, back to back."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def read_header(path: str) -> tuple[dict, int]:
    """The header of the safetensors file ``path`` and the offset its data starts at.

    Raises:
        CheckpointCorruptError: not a safetensors file.
    """
    with open(path, "rb") as f:
        raw = f.read(8)
        size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        text = f.read(size) if 0 < size < 100 * 2**20 else b""
    try:
        header = json.loads(text)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise CheckpointCorruptError(f"'{path}' is not a safetensors file (no JSON header)")
    return header, 8 + size
