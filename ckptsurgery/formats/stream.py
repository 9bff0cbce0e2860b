"""Streaming tensors out of one checkpoint and into a new V2 bundle, with bounded memory.

Checkpoints of tens of GB exist and machines have less memory than that, so nothing here holds a
whole checkpoint. :func:`copy_tensors` reads each tensor in pieces of at most
``max_batch_bytes`` (:meth:`~ckptsurgery.formats.checkpoint.Checkpoint.pieces`), casts a piece
with numpy when asked and appends it to the output's single data shard
(:class:`~ckptsurgery.formats.writer.BundleFileWriter`), so peak memory is about one piece and
its cast copy, whatever the size of the largest tensor. :func:`read_batches` gives whole tensors
a bounded batch at a time, for writers that need a tensor whole. None of this imports
TensorFlow for V2 checkpoints.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .dtypes import DTYPE_NAMES

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "CopySpec",
    "CopyStats",
    "plan_batches",
    "read_batches",
    "small_runs",
    "copy_tensors",
    "progress_bar",
]

#: Default bound of one read piece or batch. TensorFlow is not loaded, so a rewrite's peak
#: memory is the Python process (about 100 MB with numpy and protobuf) plus about twice this.
DEFAULT_BATCH_BYTES = 128 * 2**20


@dataclass(frozen=True)
class CopySpec:
    """One tensor to copy: its key in the input, its key in the output, and the dtype name to
    cast it to on the way (None: keep its dtype)."""

    source: str
    target: str
    dtype: str | None = None


def plan_batches(sizes: Sequence[tuple], max_batch_bytes: int) -> list[list]:
    """Split ``(key, nbytes)`` pairs, in order, into batches of at most ``max_batch_bytes``.

    A tensor larger than the bound is a batch of its own.
    """
    batches: list[list] = []
    current: list = []
    used = 0
    for key, nbytes in sizes:
        if current and used + nbytes > max_batch_bytes:
            batches.append(current)
            current, used = [], 0
        current.append(key)
        used += nbytes
    if current:
        batches.append(current)
    return batches


def read_batches(checkpoint, keys: Sequence[str], *,
                 max_batch_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[list[tuple[str, object]]]:
    """Yield ``[(key, numpy array), ...]`` batches of the whole tensors ``keys`` of
    ``checkpoint`` (an opened :class:`~ckptsurgery.formats.checkpoint.Checkpoint`), in order.

    Raises:
        CheckpointCorruptError: a tensor's bytes are damaged or cut short.
    """
    variables = checkpoint.variables
    sizes = [(k, variables[k].nbytes if k in variables else 0) for k in keys]
    for batch in plan_batches(sizes, max_batch_bytes):
        yield list(zip(batch, checkpoint.read_many(batch), strict=True))


def small_runs(variables: dict, names: Sequence[str]) -> Iterator[list[str]]:
    """``names`` in order, in lists: neighbours that are small fixed-width tensors together
    (up to ``_SMALL_RUN`` bytes; :meth:`~ckptsurgery.formats.checkpoint.Checkpoint.read_many`
    reads them with few system calls), every other one alone."""
    yield from (run for _, run in _runs(names, lambda n: _is_small(variables[n]) or None,
                                         lambda n: variables[n].nbytes, _SMALL_RUN))


def _runs(items: Sequence, kind: Callable, nbytes: Callable, limit: int) -> Iterator[tuple]:
    """``(kind, items)`` in order: neighbours of one kind (not None) together, up to ``limit``
    bytes a run; an item of kind None alone."""
    for k, run in itertools.groupby(items, kind):
        if k is None:
            yield from ((None, [item]) for item in run)
            continue
        for batch in plan_batches([(item, nbytes(item)) for item in run], limit):
            yield k, batch


def _is_small(info) -> bool:
    return info.nbytes <= _SMALL and info.dtype in _FIXED_WIDTH


@dataclass
class CopyStats:
    """What :func:`copy_tensors` did: tensor bytes read and written (a cast changes the size),
    and for casts that overflowed, the number of finite values that became infinite, by output
    key."""

    bytes_read: int = 0
    overflowed: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0


def copy_tensors(checkpoint, prefix: str, specs: Sequence[CopySpec], *,
                 max_batch_bytes: int = DEFAULT_BATCH_BYTES, progress: bool = True,
                 extra: Iterable[tuple[str, object]] = (), fsync: bool = True,
                 read_back: dict | None = None) -> CopyStats:
    """Stream the tensors ``specs`` from ``checkpoint`` into a new bundle at ``prefix``.

    Args:
        checkpoint: the opened input checkpoint.
        prefix: where the bundle goes (normally a temporary prefix of
            :func:`~ckptsurgery.safety.staging.staged_checkpoint`).
        specs: what to copy, renamed and cast as each spec says.
        max_batch_bytes: bound of one piece read.
        progress: show a progress bar of bytes done on stderr (only when it is a terminal).
        extra: small ``(key, value)`` tensors to add (bookkeeping such as TF2's object graph).
        fsync: fsync the data when done; False when the caller fsyncs the files later
            (:func:`~ckptsurgery.safety.staging.staged_checkpoint`, after its read-back).
        read_back: a dict to fill with the large tensors read back from the disk while the
            next ones were written (see :class:`~ckptsurgery.formats.writer.BundleFileWriter`),
            for :func:`~ckptsurgery.safety.staging.staged_checkpoint`'s read-back to skip.

    Returns:
        A :class:`CopyStats`.
    """
    from .writer import BundleFileWriter

    variables = checkpoint.variables
    stats = CopyStats()

    def small(spec: CopySpec):
        """The (from, to) dtypes of a small fixed-width tensor, which is read, cast and written
        with its neighbours; else None."""
        info = variables[spec.source]
        return (info.dtype, spec.dtype or info.dtype) if _is_small(info) else None

    buffers = _Buffers()
    with progress_bar(sum(variables[s.source].nbytes for s in specs), "writing",
                      progress) as bar, BundleFileWriter(prefix, fsync=fsync,
                                                         read_back=read_back is not None) as writer:
        for kind, run in _runs(specs, small, lambda s: variables[s.source].nbytes,
                               min(max_batch_bytes, _SMALL_RUN)):
            if kind is None:
                _copy_one(checkpoint, run[0], writer, stats, bar, max_batch_bytes, buffers)
            else:
                _copy_together(checkpoint, run, writer, stats, bar)
        for key, value in extra:
            writer.add(key, value)
    if read_back is not None:
        read_back.update(writer.read_back)
    return stats


#: Tensors up to this size are read, cast and written in runs of up to ``_SMALL_RUN`` bytes: a
#: read, a cast and a write each have a fixed cost of microseconds, which on 10,000s of small
#: tensors is most of a rewrite.
_SMALL = 2**20
_FIXED_WIDTH = frozenset(name for name, width in DTYPE_NAMES.values() if width)
_SMALL_RUN = 16 * 2**20


def _copy_one(checkpoint, spec: CopySpec, writer, stats: CopyStats, bar,
              max_batch_bytes: int, buffers: _Buffers) -> None:
    """Copy one tensor, cast as ``spec`` says, in pieces of at most ``max_batch_bytes``, cast
    into ``buffers``."""
    from .dtypes import enum_of, numpy_dtype

    info = checkpoint.variables[spec.source]
    if info.dtype == "string":
        writer.add(spec.target, checkpoint.read(spec.source))
        return
    enum = enum_of(spec.dtype or info.dtype)
    target = numpy_dtype(enum)
    crc = None
    if spec.dtype in (None, info.dtype) or info.nbytes <= max_batch_bytes // 2:
        pieces = _converted(checkpoint.pieces(spec.source, max_batch_bytes), target,
                            spec.target, stats, bar, buffers)
        if spec.dtype in (None, info.dtype) and checkpoint.bundle is not None \
                and checkpoint.has_tensor(spec.source):
            # copied unchanged: the input's checksum, which its reader checks, is the output's
            crc = checkpoint.bundle.stored_crc(spec.source)
    else:  # a big cast: the next piece is read and cast while this one is written
        pieces = _ahead(_converted(checkpoint.pieces(spec.source, max_batch_bytes // 2),
                                   target, spec.target, stats, bar, buffers))
    writer.add_pieces(spec.target, target, info.shape, pieces, enum=enum, crc=crc)


def _copy_together(checkpoint, specs: Sequence[CopySpec], writer, stats: CopyStats,
                   bar) -> None:
    """Read the small tensors ``specs`` (one source and one target dtype) together, cast them
    as one array, and write them with one write."""
    import numpy as np

    from .cast import overflowed
    from .dtypes import enum_of, numpy_dtype

    variables = checkpoint.variables
    values = [v.reshape(-1) for v in checkpoint.read_many([s.source for s in specs])]
    enum = enum_of(specs[0].dtype or variables[specs[0].source].dtype)
    target = numpy_dtype(enum)
    joined = np.concatenate(values) if len(values) > 1 else values[0]
    out, any_lost = _convert(joined, target, stats, bar)
    if any_lost:  # counted by tensor
        end = 0
        for spec, value in zip(specs, values, strict=True):
            end += value.size
            lost = overflowed(value, out[end - value.size:end])
            if lost:
                stats.overflowed[spec.target] = lost
    writer.add_joined(target, [(s.target, variables[s.source].shape) for s in specs], out,
                      enum=enum)


def _ahead(items: Iterator) -> Iterator:
    """The items of ``items``, each next one made in a thread while the caller uses the
    current one (two at a time, never more)."""
    from concurrent.futures import ThreadPoolExecutor

    end = object()
    with ThreadPoolExecutor(1) as pool:
        coming = pool.submit(next, items, end)
        while (item := coming.result()) is not end:
            coming = pool.submit(next, items, end)
            yield item


class _Buffers:
    """Two flat arrays, handed out in turn, that streamed casts write into: a piece is written
    before the piece after the next is made (:func:`_ahead` makes one ahead, never more), and
    fresh memory costs more to clear than the cast that fills it."""

    def __init__(self):
        self._arrays: list = [None, None]
        self._turn = 0

    def take(self, dtype, size: int):
        """The next array, as ``size`` values of ``dtype``; valid until the one after is taken."""
        import numpy as np

        dtype = np.dtype(dtype)
        self._turn ^= 1
        array = self._arrays[self._turn]
        if array is None or array.nbytes < size * dtype.itemsize:
            array = self._arrays[self._turn] = np.empty(size * dtype.itemsize, np.uint8)
        return array[:size * dtype.itemsize].view(dtype)


def _converted(pieces, target, key: str, stats: CopyStats, bar, buffers: _Buffers):
    """``pieces`` cast to ``target`` (:func:`_convert`) into ``buffers`` as they go by; what
    overflows is counted under ``key``."""
    for piece in pieces:
        out, lost = _convert(piece, target, stats, bar,
                             None if piece.dtype == target else buffers.take(target, piece.size))
        if lost:
            stats.overflowed[key] = stats.overflowed.get(key, 0) + lost
        yield out


def _convert(piece, target, stats: CopyStats, bar, out=None) -> tuple:
    """``(piece cast to target, how many finite values became infinite)``, cast into ``out``
    when given, its bytes counted into ``stats`` and ``bar``."""
    from .cast import cast_counted

    out, lost = (piece, 0) if piece.dtype == target else cast_counted(piece, target, out)
    stats.bytes_read += piece.nbytes
    stats.bytes_written += out.nbytes
    bar.update(piece.nbytes)
    return out, lost


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar of bytes on stderr, shown only when ``enabled`` and stderr is a terminal."""
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr, disable=not show, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
