"""The error types of ckptsurgery.

Two families: :class:`UserError` (the input or the request is wrong; the message says what to
do; the CLI exits 2) and :class:`InternalError` (a bug or an environment failure; exit 1).
Every message names the thing it is about and, where there is one, the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "exit_status",
    "CkptSurgeryWarning",
    "CkptSurgeryError",
    "UserError",
    "InternalError",
    "CheckpointNotFoundError",
    "CheckpointCorruptError",
    "GraphImportError",
    "NotFoundError",
    "SelectionError",
    "RestoreError",
    "OutputError",
    "DataError",
    "UnsafeGraphError",
    "nearest",
    "first_line",
    "some",
]


class CkptSurgeryWarning(UserWarning):
    """Something the user asked for works, but probably not as they meant (the CLI prints it
    as one ``warning:`` line)."""


class CkptSurgeryError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class UserError(CkptSurgeryError):
    """The user's input or request is wrong; the message says what to change."""

    exit_code = 2


class InternalError(CkptSurgeryError):
    """Something failed that the user could not have prevented (a bug, a crash of TensorFlow)."""

    exit_code = 1


class CheckpointNotFoundError(UserError):
    """No checkpoint, or a part of one (shard, index, state file), is where it was looked for."""


class CheckpointCorruptError(UserError):
    """A checkpoint file exists but cannot be read (truncated, bit-flipped, wrong kind of file)."""


class GraphImportError(UserError):
    """A ``.meta`` cannot be imported by this TensorFlow (unregistered ops, bad proto)."""


class NotFoundError(UserError):
    """A tensor, op, collection or variable named by the user does not exist."""


class SelectionError(UserError):
    """A selection (scope regex, variable list) matches nothing or is ambiguous."""


class RestoreError(UserError):
    """A strict restore found missing, unexpected or mismatched variables."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class OutputError(UserError):
    """An output path is unusable: it exists (no ``--force``), or it is an input or inside one."""


class DataError(UserError):
    """Training data is missing, malformed or does not fit the graph's inputs."""


class UnsafeGraphError(UserError):
    """A graph holds ops that touch files, the network or load code, and was not allowed to run."""


def nearest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name``: close spellings first, then names containing it."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if len(close) < n:
        close += [c for c in pool if name in c and c not in close][: n - len(close)]
    return close


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, for one-line errors (TensorFlow's ``OpError``
    keeps its text in ``.message``; an empty message gives the exception's type)."""
    text = str(getattr(e, "message", None) or e).strip() or type(e).__name__
    return text.splitlines()[0]


def some(names: Iterable[str], limit: int = 4) -> str:
    """``names`` for a one-line message: all of them up to ``limit``, else the first
    ``limit`` and how many more (``a, b, c, d and 36 more``)."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def exit_status(e: Exception) -> tuple[int, str]:
    """The exit code and the one-line message (``error: ...``) of an error that ends a
    command: a :class:`UserError` is the user's to fix (2), anything else is ours (1)."""
    if isinstance(e, CkptSurgeryError):
        label = "error" if isinstance(e, UserError) else "internal error"
        return e.exit_code, f"{label}: {' '.join(str(e).splitlines())}"
    return 1, (f"internal error: {type(e).__name__}: {first_line(e)} "
               "(rerun with --debug for the traceback)")
