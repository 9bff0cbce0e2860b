"""Writing a checkpoint so that it ends up complete and verified, or not at all.

:func:`staged_checkpoint` is the one way every command writes a checkpoint: files go under a
temporary name (:func:`ckptsurgery.formats.output.staged_files`), every tensor is read back
and the ``.meta`` checked against the data (:func:`~ckptsurgery.safety.verify.check_written`),
and only then are they renamed into place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..formats.output import staged_files

if TYPE_CHECKING:
    from .verify import WrittenMeta

__all__ = ["staged_checkpoint"]


@contextlib.contextmanager
def staged_checkpoint(prefix: str, *, verify: Callable[[str], None] | None = None,
                      write_state: bool = True, meta: WrittenMeta | None = None,
                      read_back: dict | None = None) -> Iterator[str]:
    """Yield a temporary prefix to write the checkpoint at; verify it, then move it to ``prefix``.

    Args:
        prefix: the final prefix, already checked by
            :func:`~ckptsurgery.formats.output.check_output_prefix`.
        verify: an extra check of the written files (raising aborts); the full read-back
            :func:`~ckptsurgery.safety.verify.check_written` always runs first.
        write_state: write a ``checkpoint`` state file naming the output, unless the folder's
            state file names another checkpoint.
        meta: a :class:`~ckptsurgery.safety.verify.WrittenMeta` when the caller writes the
            ``.meta`` from bytes it holds: the read-back compares the file with them.
        read_back: a dict the writing fills with the tensors it already read back from the
            disk as it wrote them (``copy_tensors(read_back=...)``): the read-back skips those
            whose index entries are what was checked.
    """
    from . import verify as verification  # looked up at call time: TensorFlow loads lazily

    def check(tmp: str) -> None:
        verification.check_written(tmp, meta, read_back)
        if verify is not None:
            verify(tmp)

    with staged_files(prefix, check=check, write_state=write_state) as tmp:
        yield tmp
