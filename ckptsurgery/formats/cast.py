"""Casting tensors between dtypes with numpy, fast on every value.

numpy's float32 -> float16 conversion handles each value that becomes subnormal (or zero) in
float16 on a slow scalar path: on Adam's second moments, which are almost all below float16's
normal range, it runs at about 70 ns per value, ten times its usual speed. :func:`cast` does
that conversion with whole-array integer and float operations instead (round to nearest even,
as numpy and TensorFlow do: ``astype``'s bits for every one of the 2**32 float32 values, NaN
payloads included, checked once; the tests check 1.4 million chosen ones and each kind of
block), and every other cast with ``astype``. A narrowing cast turns values out of range into
infinities without a word; :func:`cast_counted` also says how many, which a migration reports.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["cast", "cast_counted", "overflowed"]


def cast(values, dtype):
    """``values`` (a numpy array) as ``dtype``; a new array."""
    return cast_counted(values, dtype)[0]


def cast_counted(values, dtype, out=None) -> tuple:
    """``(values as dtype, how many finite values became infinite)``: a cast to a narrower
    float overflows silently, and a migration must say so. ``out``: a flat array of ``dtype``
    and of ``values``' size to write the result into (a streaming cast reuses two, since
    memory the process touches for the first time costs more to clear than the cast itself)."""
    import numpy as np

    dtype = np.dtype(dtype)
    if values.dtype == np.float32 and dtype == np.float16:
        return _float32_to_float16(values, out)
    if out is None:
        result = values.astype(dtype)
    else:
        np.copyto(out, values.reshape(-1), casting="unsafe")
        result = out.reshape(values.shape)
    return result, overflowed(values, result)


def overflowed(value, result) -> int:
    """How many finite values of ``value`` became infinite in ``result``, its cast. Two
    reductions answer "none" without allocating; only then is a mask of the array's size made."""
    import ml_dtypes
    import numpy as np

    if value.size == 0 or value.dtype.kind not in "fV" or result.dtype.kind not in "fV":
        return 0
    limit = float(ml_dtypes.finfo(result.dtype).max)
    if float(value.max()) <= limit and float(value.min()) >= -limit:
        return 0
    return int(np.count_nonzero(np.isfinite(value) & np.isinf(result)))


_BLOCK = 2**17  # values per step: temporaries stay in cache (512 KB each)
#: Below float16's normal range, adding the float32 of these bits (0.5) lets the float32
#: adder round the mantissa into place, exactly as round-to-nearest-even does.
_MAGIC_BITS = (127 - 15 + 23 - 10 + 1) << 23
_SMALLEST_NORMAL = 113 << 23  # float16's smallest normal value, as float32 bits


def _float32_to_float16(x, out=None) -> tuple:
    """float32 -> float16 bits by the rounding trick of F. Giesen's ``float_to_half_fast3_rtne``
    (public domain), a block of values at a time, and the count of finite values that became
    infinite; NaNs are converted by numpy, which keeps their payload bits.

    A block's largest and smallest magnitudes say which of the two roundings it needs: Adam's
    second moments need only the subnormal one; weights take the normal one, and the few of
    their values below float16's normal range are rounded again (:func:`_round_small`). Each
    core takes a contiguous share of the blocks, with its own temporaries."""
    import numpy as np

    flat = np.ascontiguousarray(x).reshape(-1)
    bits = flat.view(np.uint32)
    out = np.empty(bits.shape, np.uint16) if out is None else out.view(np.uint16)
    u32 = np.uint32
    magic_bits = u32(_MAGIC_BITS)
    magic = magic_bits.view(np.float32)
    rebias = u32((((15 - 127) << 23) + 0xFFF) & 0xFFFFFFFF)  # modulo 2**32, as in C
    smallest_normal, too_big = u32(_SMALLEST_NORMAL), u32((127 + 16) << 23)
    rounds_to_inf, inf = u32(0x477FF000), u32(0x7F800000)  # 65520.0 and infinity

    def share(starts: range) -> int:
        mag_buffer, half_buffer = np.empty(_BLOCK, u32), np.empty(_BLOCK, u32)
        low_buffer, mask_buffer = np.empty(_BLOCK, u32), np.empty(_BLOCK, u32)
        lost = 0
        for start in starts:
            b = bits[start:start + _BLOCK]
            mag, half = mag_buffer[:len(b)], half_buffer[:len(b)]
            np.bitwise_and(b, u32(0x7FFFFFFF), out=mag)
            top, bottom = mag.max(), mag.min()
            if top < smallest_normal:
                np.add(mag.view(np.float32), magic, out=half.view(np.float32))
                np.subtract(half, magic_bits, out=half)
            else:
                np.right_shift(mag, u32(13), out=half)
                np.bitwise_and(half, u32(1), out=half)
                np.add(half, mag, out=half)
                np.add(half, rebias, out=half)
                np.right_shift(half, u32(13), out=half)
                if bottom < smallest_normal:
                    _round_small(mag, half, low_buffer[:len(b)], mask_buffer[:len(b)])
                if top >= too_big:
                    half ^= (half ^ u32(0x7C00)) * (mag >= too_big)
            if top >= rounds_to_inf:
                lost += int(np.count_nonzero((mag >= rounds_to_inf) & (mag < inf)))
            nans = np.flatnonzero(mag > inf) if top > inf else None
            np.right_shift(b, u32(16), out=mag)
            np.bitwise_and(mag, u32(0x8000), out=mag)
            np.bitwise_or(half, mag, out=out[start:start + len(b)], casting="unsafe")
            if nans is not None:  # NaNs keep their payload, as numpy converts them
                out[start + nans] = flat[start + nans].astype(np.float16).view(np.uint16)
        return lost

    starts = range(0, len(bits), _BLOCK)
    workers = min(os.cpu_count() or 1, len(starts))
    if workers > 1:  # numpy releases the GIL: each core takes a contiguous share of blocks
        size = -(-len(starts) // workers)
        with ThreadPoolExecutor(workers) as pool:
            lost = sum(pool.map(share, (starts[i:i + size] for i in range(0, len(starts), size))))
    else:
        lost = share(starts)
    return out.view(np.float16).reshape(x.shape), lost


def _round_small(mag, half, low, mask) -> None:
    """Put the subnormal rounding of the values of ``mag`` (float32 magnitudes, as bits)
    below float16's normal range into ``half``, which holds the normal rounding of every value.
    Weights have a few such values a block: they are gathered and rounded alone; a block with
    many selects arithmetically, with ``low`` and ``mask`` as scratch (a boolean select
    costs several times as much)."""
    import numpy as np

    u32 = np.uint32
    magic_bits = u32(_MAGIC_BITS)
    small = np.flatnonzero(mag < u32(_SMALLEST_NORMAL))
    if len(small) <= len(mag) // 8:
        rounded = mag[small].view(np.float32) + magic_bits.view(np.float32)
        half[small] = rounded.view(u32) - magic_bits
        return
    with np.errstate(over="ignore", invalid="ignore"):  # NaNs and infinities are fixed later
        np.add(mag.view(np.float32), magic_bits.view(np.float32), out=low.view(np.float32))
    np.subtract(low, magic_bits, out=low)
    np.subtract(mag, u32(_SMALLEST_NORMAL), out=mask)  # wraps below zero: the top bit set
    np.right_shift(mask, u32(31), out=mask)
    np.negative(mask, out=mask)  # all ones where the value is small
    np.bitwise_xor(low, half, out=low)
    np.bitwise_and(low, mask, out=low)
    np.bitwise_xor(half, low, out=half)
