"""CRC-32C (Castagnoli), as LevelDB tables and TensorFlow bundles store it (masked).

``google-crc32c``'s C extension checksums several GB/s; without it (a platform with no wheel) a
pure-Python table version gives the same values, slowly, so reading still works.
"""

from __future__ import annotations

__all__ = ["crc32c", "mask_crc", "unmask_crc", "FAST"]

try:
    from google_crc32c import cext as _impl

    FAST = True
except ImportError:  # pragma: no cover - depends on the platform's wheels
    _impl = None
    FAST = False


def _table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def _python_crc32c(data, crc: int = 0) -> int:
    table = _TABLE
    crc ^= 0xFFFFFFFF
    for b in memoryview(data).cast("B"):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C of ``data`` (bytes, or a contiguous numpy array), extending ``crc``."""
    if _impl is None:
        return _python_crc32c(data, crc)
    if not isinstance(data, bytes):
        import numpy as np

        view = np.asarray(data).reshape(-1).view(np.uint8)
        if view.flags.writeable:
            view = view.view()
            view.flags.writeable = False
        data = view
    return _impl.extend(crc, data)


def mask_crc(crc: int) -> int:
    """Mask a CRC as LevelDB and TensorFlow store it."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Undo the masking LevelDB and TensorFlow apply to stored CRCs."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
