"""Streaming tensors out of one checkpoint and into a new V2 bundle, a bounded batch at a time.

Checkpoints of tens of GB exist and machines have less memory than that, so nothing here holds a
whole checkpoint: :func:`read_batches` reads a batch of at most ``max_batch_bytes`` (or one tensor,
if it is larger) with TensorFlow's ``RestoreV2`` op, which reads V1 and V2 checkpoints and sharded
ones alike; :class:`BundleWriter` writes each batch with ``SaveV2`` to a temporary shard and, at the
end, ``MergeV2Checkpoints`` renames the shards' data files into the output and merges their
indexes. Peak memory is the TensorFlow runtime plus one batch.

The output of ``N`` batches has ``N`` data files (``prefix.data-00000-of-0000N`` ...), as a
sharded ``Saver`` writes them; every reader of V2 checkpoints handles that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import CheckpointCorruptError, InternalError, first_line

__all__ = [
    "into_one_shard",
    "DEFAULT_BATCH_BYTES",
    "CopySpec",
    "CopyStats",
    "BundleWriter",
    "plan_batches",
    "read_batches",
    "copy_tensors",
    "progress_bar",
]

#: Default bound of one read/write batch. TensorFlow itself takes about 550 MB of RSS, so
#: 128 MiB keeps a rewrite under 1 GB whatever the checkpoint's size.
DEFAULT_BATCH_BYTES = 128 * 2**20


@dataclass(frozen=True)
class CopySpec:
    """One tensor to copy: its key in the input, its key in the output, and the dtype name to
    cast it to on the way (None: keep its dtype)."""

    source: str
    target: str
    dtype: str | None = None


def plan_batches(sizes: Sequence[tuple[str, int]], max_batch_bytes: int) -> list[list[str]]:
    """Split ``(key, nbytes)`` pairs, in order, into batches of at most ``max_batch_bytes``.

    A tensor larger than the bound is a batch of its own.
    """
    batches: list[list[str]] = []
    current: list[str] = []
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
    """Yield ``[(key, tf.Tensor), ...]`` batches of the tensors ``keys`` of ``checkpoint``.

    Args:
        checkpoint: an opened :class:`~ckptsurgery.formats.checkpoint.Checkpoint`.
        keys: checkpoint keys, read in this order.
        max_batch_bytes: bound of one batch.

    Raises:
        CheckpointCorruptError: TensorFlow cannot read a tensor (truncated or damaged data file).
    """
    import tensorflow as tf

    variables = checkpoint.variables
    dtypes = checkpoint.reader.get_variable_to_dtype_map()
    sizes = [(k, variables[k].nbytes if k in variables else 0) for k in keys]
    for batch in plan_batches(sizes, max_batch_bytes):
        with _eager():
            try:
                values = tf.raw_ops.RestoreV2(
                    prefix=checkpoint.prefix, tensor_names=batch,
                    shape_and_slices=[""] * len(batch), dtypes=[dtypes[k] for k in batch])
            except tf.errors.OpError as e:
                raise CheckpointCorruptError(
                    f"cannot read {_names(batch)} from '{checkpoint.prefix}': "
                    f"{first_line(e)}"
                ) from e
        yield list(zip(batch, values, strict=True))
        del values


class BundleWriter:
    """Write tensors into a new V2 checkpoint at ``prefix``, one batch per ``SaveV2`` call.

    Use as a context manager, or call :meth:`close` once all batches are written; the bundle
    appears at ``prefix`` only then. Temporary shards go to a folder beside ``prefix`` (same
    file system, so merging renames files instead of copying them) and are removed on error.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._shard_dir = prefix + ".shards"
        self._shards: list[str] = []
        os.makedirs(self._shard_dir, exist_ok=True)

    def write(self, batch: Sequence[tuple[str, object]]) -> None:
        """Write one batch of ``(key, tensor or array)`` to a temporary shard."""
        import tensorflow as tf

        if not batch:
            return
        shard = os.path.join(self._shard_dir, f"shard{len(self._shards):05d}")
        with _eager():
            try:
                tf.raw_ops.SaveV2(prefix=shard, tensor_names=[k for k, _ in batch],
                                  shape_and_slices=[""] * len(batch),
                                  tensors=[v for _, v in batch])
            except tf.errors.OpError as e:
                raise InternalError(f"cannot write {_names([k for k, _ in batch])} to "
                                    f"'{self.prefix}': {first_line(e)}") from e
        self._shards.append(shard)

    def close(self) -> None:
        """Merge the batches into ``prefix``: one ``.index`` and one data file, as TensorFlow's
        ``Saver`` writes (``MergeV2Checkpoints`` leaves one data file per batch: they are
        appended into the first and the index entries moved along)."""
        import tensorflow as tf

        try:
            if not self._shards:
                self.write([])
            with _eager():
                tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=self._shards,
                                              destination_prefix=self.prefix,
                                              delete_old_dirs=False)
            into_one_shard(self.prefix)
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove the temporary shards (the output, if merged, stays)."""
        shutil.rmtree(self._shard_dir, ignore_errors=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def into_one_shard(prefix: str) -> None:
    """Turn the V2 bundle at ``prefix`` into a single-shard one, in place: its data files are
    appended, a bounded buffer at a time, into ``.data-00000-of-00001`` and every index entry's
    shard and offset rewritten to match."""
    import glob

    from .bundle import read_table, write_table
    from .protos import message_class

    data = sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))
    if len(data) <= 1:
        return
    starts, total = [], 0
    for path in data:
        starts.append(total)
        total += os.path.getsize(path)
    entries = []
    for key, value in read_table(prefix + ".index"):
        if key == b"":
            header = message_class("tensorflow.BundleHeaderProto").FromString(value)
            header.num_shards = 1
            value = header.SerializeToString()
        else:
            entry = message_class("tensorflow.BundleEntryProto").FromString(value)
            if entry.shard_id or entry.offset or entry.size:
                entry.offset += starts[entry.shard_id]
                entry.shard_id = 0
            value = entry.SerializeToString()
        entries.append((key, value))
    with open(data[0], "ab") as first:
        for path in data[1:]:
            with open(path, "rb") as shard:
                shutil.copyfileobj(shard, first, 16 * 2**20)
            os.remove(path)
    os.replace(data[0], prefix + ".data-00000-of-00001")
    write_table(prefix + ".index", entries)


@dataclass
class CopyStats:
    """What :func:`copy_tensors` did: bytes read, and for casts that overflowed, the number of
    finite values that became infinite, by output key."""

    bytes_read: int = 0
    overflowed: dict[str, int] = field(default_factory=dict)


def copy_tensors(checkpoint, prefix: str, specs: Sequence[CopySpec], *,
                 max_batch_bytes: int = DEFAULT_BATCH_BYTES, progress: bool = True,
                 extra: Iterable[tuple[str, object]] = ()) -> CopyStats:
    """Stream the tensors ``specs`` from ``checkpoint`` into a new bundle at ``prefix``.

    Args:
        checkpoint: the opened input checkpoint.
        prefix: where the bundle goes (normally a temporary prefix of
            :func:`~ckptsurgery.safety.staging.staged_checkpoint`).
        specs: what to copy, renamed and cast as each spec says.
        max_batch_bytes: bound of one batch.
        progress: show a progress bar of bytes done on stderr (only when it is a terminal).
        extra: small ``(key, value)`` tensors to add (bookkeeping such as TF2's object graph).

    Returns:
        A :class:`CopyStats`.
    """
    import tensorflow as tf

    by_source = {s.source: s for s in specs}
    sizes = {k: v.nbytes for k, v in checkpoint.variables.items()}
    stats = CopyStats()
    with progress_bar(sum(sizes.get(k, 0) for k in by_source), "writing", progress) as bar, \
            BundleWriter(prefix) as writer:
        for batch in read_batches(checkpoint, list(by_source), max_batch_bytes=max_batch_bytes):
            out = []
            for key, value in batch:
                spec = by_source[key]
                if spec.dtype is not None and value.dtype.name != spec.dtype:
                    with _eager():
                        cast = tf.cast(value, spec.dtype)
                        lost = _overflow(value, cast)
                    if lost:
                        stats.overflowed[spec.target] = lost
                    value = cast
                out.append((spec.target, value))
            writer.write(out)
            n = sum(sizes.get(k, 0) for k, _ in batch)
            stats.bytes_read += n
            bar.update(n)
            del batch, out
        writer.write(list(extra))
    return stats


def _overflow(value, cast) -> int:
    """How many finite values of ``value`` became infinite in ``cast``. Two reductions answer
    "none" without allocating; only then is a mask of the tensor's size made."""
    import tensorflow as tf

    if not value.dtype.is_floating or value.shape.num_elements() == 0:
        return 0
    limit = float(cast.dtype.max)
    if float(tf.reduce_max(value)) <= limit and float(tf.reduce_min(value)) >= -limit:
        return 0
    lost = tf.math.is_finite(value) & tf.math.is_inf(cast)
    return int(tf.math.count_nonzero(lost, dtype=tf.int32))


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


@contextlib.contextmanager
def _eager():
    """Run the enclosed ops eagerly even inside a caller's ``graph.as_default()`` block."""
    import tensorflow as tf

    with tf.init_scope():
        if not tf.executing_eagerly():
            raise InternalError(
                "ckptsurgery's checkpoint streaming needs TensorFlow's eager mode; do not call "
                "tf.compat.v1.disable_eager_execution() in a program that uses it"
            )
        yield


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
