"""Opening TF1 checkpoints: find their files from whatever path the user gives, read variables.

A checkpoint is named by its *prefix* (``model.ckpt``); the user may give the prefix, any of its
files (``.meta``, ``.index``, ``.data-00000-of-00001``), a folder holding a ``checkpoint`` state
file, or the old single-file (V1) format. :func:`locate` resolves all of these without importing
TensorFlow; :func:`open_checkpoint` adds lazy, per-tensor reading (the safetensors idea: list
cheaply, read one tensor at a time).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..errors import CheckpointCorruptError, CheckpointNotFoundError, first_line
from . import storage

__all__ = [
    "CheckpointFiles",
    "VariableInfo",
    "Checkpoint",
    "locate",
    "open_checkpoint",
    "read_state_file",
    "state_file_checkpoints",
    "strip_suffix",
]

_SHARD_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<i>\d{5})-of-(?P<n>\d{5})$")
_V1_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})$")
_ALL_STATE_RE = re.compile(
    r'^\s*(?P<all>all_)?model_checkpoint_paths?\s*:\s*"(?P<path>(?:[^"\\\n]|\\.)*)"', re.M)
_STATE_RE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"(?P<path>(?:[^"\\\n]|\\.)*)"', re.M)


@dataclass(frozen=True)
class CheckpointFiles:
    """The files that make up one checkpoint.

    ``format`` is ``"V2"`` (``.index`` + ``.data-*`` bundle) or ``"V1"`` (single file, the format
    before TF 0.12). ``data`` lists the V2 data shards in order, or the V1 file(s).
    """

    prefix: str
    format: str
    index: str | None
    data: tuple[str, ...]
    meta: str | None

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file of the checkpoint that exists (inputs to protect from writes)."""
        return tuple(p for p in (self.index, *self.data, self.meta) if p)


@dataclass(frozen=True)
class VariableInfo:
    """One saved tensor: its checkpoint key, shape, dtype name (``float32``) and size in bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


def read_state_file(folder: str) -> str:
    """The prefix a folder's ``checkpoint`` state file names as the latest checkpoint.

    Paths written on another machine (absolute, or relative to another folder) are looked up
    by their base name in ``folder``, as people copy checkpoint folders around.

    Raises:
        CheckpointNotFoundError: no state file, or it names no checkpoint.
    """
    state = storage.join(folder, "checkpoint")
    if not storage.isfile(state):
        found = sorted(_prefixes_in(folder))
        hint = f"; pass one of its checkpoints instead: {', '.join(found[:5])}" if found else ""
        raise CheckpointNotFoundError(
            f"folder '{folder}' has no 'checkpoint' state file{hint}"
        )
    with storage.open_read(state) as f:
        m = _STATE_RE.search(f.read().decode("utf-8", errors="replace"))
    if not m:
        raise CheckpointCorruptError(
            f"state file '{state}' names no model_checkpoint_path; pass the checkpoint prefix instead"
        )
    path = m.group("path").encode().decode("unicode_escape")
    found = _in_folder(folder, path)
    if found is None:
        raise CheckpointNotFoundError(
            f"state file '{state}' names '{path}', which is not in '{folder}'; "
            "pass the checkpoint prefix instead"
        )
    return found


def state_file_checkpoints(folder: str) -> list[str]:
    """The prefixes of every checkpoint a folder's ``checkpoint`` state file lists
    (``all_model_checkpoint_paths``, and the latest) that are in ``folder``, oldest first;
    [] without a state file."""
    state = storage.join(folder, "checkpoint")
    if not storage.isfile(state):
        return []
    with storage.open_read(state) as f:
        text = f.read().decode("utf-8", errors="replace")
    found = []
    matches = sorted(_ALL_STATE_RE.finditer(text), key=lambda m: not m.group("all"))
    for m in matches:  # the list, then the latest if it is not in it
        prefix = _in_folder(folder, m.group("path").encode().decode("unicode_escape"))
        if prefix is not None and prefix not in found:
            found.append(prefix)
    return found


def _in_folder(folder: str, path: str) -> str | None:
    """The prefix a state file's ``path`` names in ``folder``, if a checkpoint is there."""
    local = not storage.is_url(folder)
    candidates = [path if local and os.path.isabs(path) else storage.join(folder, path),
                  storage.join(folder, storage.basename(path.replace("\\", "/")))]
    return next((c for c in candidates if _exists_as_prefix(c)), None)


def locate(path: str) -> CheckpointFiles:
    """Resolve a user's path to the files of one checkpoint, without importing TensorFlow.

    Raises:
        CheckpointNotFoundError: nothing at ``path`` is a checkpoint; the message says what was
            looked for, and whether a file was given where a prefix was meant or vice versa.
    """
    path = storage.normpath(path)
    if storage.isdir(path):
        return locate(read_state_file(path))
    prefix = strip_suffix(path)
    if storage.isfile(prefix + ".index"):
        return _v2_files(prefix)
    if storage.isfile(prefix) and not prefix.endswith(".meta"):
        if _looks_like_v1(prefix):
            return CheckpointFiles(prefix, "V1", None, (prefix,), _meta_of(prefix))
        raise CheckpointCorruptError(
            f"'{prefix}' is neither a V2 checkpoint prefix (no '{prefix}.index') nor a V1 "
            "checkpoint file; pass the checkpoint prefix, e.g. 'model.ckpt'"
        )
    v1_shards = _v1_shards(prefix)
    if v1_shards:
        return CheckpointFiles(prefix, "V1", None, v1_shards, _meta_of(prefix))
    raise CheckpointNotFoundError(_not_found_message(path, prefix))


def strip_suffix(path: str) -> str:
    """The checkpoint prefix a file name implies: ``m.ckpt.index``, ``m.ckpt.meta`` and
    ``m.ckpt.data-00000-of-00001`` all give ``m.ckpt``; anything else is returned as it is."""
    m = _SHARD_RE.match(path)
    if m:
        return m.group("prefix")
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _v2_files(prefix: str) -> CheckpointFiles:
    index = prefix + ".index"
    folder = storage.dirname(prefix)
    base = storage.basename(prefix)
    shards: dict[int, str] = {}
    total = None
    for name in storage.listdir(folder) or _unlisted_shard(prefix):
        m = _SHARD_RE.match(name)
        if m and m.group("prefix") == base:
            shards[int(m.group("i"))] = storage.join(folder, name)
            total = int(m.group("n"))
    if total is None:
        raise CheckpointNotFoundError(
            f"checkpoint '{prefix}' has an index but no data file '{base}.data-00000-of-NNNNN'; "
            "copy the .data-* files next to the .index"
        )
    missing = [f"{base}.data-{i:05d}-of-{total:05d}" for i in range(total) if i not in shards]
    if missing:
        raise CheckpointNotFoundError(
            f"checkpoint '{prefix}' is missing shard(s) {', '.join(missing)}; "
            "copy every .data-* file of the checkpoint"
        )
    return CheckpointFiles(prefix, "V2", index, tuple(shards[i] for i in range(total)),
                           _meta_of(prefix))


def _unlisted_shard(prefix: str) -> list[str]:
    """The single data shard's name, when it exists in a folder that cannot be listed (an
    HTTP server without folder pages)."""
    from .writer import data_path

    path = data_path(prefix)
    return [storage.basename(path)] if storage.is_url(prefix) and storage.isfile(path) else []


def _meta_of(prefix: str) -> str | None:
    meta = prefix + ".meta"
    return meta if storage.isfile(meta) else None


def _looks_like_v1(path: str) -> bool:
    """A V1 checkpoint is an SSTable: it ends with the LevelDB table magic number."""
    try:
        size = storage.size(path)
        if size < 48:
            return False
        with storage.open_read(path) as f:
            f.seek(size - 8)
            return f.read(8) == bytes.fromhex("57fb808b247547db")
    except OSError:
        return False


def _v1_shards(prefix: str) -> tuple[str, ...]:
    folder = storage.dirname(prefix)
    base = storage.basename(prefix)
    found = sorted(
        storage.join(folder, n) for n in storage.listdir(folder)
        if (m := _V1_SHARD_RE.match(n)) and m.group("prefix") == base
    )
    return tuple(found)


def _exists_as_prefix(prefix: str) -> bool:
    return storage.isfile(prefix + ".index") or (storage.isfile(prefix)
                                                 and _looks_like_v1(prefix))


def _prefixes_in(folder: str) -> set[str]:
    return {storage.join(folder, n[: -len(".index")]) for n in storage.listdir(folder)
            if n.endswith(".index")}


def _not_found_message(path: str, prefix: str) -> str:
    folder = storage.dirname(prefix)
    if not storage.is_url(folder) and not os.path.isdir(folder):
        return f"no checkpoint at '{path}': folder '{folder}' does not exist"
    looked = f"looked for '{prefix}.index' (V2) and '{prefix}' (V1)"
    if storage.isfile(prefix + ".meta"):
        return (f"'{prefix}.meta' exists but the checkpoint's weights ('{prefix}.index' and "
                f"'.data-*') do not; {looked}")
    found = sorted(_prefixes_in(folder))
    if found:
        return f"no checkpoint at '{path}' ({looked}); checkpoints in that folder: " + ", ".join(
            found[:5])
    if storage.is_http(path):
        return (f"no checkpoint at '{path}' ({looked}: not there, 404); check the URL; a folder "
                "over HTTP is searched only where the server gives an index page of its files: "
                "else give the checkpoints' prefixes, or the URL of their 'checkpoint' state "
                "file")
    if storage.is_url(path):
        return (f"no checkpoint at '{path}' ({looked}: not there, 404); check the URL, or give "
                "the folder or prefix it names")
    return f"no checkpoint at '{path}' ({looked}); the folder holds none"


@dataclass
class Checkpoint:
    """An opened checkpoint: its files, its variables (listed lazily), its meta-graph if any.

    A V2 bundle is read without TensorFlow (:class:`~ckptsurgery.formats.reader.BundleReader`);
    the old V1 single-file format through TensorFlow's reader, with a warning that says so.
    """

    files: CheckpointFiles

    @property
    def prefix(self) -> str:
        return self.files.prefix

    @cached_property
    def bundle(self):
        """The :class:`~ckptsurgery.formats.reader.BundleReader` of a V2 checkpoint (its files
        checked on opening), None for V1."""
        if self.files.format == "V1":
            return None
        from .reader import BundleReader

        return BundleReader(self.files)

    @cached_property
    def reader(self):
        """TensorFlow's checkpoint reader (``CheckpointReader``), for the V1 format and the
        ``variant`` tensors :class:`~ckptsurgery.formats.reader.BundleReader` does not decode.

        The files are checked in pure Python first (:func:`~ckptsurgery.formats.bundle.check_bundle`):
        TensorFlow aborts the process on some malformed files instead of raising.
        """
        import warnings

        from ..errors import CkptSurgeryWarning
        from .bundle import check_bundle

        check_bundle(self.files)
        if self.files.format == "V1":
            warnings.warn(f"'{self.prefix}' is in the V1 (single-file) format, which ckptsurgery reads "
                          "through TensorFlow (slower; any rewrite, e.g. 'convert --to tf2', makes "
                          "a V2 copy)", CkptSurgeryWarning, stacklevel=2)
        import tensorflow as tf

        try:
            return tf.compat.v1.train.NewCheckpointReader(self.local_files.prefix)
        except Exception as e:  # TF raises its own OpErrors and bare RuntimeErrors here
            raise CheckpointCorruptError(
                f"cannot read checkpoint '{self.files.prefix}': {first_line(e)}"
            ) from e

    @cached_property
    def local_files(self) -> CheckpointFiles:
        """The checkpoint's files on this machine, for TensorFlow, which reads local files
        only: its own files, or for a remote checkpoint copies in a temporary folder that lives
        as long as this object."""
        if not storage.is_url(self.prefix):
            return self.files
        import shutil
        import tempfile
        import weakref

        folder = tempfile.mkdtemp(prefix="ckptsurgery-remote-")
        weakref.finalize(self, shutil.rmtree, folder, True)
        local = storage.copy_to(self.files.paths, folder)
        return CheckpointFiles(
            storage.join(folder, storage.basename(self.prefix)), self.files.format,
            local.get(self.files.index), tuple(local[p] for p in self.files.data),
            local.get(self.files.meta))

    @cached_property
    def variables(self) -> dict[str, VariableInfo]:
        """Every saved tensor by key, sorted by name (the ``_CHECKPOINTABLE_OBJECT_GRAPH``
        bookkeeping entry of TF2 checkpoints is left out)."""
        import math

        if self.bundle is not None:
            from .dtypes import DTYPE_NAMES

            found = {k: (e.shape, e.dtype_name, DTYPE_NAMES.get(e.dtype, ("", 0))[1])
                     for k, e in self.bundle.entries.items()}
        else:
            shapes = self.reader.get_variable_to_shape_map()
            dtypes = self.reader.get_variable_to_dtype_map()
            found = {k: (tuple(int(d) for d in shapes[k]), dtypes[k].name,
                         dtypes[k].size if dtypes[k].name != "string" else 0) for k in shapes}
        return {name: VariableInfo(name, shape, dtype, math.prod(shape) * size)
                for name, (shape, dtype, size) in sorted(found.items())
                if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}

    def has_tensor(self, name: str) -> bool:
        """Whether ``name`` is saved (bookkeeping entries included)."""
        if self.bundle is not None:
            return name in self.bundle.entries
        return bool(self.reader.has_tensor(name))

    def read(self, name: str):
        """One tensor's value as a numpy array (strings as an ``object`` array of bytes)."""
        from ..errors import NotFoundError, nearest

        if not self.has_tensor(name):
            near = nearest(name, self.variables)
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise NotFoundError(f"no variable '{name}' in checkpoint '{self.prefix}'{hint}")
        if self.bundle is not None:
            from .reader import UnreadableDtypeError

            try:
                return self.bundle.read(name)
            except UnreadableDtypeError:
                pass  # TensorFlow decodes variants
        try:
            return self.reader.get_tensor(name)
        except Exception as e:
            raise CheckpointCorruptError(
                f"cannot read variable '{name}' from '{self.prefix}': {first_line(e)}; its data "
                "is damaged: copy the checkpoint again from its source"
            ) from e

    def read_many(self, names: Sequence[str]) -> list:
        """The tensors ``names`` as :meth:`read` gives each, neighbours in a V2 data shard
        read together (:meth:`~ckptsurgery.formats.reader.BundleReader.read_many`)."""
        if self.bundle is None or not all(n in self.bundle.entries for n in names):
            return [self.read(n) for n in names]
        return self.bundle.read_many(names)

    def pieces(self, name: str, max_bytes: int) -> Iterator:
        """The tensor ``name`` flattened in C order, in pieces of at most ``max_bytes`` (a V1
        checkpoint's tensor comes whole); each piece is valid until the next is asked for."""
        if self.bundle is not None and self.has_tensor(name):
            yield from self.bundle.chunks(name, max_bytes)
        else:
            yield self.read(name).reshape(-1)

    @cached_property
    def meta_graph(self):
        """The parsed ``MetaGraphDef`` of ``prefix.meta``, or None when there is no ``.meta``."""
        if not self.files.meta:
            return None
        from .metafile import read_meta_graph

        return read_meta_graph(self.files.meta)

    def with_meta_graph(self, meta) -> Checkpoint:
        """This checkpoint's files with ``meta`` as its graph instead of its ``.meta`` file's
        (a graph built from the user's model code, for one published without a ``.meta``)."""
        other = Checkpoint(self.files)
        other.__dict__["meta_graph"] = meta
        return other

    def drop_meta_graph(self) -> None:
        """Free the parsed ``.meta`` (:attr:`meta_graph` parses it again when asked): on a big
        graph it is 100s of MB that a rewrite holding its own copy no longer needs."""
        self.__dict__.pop("meta_graph", None)


def open_checkpoint(path: str) -> Checkpoint:
    """Locate the checkpoint at ``path`` (see :func:`locate`) and open it for lazy reading.

    Raises:
        CheckpointNotFoundError: see :func:`locate`.
        UserError: one of its files cannot be opened for reading (permission denied).
    """
    files = locate(path)
    for p in files.paths:
        if storage.is_url(p):
            continue  # reading it was already asked for (its size) by locate
        try:
            with open(p, "rb"):
                pass
        except PermissionError as e:
            from ..errors import UserError

            raise UserError(f"cannot read '{p}': permission denied; get read access to the "
                            "checkpoint's files (chmod u+r) or copy them somewhere readable") from e
    return Checkpoint(files)
