"""TensorFlow's ``DataType`` enum as a checkpoint stores it, and the numpy dtype of each.

One table for everything that reads or writes tensor bytes without TensorFlow: names as
``tf.DType.name`` spells them, bytes per element (0: variable length), and the numpy dtype
(``ml_dtypes`` for bfloat16, the float8 kinds and the narrow integers; quantized types as the
plain integers they are stored as).
"""

from __future__ import annotations

import functools

__all__ = ["DTYPE_NAMES", "dtype_name", "numpy_dtype", "enum_of", "enum_of_numpy"]

#: ``{enum value: (name, bytes per element)}`` of every dtype a checkpoint may hold.
DTYPE_NAMES: dict[int, tuple[str, int]] = {
    1: ("float32", 4), 2: ("float64", 8), 3: ("int32", 4), 4: ("uint8", 1), 5: ("int16", 2),
    6: ("int8", 1), 7: ("string", 0), 8: ("complex64", 8), 9: ("int64", 8), 10: ("bool", 1),
    11: ("qint8", 1), 12: ("quint8", 1), 13: ("qint32", 4), 14: ("bfloat16", 2),
    15: ("qint16", 2), 16: ("quint16", 2), 17: ("uint16", 2), 18: ("complex128", 16),
    19: ("float16", 2), 21: ("variant", 0), 22: ("uint32", 4), 23: ("uint64", 8),
    24: ("float8_e5m2", 1), 25: ("float8_e4m3fn", 1), 26: ("float8_e4m3fnuz", 1),
    27: ("float8_e4m3b11fnuz", 1), 28: ("float8_e5m2fnuz", 1), 29: ("int4", 1), 30: ("uint4", 1),
    31: ("int2", 1), 32: ("uint2", 1), 33: ("float4_e2m1fn", 1),
}

_QUANTIZED = {"qint8": "int8", "quint8": "uint8", "qint16": "int16", "quint16": "uint16",
              "qint32": "int32"}


def dtype_name(enum: int) -> str:
    """``tf.DType.name`` of an enum value (``float32_ref`` for a reference type, ``<dtype N>``
    for one TensorFlow does not define)."""
    if enum > 100 and enum - 100 in DTYPE_NAMES:
        return DTYPE_NAMES[enum - 100][0] + "_ref"
    return DTYPE_NAMES.get(enum, (f"<dtype {enum}>", 0))[0]


@functools.cache
def numpy_dtype(enum: int):
    """The numpy dtype of a fixed-width enum value; ``object`` for strings.

    Raises:
        KeyError: variant, or a dtype numpy and ml_dtypes do not have.
    """
    import numpy as np

    name = DTYPE_NAMES[enum][0]
    if name == "string":
        return np.dtype(object)
    if name == "variant":
        raise KeyError(name)
    name = _QUANTIZED.get(name, name)
    if hasattr(np, name) and name not in ("bfloat16",):
        return np.dtype(name)
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


@functools.cache
def enum_of(name: str) -> int:
    """The enum value of a dtype name (``float16``, ``bfloat16``, ``string`` ...)."""
    for enum, (known, _) in DTYPE_NAMES.items():
        if known == name:
            return enum
    raise KeyError(name)


@functools.cache
def enum_of_numpy(dtype) -> int:
    """The enum value a numpy dtype is saved as (``object``: string; plain integers never as
    the quantized kinds).

    Raises:
        KeyError: a numpy dtype TensorFlow has no enum value for.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    for enum, (name, _) in DTYPE_NAMES.items():
        if name in _QUANTIZED or name == "variant":
            continue
        if numpy_dtype(enum) == dtype:
            return enum
    raise KeyError(str(dtype))
