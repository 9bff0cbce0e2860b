"""Finding many checkpoints: what a batch command is given, turned into checkpoint prefixes.

A source is a checkpoint (prefix or one of its files), a folder (searched recursively: every
``.index`` is a V2 checkpoint, every ``checkpoint`` state file adds the checkpoints it lists,
V1 ones included), a ``checkpoint`` state file (all its ``all_model_checkpoint_paths``), or a
glob of any of these; local or remote (:mod:`.storage`). Each checkpoint found keeps its path
relative to the source it came from, which an output folder mirrors.

Imports :mod:`.storage` and :mod:`.checkpoint`; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import CheckpointNotFoundError
from . import storage
from .checkpoint import locate, state_file_checkpoints, strip_suffix

__all__ = ["Found", "find_checkpoints", "is_many"]

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Found:
    """A checkpoint found: its prefix, and the prefix relative to the source it came from
    (``run1/model.ckpt-300``), which ``--out-dir`` mirrors."""

    prefix: str
    relative: str


def is_many(sources: Sequence[str]) -> bool:
    """Whether ``sources`` name a batch rather than one checkpoint: several, a glob, a state
    file, or a folder without a ``checkpoint`` state file."""
    if len(sources) != 1:
        return True
    source = storage.normpath(sources[0])
    if any(c in source for c in _GLOB_CHARS) or storage.basename(source) == "checkpoint":
        return True
    return storage.isdir(source) and not storage.isfile(storage.join(source, "checkpoint"))


def find_checkpoints(sources: Iterable[str]) -> list[Found]:
    """Every checkpoint in ``sources``, each once, in the order found (sorted within a folder).

    Raises:
        CheckpointNotFoundError: a source holds no checkpoint (named, with what was looked for).
    """
    found: dict[str, Found] = {}
    for source in sources:
        source = storage.normpath(source)
        before = len(found)
        for prefix, root in _expand(source):
            if prefix not in found:
                found[prefix] = Found(prefix, _relative(prefix, root))
        if len(found) == before:
            raise CheckpointNotFoundError(
                f"no checkpoint in '{source}' (looked for .index files and 'checkpoint' state "
                "files, recursively); check the path")
    return list(found.values())


def _expand(source: str) -> Iterable[tuple[str, str]]:
    """``(prefix, root)`` pairs of the checkpoints in one source."""
    if any(c in source for c in _GLOB_CHARS):
        root = _glob_root(source)
        for match in storage.glob_paths(source):
            yield from ((p, root) for p, _ in _expand(match))
        return
    if storage.basename(source) == "checkpoint" and storage.isfile(source):
        folder = storage.dirname(source)
        yield from ((p, folder) for p in state_file_checkpoints(folder))
        return
    if storage.isdir(source):
        yield from ((p, source) for p in _in_tree(source))
        return
    try:
        prefix = locate(source).prefix
    except CheckpointNotFoundError:
        return
    yield prefix, storage.dirname(prefix)


def _in_tree(folder: str) -> list[str]:
    """The checkpoints under ``folder``: ``.index`` files, and what state files list."""
    prefixes, states = [], []
    for path in storage.walk_files(folder):
        name = storage.basename(path)
        if name.endswith(".index"):
            prefixes.append(strip_suffix(path))
        elif name == "checkpoint":
            states.append(storage.dirname(path))
    for state_folder in states:
        prefixes += [p for p in state_file_checkpoints(state_folder) if p not in prefixes]
    return sorted(prefixes)


def _glob_root(pattern: str) -> str:
    """The folder before the first part of ``pattern`` with a glob character."""
    head = pattern
    while any(c in head for c in _GLOB_CHARS):
        head = storage.dirname(head)
    return head


def _relative(prefix: str, root: str) -> str:
    root = root.rstrip("/")
    if prefix.startswith(root + "/"):
        return prefix[len(root) + 1:]
    return storage.basename(prefix)
