"""Partitioned (sliced) variables in a V2 bundle: the key each saved slice is stored under.

A ``Saver`` over a partitioned variable writes one entry for the full variable, whose ``slices``
list the saved parts, and one entry per part under the key TensorFlow's
``EncodeTensorNameSlice`` makes: ``OrderedCode`` numbers and strings (``0``, the name, the
rank, then each dimension's start and length, -1 meaning "to the end"), so that the parts sort
after the name. Readers find a part by building its key from the full entry's slice list.
"""

from __future__ import annotations

__all__ = ["slice_key"]

# OrderedCode's signed-number encoding: its length by the number's bit count, and the header
# bits of the first two bytes by length.
_BITS_TO_LENGTH = (1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4,
                   4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 8, 8,
                   8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 10)
_HEADER = ((0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0),
           (0xFE, 0), (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0))


def _num_increasing(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def _string(value: bytes) -> bytes:
    return value.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _signed(value: int) -> bytes:
    x = ~value if value < 0 else value
    if x < 64:
        return bytes([(0x80 ^ value) & 0xFF])
    length = _BITS_TO_LENGTH[x.bit_length()]
    body = bytearray((value & (2**80 - 1)).to_bytes(10, "big")[10 - length:])
    body[0] ^= _HEADER[length][0]
    body[1] ^= _HEADER[length][1]
    return bytes(body)


def slice_key(name: str, extents) -> bytes:
    """The bundle key of the part ``extents`` (``((start, length), ...)``, length -1: to the
    end) of the partitioned variable ``name``."""
    out = _num_increasing(0) + _string(name.encode()) + _num_increasing(len(extents))
    for start, length in extents:
        out += _signed(start) + _signed(length)
    return out
