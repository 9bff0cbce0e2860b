"""Checking a checkpoint end to end: its files, every tensor's checksum, the ``.meta`` against the data.

:func:`verify_checkpoint` does not stop at the first problem: it returns a :class:`VerifyReport`
that names each one (the variable, the file, what was expected), the way PyTorch's
``load_state_dict`` reports missing and mismatched keys. What is checked:

1. the structure of the files, in pure Python (:func:`~ckptsurgery.formats.bundle.check_bundle`), before
   TensorFlow reads anything;
2. every tensor, read in bounded pieces (:meth:`~ckptsurgery.formats.checkpoint.Checkpoint.pieces`,
   no TensorFlow for V2), its CRC32C recomputed and compared with the one stored in its bundle
   entry; V1 checkpoints are read through TensorFlow and covered by their per-block checksums;
3. the ``.meta``: it parses as a ``MetaGraphDef``, and every tensor its saver restores exists in
   the data with the dtype the restore op reads and the shape of the variable it goes into.

:func:`check_written` is the same check as a gate: ``export_checkpoint`` runs it on every
checkpoint it writes, before moving it into place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CheckpointCorruptError, CkptSurgeryError, InternalError
from ..graphdef.saver import saver_tensors

__all__ = ["Problem", "VerifyReport", "verify_checkpoint", "WrittenMeta", "check_written"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a checkpoint.

    ``kind`` is ``files`` (structure, unreadable), ``data`` (a tensor does not read back, e.g. a
    checksum mismatch), ``meta`` (the ``.meta`` does not parse), ``missing`` (the saver restores
    a key the data lacks), ``shape`` or ``dtype`` (the data does not fit the variable).
    """

    kind: str
    name: str
    message: str

    def __str__(self) -> str:
        if self.kind in ("files", "meta"):  # the message names the file
            return f"{self.kind}: {self.message}"
        return f"{self.kind}: '{self.name}': {self.message}"


@dataclass
class VerifyReport:
    """What :func:`verify_checkpoint` checked and found."""

    prefix: str
    format: str = ""
    files: list[str] = field(default_factory=list)
    tensors_read: int = 0
    bytes_read: int = 0
    meta_checked: bool = False
    restored_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: OK, or how many problems and the first."""
        if self.ok:
            return f"checkpoint '{self.prefix}' is intact"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return (f"checkpoint '{self.prefix}' is broken: {self.problems[0]}{more}; copy it "
                "again from its source, or rewrite it from a good copy")

    def __str__(self) -> str:
        lines = [f"checkpoint: {self.prefix} ({self.format or 'unknown format'}, "
                 f"{len(self.files)} file(s))",
                 f"tensors:    {self.tensors_read} read back, {self.bytes_read:,} bytes"
                 + (", checksums match" if self.tensors_read and not self._has("data") else "")]
        if self.meta_checked and self.tensors_read:
            lines.append(f"meta:       {self.restored_checked} tensor(s) the saver restores "
                         "checked against the data")
        elif self.meta_checked:
            lines.append("meta:       parsed; not checked against the unreadable data")
        elif not self._has("meta"):
            lines.append("meta:       none (no .meta file)")
        if self.ok:
            lines.append("OK")
        else:
            lines.append(f"PROBLEMS ({len(self.problems)}):")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "prefix": self.prefix, "format": self.format, "files": self.files, "ok": self.ok,
            "tensors_read": self.tensors_read, "bytes_read": self.bytes_read,
            "meta_checked": self.meta_checked, "restored_checked": self.restored_checked,
            "problems": [{"kind": p.kind, "name": p.name, "message": p.message}
                         for p in self.problems],
        }

    def _has(self, kind: str) -> bool:
        return any(p.kind == kind for p in self.problems)


def verify_checkpoint(path: str, *, allow_nonfinite: bool = False,
                      written: WrittenMeta | None = None, from_disk: bool = False,
                      read_back: dict | None = None) -> VerifyReport:
    """Check the checkpoint at ``path`` (prefix, one of its files, or a folder): every tensor
    reads back with its checksum, the ``.meta`` fits the data, and (unless ``allow_nonfinite``)
    no floating-point tensor holds NaN or Inf, which reads back fine but ruins a model.

    ``written`` (for :func:`check_written`): what the ``.meta`` was written as; the file must
    hold those bytes, and their saver's restores are checked against the data. ``from_disk``
    (for :func:`check_written` too): read large pieces from the disk, around the page cache
    (:meth:`~ckptsurgery.formats.reader.BundleReader.read_from_disk`). ``read_back`` (with
    ``allow_nonfinite``): ``{name: (offset, size, masked crc32c)}`` of tensors their writer
    read back from the disk and checked; one whose index entry says the same is not read again.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False when anything is wrong.

    Raises:
        CheckpointNotFoundError: there is no checkpoint at ``path`` (nothing to verify).
        UserError: its files cannot be read (permission denied): not a verdict on the data.
    """
    from ..formats.bundle import check_bundle
    from ..formats.checkpoint import open_checkpoint
    from ..formats.stream import small_runs

    ckpt = open_checkpoint(path)
    files = ckpt.files
    report = VerifyReport(files.prefix, files.format, list(files.paths))
    saved = None
    try:
        check_bundle(files, thorough=True)
        saved = ckpt.variables
        if from_disk and ckpt.bundle is not None:
            ckpt.bundle.read_from_disk()
    except CkptSurgeryError as e:
        report.problems.append(Problem("files", files.index or files.prefix, str(e)))
    done = _read_back_already(ckpt, read_back) if allow_nonfinite and saved else set()
    for run in small_runs(saved or {}, [n for n in saved or () if n not in done]):
        values = None
        if len(run) > 1:
            try:
                values = ckpt.read_many(run)
            except CkptSurgeryError:
                pass  # one is damaged: read each, to name every one
        for i, name in enumerate(run):
            _check_tensor(ckpt, name, saved[name], values[i] if values else None,
                          allow_nonfinite, report)
    report.tensors_read += len(done)
    report.bytes_read += sum(saved[n].nbytes for n in done)
    if files.meta:
        _check_meta(ckpt, saved, report, written)
    return report


def _read_back_already(ckpt, read_back: dict | None) -> set[str]:
    """The tensors of ``read_back`` whose index entry is the range and checksum checked."""
    if not read_back or ckpt.bundle is None:
        return set()
    entries = ckpt.bundle.entries
    return {name for name, (offset, size, crc) in read_back.items()
            if name in entries and not entries[name].slices and entries[name].shard_id == 0
            and (entries[name].offset, entries[name].size, entries[name].crc32c)
            == (offset, size, crc)}


def _check_tensor(ckpt, name: str, info, value, allow_nonfinite: bool,
                  report: VerifyReport) -> None:
    """Read tensor ``name`` back (unless its ``value`` was read already) and count it, or
    add what is wrong with it to ``report``."""
    from ..formats.stream import DEFAULT_BATCH_BYTES

    nonfinite = [0, 0, 0]
    try:
        pieces = [value] if value is not None else ckpt.pieces(name, DEFAULT_BATCH_BYTES)
        for piece in pieces:
            if not allow_nonfinite:
                _count_nonfinite(piece, nonfinite)
    except CkptSurgeryError as e:
        report.problems.append(Problem("data", name, _tf_detail(e)))
        return
    if nonfinite[0] or nonfinite[1]:
        report.problems.append(Problem(
            "nonfinite", name, f"{nonfinite[0]} NaN and {nonfinite[1]} Inf of {nonfinite[2]} "
            "values (the model diverged, or a cast overflowed); pass --allow-nonfinite to "
            "accept them"))
    report.tensors_read += 1
    report.bytes_read += info.nbytes


@dataclass(frozen=True)
class WrittenMeta:
    """A ``.meta`` as its writer serialised it: the bytes, and what its saver restores
    (:func:`~ckptsurgery.graphdef.saver.saver_tensors` of the graph serialised). Given to
    :func:`check_written`, the file is compared with the bytes instead of parsed and traced
    again, which on a graph of 100,000s of nodes is most of the read-back."""

    data: bytes
    restored: list[tuple]


def check_written(prefix: str, meta: WrittenMeta | None = None,
                  read_back: dict | None = None) -> None:
    """Verify a checkpoint just written (the check ``staged_checkpoint`` runs before the rename):
    every tensor reads back (large ones from the disk itself where the file system allows;
    not again those the writer read back from the disk, ``read_back``, see
    :func:`verify_checkpoint`), and the ``.meta`` (its bytes when ``meta`` says what they are)
    fits the data.

    Raises:
        CheckpointCorruptError: only its ``.meta`` disagrees with its data, which happens when a
            ``.meta`` carried over from a damaged input says other shapes or dtypes than the data.
        InternalError: the data does not read back (a bug, or a failing disk).
        Either way nothing is moved into place.
    """
    report = verify_checkpoint(prefix, allow_nonfinite=True, written=meta,  # input's values
                               from_disk=True, read_back=read_back)
    if report.ok:
        return
    first = report.problems[0]
    if all(p.kind in _META_VS_DATA for p in report.problems):
        raise CheckpointCorruptError(
            f"the checkpoint written does not verify: its .meta does not fit its data ({first}); "
            "a .meta carried over from the input says so too: check the input with 'ckptsurgery "
            "verify'. Nothing was moved into place")
    raise InternalError(
        f"the checkpoint just written does not verify ({first}); nothing was moved into place: "
        "check the disk, then report this")


_META_VS_DATA = ("shape", "dtype", "missing")


def _count_nonfinite(piece, counts: list[int]) -> None:
    """Add a piece's NaN and Inf counts and its size to ``counts`` (floating pieces only)."""
    import numpy as np

    if piece.dtype.kind != "f" or not piece.size:
        return
    counts[2] += piece.size
    if np.isfinite(piece).all():
        return
    counts[0] += int(np.isnan(piece).sum())
    counts[1] += int(np.isinf(piece).sum())


def _check_meta(ckpt, saved, report: VerifyReport, written: WrittenMeta | None) -> None:
    path = ckpt.files.meta
    if written is not None:
        if not _holds(path, written.data):
            report.problems.append(Problem(
                "meta", path, f"'{path}' does not read back as the bytes written"))
            return
        report.meta_checked = True
        restored = written.restored
    else:
        try:
            meta = ckpt.meta_graph
        except CkptSurgeryError as e:
            report.problems.append(Problem("meta", path, str(e)))
            return
        report.meta_checked = True
        if saved is None:
            return
        try:
            restored = saver_tensors(meta)
        except Exception as e:  # a damaged graph can break the walk anywhere: the finding
            report.problems.append(Problem(
                "meta", path, f"'{path}': its saver cannot be read ({e})"))
            return
    if saved is None:
        return
    for key, dtype, shape in restored:
        report.restored_checked += 1
        info = saved.get(key)
        if info is None:
            report.problems.append(Problem(
                "missing", key, "the .meta's saver restores it, but the data has no such tensor"))
        elif dtype != info.dtype:
            report.problems.append(Problem(
                "dtype", key, f"the .meta's saver reads it as {dtype}, the data holds "
                f"{info.dtype}"))
        elif shape is not None and tuple(shape) != tuple(info.shape):
            report.problems.append(Problem(
                "shape", key, f"the .meta's variable has shape {list(shape)}, the data "
                f"{list(info.shape)}"))


def _holds(path: str, data: bytes, piece: int = 1 << 22) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (read a piece at a time; bytes
    compare with memcmp, a memoryview item by item)."""
    try:
        from ..formats.storage import open_read

        with open_read(path) as f:
            for start in range(0, len(data), piece):
                if f.read(piece) != data[start:start + piece]:
                    return False
            return not f.read(1)
    except OSError:
        return False


def _tf_detail(e: Exception) -> str:
    text = str(e)
    if "Checksum does not match" in text or "do not match their checksum" in text:
        return ("the checksum of its bytes does not match the one stored when it was saved: "
                "the data shard was damaged")
    return text
