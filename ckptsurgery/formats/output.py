"""Writing outputs safely: checked destinations, temporary names, rename into place.

Every output is written under a temporary name in the destination folder, flushed, checked by
the caller's check (checkpoints: :mod:`ckptsurgery.safety.staging` reads them back whole), then
renamed into place; a checkpoint's ``.index`` goes after its data and ``.meta``, and the
``checkpoint`` state file last. A process killed at any moment leaves no output or a complete
one. An existing output is replaced only with ``force``; an output that is one of the inputs
never. Imports only :mod:`ckptsurgery.errors` and :mod:`.checkpoint`; no TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator

from ..errors import OutputError
from . import storage
from .checkpoint import strip_suffix

__all__ = ["check_output_prefix", "check_output_file", "check_output_path", "staged_files",
           "staged_path", "atomic_file", "write_error"]

# Why a write fails, as the OS (errno) or TensorFlow (message text) says it, and the fix.
_WRITE_FAILURES = (
    ((errno.ENOSPC, "No space left on device"),
     "no space left on the device; free some space or write the output to another disk"),
    ((errno.EDQUOT, "Disk quota exceeded"),
     "disk quota exceeded; free some space or write the output to another disk"),
    ((errno.EACCES, "Permission denied"),
     "permission denied; choose an output folder you can write to"),
    ((errno.EPERM, "Operation not permitted"),
     "permission denied; choose an output folder you can write to"),
    ((errno.EROFS, "Read-only file system"),
     "the file system is read-only; choose an output folder on a writable disk"),
)


_CHECKPOINT_FILE_RE = re.compile(r"\.(index|meta)$|\.data-\d{5}-of-\d{5}$")


def _existing_outputs(prefix: str) -> list[str]:
    """The files of a checkpoint at ``prefix``. In a remote folder only an ``.index`` makes
    one: a data shard or ``.meta`` alone is what an interrupted write leaves, to be replaced."""
    if storage.is_url(prefix):
        return [prefix + ".index"] if storage.isfile(prefix + ".index") else []
    found = [p for p in (prefix + ".index", prefix + ".meta", prefix) if os.path.isfile(p)]
    return found + sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))


def _real(path: str) -> str:
    return path if storage.is_url(path) else os.path.realpath(path)


def _check_not_input(path: str, inputs: Iterable[str]) -> None:
    if _real(path) in {_real(i) for i in inputs}:
        raise OutputError(f"output '{path}' is the input '{path}'; choose another output path")


def check_output_prefix(prefix: str, *, inputs: Iterable[str] = (), force: bool = False) -> str:
    """Check that a checkpoint may be written at ``prefix``; create its folder if needed.

    Args:
        prefix: the output checkpoint prefix (``out/model.ckpt``).
        inputs: paths of the input files, which the output must not be or overwrite.
        force: allow replacing an existing checkpoint at ``prefix``.

    Returns:
        The normalised prefix.

    Raises:
        OutputError: ``prefix`` is a folder, names an input, or exists and ``force`` is False.
    """
    prefix = storage.normpath(prefix)
    remote = storage.is_url(prefix)
    if remote:
        storage.check_writable(prefix)
    elif os.path.isdir(prefix):
        raise OutputError(
            f"output '{prefix}' is a folder; give a checkpoint prefix such as '{prefix}/model.ckpt'"
        )
    if _CHECKPOINT_FILE_RE.search(os.path.basename(prefix)):
        raise OutputError(f"output '{prefix}' is the name of a checkpoint file, not a prefix; "
                          f"did you mean '{strip_suffix(prefix)}'?")
    inputs = list(inputs)
    input_prefixes = {_real(strip_suffix(p)) for p in inputs}
    if _real(prefix) in input_prefixes:
        raise OutputError(f"output '{prefix}' is the input checkpoint; choose another output prefix")
    for path in inputs:
        if _real(prefix).startswith(_real(path) + ("/" if remote else os.sep)):
            raise OutputError(f"output '{prefix}' is inside the input '{path}'; choose an output "
                              "path outside the input checkpoint")
    for path in _existing_outputs(prefix):
        _check_not_input(path, inputs)
    existing = _existing_outputs(prefix)
    if existing and not force:
        raise OutputError(
            f"output '{prefix}' exists ({storage.basename(existing[0])}); pass --force to replace it"
        )
    if remote:
        return prefix
    folder = os.path.dirname(prefix) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{folder}': {e.strerror}") from e
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write to output folder '{folder}': permission denied")
    return prefix


def check_output_file(path: str, *, inputs: Iterable[str] = (), force: bool = False) -> str:
    """Like :func:`check_output_prefix`, for a single-file output (``.npz``, ``.h5``, report)."""
    path = storage.normpath(path)
    if storage.is_url(path):
        storage.check_writable(path)
    elif os.path.isdir(path):
        raise OutputError(f"output '{path}' is a folder; give a file name")
    _check_not_input(path, inputs)
    return _free_output(path, force, storage.isfile)


def _make_parent(path: str) -> None:
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{folder}': {e.strerror}") from e


def check_output_path(path: str, *, inputs: Iterable[str] = (), force: bool = False) -> str:
    """Like :func:`check_output_file`, for an output that is a file or a folder (a
    SavedModel): an existing one of either kind is replaced only with ``force``. Such an
    output is written on a local disk only (a folder has no atomic upload)."""
    if storage.is_url(path):
        raise OutputError(f"'{path}': this output (a folder, or a file staged as one) is "
                          "written to a local path only; write it locally, then copy it up "
                          "(gcloud storage cp -r, aws s3 cp --recursive)")
    path = os.path.normpath(os.path.expanduser(path))
    for source in inputs:
        real = os.path.realpath(source)
        if os.path.realpath(path) == real or real.startswith(os.path.realpath(path) + os.sep):
            raise OutputError(f"output '{path}' is or holds the input '{source}'; choose "
                              "another output path")
    return _free_output(path, force, os.path.lexists)


def _free_output(path: str, force: bool, exists: Callable[[str], bool]) -> str:
    """``path`` once it may be written: not existing (unless ``force``), its folder made."""
    if exists(path) and not force:
        raise OutputError(f"output '{path}' exists; pass --force to replace it")
    if storage.is_url(path):
        return path
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{folder}': {e.strerror}") from e
    return path


@contextlib.contextmanager
def staged_path(path: str, *, check: Callable[[str], None]) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write a file or a folder at; run ``check`` on
    it, then rename it into place (an existing output, checked by :func:`check_output_path`,
    is replaced). Nothing is left behind when writing or checking fails."""
    folder, base, tmpdir = _temp_dir(path)
    try:
        tmp = os.path.join(tmpdir, base)
        yield tmp
        check(tmp)
        for root, _, files in os.walk(tmp) if os.path.isdir(tmp) else ():
            for name in files:
                _fsync(os.path.join(root, name))
        if os.path.isfile(tmp):
            _fsync(tmp)
        if os.path.isdir(path) and not os.path.islink(path):
            old = tempfile.mkdtemp(prefix=_temp_prefix(base), dir=folder)
            os.replace(path, os.path.join(old, base))
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        for entry in os.listdir(folder):
            if entry.startswith(_temp_prefix(base)):
                shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


@contextlib.contextmanager
def staged_files(prefix: str, *, check: Callable[[str], None],
                 write_state: bool = True) -> Iterator[str]:
    """Yield a temporary prefix in ``prefix``'s folder; on success move its files into place.

    The mechanism under :func:`ckptsurgery.safety.staging.staged_checkpoint`, which supplies
    the verification; use that one to write checkpoints.

    Args:
        prefix: the final prefix, already checked by :func:`check_output_prefix`.
        check: called with the temporary prefix before anything is moved; raising aborts.
        write_state: write a ``checkpoint`` state file naming the output, unless the folder's
            state file names another checkpoint (an input's folder is never changed that way).
    """
    if storage.is_url(prefix):
        with _staged_remote(prefix, check=check, write_state=write_state) as tmp:
            yield tmp
        return
    folder, base, tmpdir = _temp_dir(prefix)
    try:
        tmp_prefix = os.path.join(tmpdir, base)
        yield tmp_prefix
        check(tmp_prefix)
        names = sorted(os.listdir(tmpdir))
        for name in names:
            _fsync(os.path.join(tmpdir, name))
        for stale in glob.glob(glob.escape(prefix) + ".data-*-of-*"):
            if os.path.basename(stale) not in names:
                os.remove(stale)
        # An old checkpoint at ``prefix`` stops being one before any of its files is replaced:
        # a kill from here on leaves no output, never old and new files mixed.
        if os.path.exists(prefix + ".index"):
            os.remove(prefix + ".index")
            _fsync_dir(folder)
        last = [base + ".index"]
        for name in [n for n in names if n not in last] + [n for n in last if n in names]:
            os.replace(os.path.join(tmpdir, name), os.path.join(folder, name))
        if write_state:
            _write_state_file(folder, base)
        _fsync_dir(folder)
    except OSError as e:
        raise write_error(prefix, e) from e
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _temp_dir(path: str) -> tuple[str, str, str]:
    """``(folder, base name, a new temporary folder beside path)``, abandoned ones removed."""
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    try:
        _remove_abandoned(folder, base)
        return folder, base, tempfile.mkdtemp(prefix=_temp_prefix(base), dir=folder)
    except OSError as e:
        raise write_error(path, e) from e


@contextlib.contextmanager
def _staged_remote(prefix: str, *, check: Callable[[str], None],
                   write_state: bool) -> Iterator[str]:
    """:func:`staged_files` in an object store, which has no rename: the data shard is
    streamed to its final name (an object appears only when its upload completes; a data
    shard alone is no checkpoint), the ``.meta`` and ``.index`` are held back in memory
    (:func:`~ckptsurgery.formats.storage.held_back`) while ``check`` reads the checkpoint
    back; then the ``.meta``, the ``.index`` (from then on it is a checkpoint) and the
    ``checkpoint`` state file are uploaded in that order, each read back and compared. On any
    failure what was uploaded is removed, the ``.index`` first."""
    from .writer import data_path

    index, meta, data = prefix + ".index", prefix + ".meta", data_path(prefix)
    folder, base = storage.dirname(prefix), storage.basename(prefix)
    # An old checkpoint at ``prefix`` stops being one before any of its files is replaced.
    storage.remove(index)
    done = False
    try:
        with storage.held_back([meta, index]) as held:
            yield prefix
            check(prefix)
            for stale in storage.listdir(folder):
                if stale.startswith(base + ".data-") and stale != storage.basename(data):
                    storage.remove(storage.join(folder, stale))
            held.release(meta)
            held.release(index)
        if write_state:
            _write_state_file(folder, base)
        done = True
    finally:
        if not done:
            for path in (index, meta, data):
                with contextlib.suppress(Exception):  # the server may be what failed
                    storage.remove(path)


def _write_state_file(folder: str, base: str) -> None:
    state = storage.join(folder, "checkpoint")
    if storage.isfile(state):
        with storage.open_read(state) as f:
            text = f.read().decode("utf-8", errors="replace")
        if f'"{base}"' not in text:
            return
    text = f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n'
    if storage.is_url(state):  # an object is replaced whole, never seen half-written
        storage.write_bytes(state, text.encode())
        return
    with atomic_file(state) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``. For a URL
    the temporary file is local, and streamed up on success (an object appears whole)."""
    if storage.is_url(path):
        with storage.local_stand_in(path) as tmp:
            yield tmp
        return
    folder = os.path.dirname(path) or "."
    _remove_abandoned(folder, os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(os.path.basename(path)), dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_error(path: str, error: BaseException) -> OutputError | None:
    """The :class:`OutputError` for a failed write of output ``path``, naming the fix for the
    usual causes (no space, quota, permissions, read-only disk).

    ``error`` is an ``OSError`` or a TensorFlow ``OpError`` (which has only the message text).
    Returns None for a TensorFlow error that is not about the disk (the caller re-raises it).
    """
    code = getattr(error, "errno", None)
    text = getattr(error, "message", None) or str(error)
    for (number, words), fix in _WRITE_FAILURES:
        if code == number or words in text:
            return OutputError(f"cannot write output '{path}': {fix}")
    if isinstance(error, OSError):
        return OutputError(f"cannot write output '{path}': {error.strerror or error}")
    return None


def _temp_prefix(name: str) -> str:
    """Temporary names carry the writer's pid, so that a later write can tell an abandoned one."""
    return f".{name}.tmp-{os.getpid()}-"


def _remove_abandoned(folder: str, name: str) -> None:
    """Remove temporary outputs for ``name`` left by writers that were killed (pid gone)."""
    pattern = re.compile(re.escape(f".{name}.tmp-") + r"(\d+)-")
    for entry in os.listdir(folder):
        m = pattern.match(entry)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(folder, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
