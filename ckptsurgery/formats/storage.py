"""Where a file lives: a local path, or a URL that ``fsspec`` reads (``s3://``, ``gs://``,
``http(s)://``, ``memory://``, ...).

The one home of every file-system question the TensorFlow-free commands ask (does it exist,
how big, what is in this folder, read these bytes, write this file, remove it), so that the
bundle reader, writer and checks work the same on a disk and in a bucket. Local paths go to
``os`` directly (``fsspec`` is not even imported); a URL goes to the ``fsspec`` implementation
of its scheme (``s3fs``, ``gcsfs``, ``fsspec``'s own HTTP and memory ones, optional extras),
configured only by those libraries' own settings (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...). Their failures become one-line
:class:`~ckptsurgery.errors.UserError` s naming the fix.

Remote reads are range requests (:func:`read_range`, several in flight, each retried when it
fails for a reason that may pass); remote writes are streamed (:class:`Upload`: the object
appears when it is complete). Object stores have no rename, so
:func:`~ckptsurgery.formats.output.staged_files` writes a checkpoint's data shard at its final
name and *holds back* its ``.index`` and ``.meta`` (:func:`held_back`: kept in memory, where
this module's reads find them) until the whole checkpoint is verified.

Imports only :mod:`ckptsurgery.errors`; no TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import posixpath
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from ..errors import OutputError, UserError, first_line

__all__ = [
    "is_url",
    "is_http",
    "normpath",
    "join",
    "dirname",
    "basename",
    "isfile",
    "isdir",
    "listdir",
    "walk_files",
    "glob_paths",
    "size",
    "identity",
    "open_read",
    "read_range",
    "read_ranges",
    "open_write",
    "write_bytes",
    "Upload",
    "upload_file",
    "local_stand_in",
    "remove",
    "held_back",
    "copy_to",
    "check_writable",
    "RANGE_RETRIES",
]

_URL_RE = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")

#: The extra that installs each scheme's implementation.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
_READ_ONLY = ("http", "https")

#: Attempts of one range request that fails for a reason that may pass (a dropped connection,
#: a 5xx), with a doubling pause from 0.2 s.
RANGE_RETRIES = 4
#: Bytes of one range request; a piece of a tensor is fetched as several such ranges at once.
RANGE_BYTES = 32 * 2**20
#: Bytes a streamed upload sends at a time (a multipart upload's part size).
UPLOAD_BLOCK = 32 * 2**20


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path; ``file://``
    URLs count as local."""
    m = _URL_RE.match(path)
    return bool(m) and m.group("scheme").lower() != "file"


def is_http(path: str) -> bool:
    """Whether ``path`` is an ``http(s)://`` URL (read only, folders only where the server
    gives index pages)."""
    return is_url(path) and _scheme(path) in _READ_ONLY


def _scheme(url: str) -> str:
    return _URL_RE.match(url).group("scheme").lower()


def normpath(path: str) -> str:
    """A local path normalised (``~`` expanded), or a URL with ``.``, ``..`` and doubled or
    trailing slashes resolved."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not is_url(path):
        return os.path.normpath(os.path.expanduser(path))
    scheme, rest = path.split("://", 1)
    rest = posixpath.normpath(rest) if rest.strip("/") else ""
    return f"{scheme}://{rest.lstrip('/')}"


def join(folder: str, *names: str) -> str:
    if not is_url(folder):
        return os.path.join(folder, *names)
    return "/".join([folder.rstrip("/"), *names])


def dirname(path: str) -> str:
    """The folder of ``path``: ``.`` for a bare local name; a bucket's root for its top-level
    objects (``s3://b/m.ckpt`` -> ``s3://b``)."""
    if not is_url(path):
        return os.path.dirname(path) or "."
    head, _, tail = path.rpartition("/")
    return head if not head.endswith(":/") else path


def basename(path: str) -> str:
    return os.path.basename(path) if not is_url(path) else path.rpartition("/")[2]


# --- the file system of a URL, and what its failures mean ------------------------------------

@functools.cache
def _filesystem(scheme: str, pid: int):
    """The fsspec file system of ``scheme`` (one per process: they hold connections)."""
    extra = _EXTRAS.get(scheme)
    hint = f"pip install 'ckptsurgery[{extra}]'" if extra else "install the fsspec implementation"
    try:
        import fsspec
    except ImportError:
        raise UserError(f"'{scheme}://' URLs need fsspec: {hint}") from None
    options = {} if scheme == "memory" else {"use_listings_cache": False}
    if scheme in ("gs", "gcs"):
        options.update(_gcs_credentials(fsspec.config.conf))
    try:
        return fsspec.filesystem(scheme, **options)
    except ImportError:
        raise UserError(f"no file system for '{scheme}://' URLs is installed: {hint}") from None
    except ValueError as e:
        raise UserError(f"'{scheme}://' is not a scheme fsspec knows ({first_line(e)}); "
                        "use s3://, gs://, http(s)://, memory:// or a local path") from None


#: What makes gs:// URLs work without credentials (fsspec's own configuration of gcsfs).
_GCS_FIXES = ("set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run 'gcloud "
              "auth application-default login', or for a public bucket set FSSPEC_GS_TOKEN=anon "
              "(anonymous access)")


def _gcs_credentials(conf: dict) -> dict:
    """gcsfs's credentials, looked up by google-auth before gcsfs is made.

    Given no token, gcsfs tries each of google-auth's sources and then goes on anonymously, so
    that with no credentials and no network it retries for minutes before failing. Here
    ``google.auth.default`` looks once (GOOGLE_APPLICATION_CREDENTIALS, gcloud's default
    credentials file, the GCE metadata server: one attempt of 1 s unless
    GCE_METADATA_TIMEOUT / GCE_METADATA_DETECT_RETRIES say otherwise) and what it finds is
    gcsfs's token. A token in fsspec's configuration (``FSSPEC_GS_TOKEN=anon``,
    ``~/.config/fsspec/gs.json``) or an emulator (STORAGE_EMULATOR_HOST) is left to gcsfs.

    Raises:
        UserError: no credentials, naming the ways to give them.
    """
    options = {**conf.get("gcs", {}), **conf.get("gs", {})}
    if "token" in options or os.environ.get("STORAGE_EMULATOR_HOST", "default") != "default":
        return {}
    os.environ.setdefault("GCE_METADATA_TIMEOUT", "1")
    os.environ.setdefault("GCE_METADATA_DETECT_RETRIES", "1")
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return {}  # gcsfs is not installed either: its import names the extra
    scope = "https://www.googleapis.com/auth/devstorage." + options.get("access", "full_control")
    try:
        credentials, project = google.auth.default(scopes=[scope])
    except DefaultCredentialsError:
        raise UserError(f"no credentials for gs:// URLs: {_GCS_FIXES}") from None
    if project and "project" not in options and not os.environ.get("GCSFS_DEFAULT_PROJECT"):
        return {"token": credentials, "project": project}
    return {"token": credentials}


def _fs(url: str):
    return _filesystem(_scheme(url), os.getpid())


def _fs_path(url: str) -> str:
    """What fsspec's implementation takes for ``url`` (HTTP keeps the whole URL)."""
    return url if _scheme(url) in _READ_ONLY else _fs(url)._strip_protocol(url)


def _bucket(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def _failure(url: str, e: BaseException) -> UserError:
    """The one-line error naming the fix for a failed access to ``url``."""
    text = first_line(e)
    kind = type(e).__name__
    scheme = _scheme(url)
    lowered = text.lower()
    if "support range requests" in text:
        return UserError(f"the server of '{url}' ignores range requests, which reading a "
                         "checkpoint over HTTP needs; serve it with one that answers them "
                         "(nginx, Apache, 'python -m RangeHTTPServer' of the rangehttpserver "
                         "package) or download it first")
    if _no_bucket(e) or (isinstance(e, FileNotFoundError) and not _unreachable(e)
                         and not _bucket_exists(url)):
        return _bucket_error(url)
    if kind in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError") \
            or "credentials" in lowered:
        fix = (_GCS_FIXES if scheme in ("gs", "gcs") else
               "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or "
               "~/.aws/credentials")
        return UserError(f"no credentials to read '{url}': {fix}")
    if isinstance(e, PermissionError) or "accessdenied" in lowered.replace(" ", "") \
            or "forbidden" in lowered or "403" in text:
        return UserError(f"access to '{url}' is denied ({text}); use credentials that may "
                         "read (and write) it")
    if _unreachable(e):
        endpoint = " and AWS_ENDPOINT_URL (for a non-AWS S3 server)" if scheme in ("s3", "s3a") \
            else ""
        return UserError(f"cannot reach '{url}': {first_line(e.__cause__ or e)}; check the URL, "
                         f"the network{endpoint}")
    if isinstance(e, FileNotFoundError) or "404" in text or "not found" in lowered:
        return UserError(f"'{url}' does not exist (404); check the URL")
    return UserError(f"cannot read or write '{url}': {kind}: {text}")


def _unreachable(e: BaseException) -> bool:
    """A connection that failed (fsspec's HTTP file system reports it as a missing file)."""
    for err in (e, e.__cause__):
        name = type(err).__name__
        if err is not None and not isinstance(err, FileNotFoundError | PermissionError) and (
                "Connect" in name or "Connection" in name or "DNS" in name
                or isinstance(err, ConnectionError | TimeoutError)):
            return True
    return False


def _bucket_error(url: str) -> UserError:
    setting = ("STORAGE_EMULATOR_HOST for an emulator" if _scheme(url) in ("gs", "gcs") else
               "AWS_ENDPOINT_URL for a non-AWS server")
    return UserError(f"bucket '{_bucket(url)}' of '{url}' does not exist; create it, or check "
                     f"the URL (and {setting})")


#: Buckets seen to exist, by (process, scheme, bucket): asked once, on the first missing file.
_BUCKETS_SEEN: set[tuple[int, str, str]] = set()


def _bucket_exists(url: str) -> bool:
    """Whether the bucket of ``url`` exists, asked when a file in it is missing (gcsfs's
    missing file does not say which was missing); True when that cannot be told (no access
    to the bucket itself, a scheme without buckets)."""
    scheme = _scheme(url)
    key = (os.getpid(), scheme, _bucket(url))
    if scheme in (*_READ_ONLY, "memory") or key in _BUCKETS_SEEN:
        return True
    try:
        _fs(url).info(_bucket(url))
    except FileNotFoundError:
        return False
    except Exception:  # no access to the bucket itself, a flaky server: not a missing bucket
        return True
    _BUCKETS_SEEN.add(key)
    return True


def _no_bucket(e: BaseException) -> bool:
    text = first_line(e).lower()
    return any(words in text.replace(" ", "") for words in (
        "nosuchbucket", "bucketdoesnotexist", "specifiedbucketisnotvalid"))


def _call(url: str, fn, *args, missing=None, **kwargs):
    """``fn(*args, **kwargs)`` with fsspec's errors for ``url`` made one-line UserErrors;
    a missing object gives ``missing`` when that is not None."""
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except FileNotFoundError as e:
        if missing is not None and not _no_bucket(e) and not _unreachable(e) \
                and _bucket_exists(url):
            return missing
        raise _failure(url, e) from None
    except Exception as e:
        raise _failure(url, e) from None


# --- questions about files ----------------------------------------------------------------

class _Held:
    """Files held back from a remote folder until :func:`held_back` releases them."""

    lock = threading.Lock()
    files: dict[str, bytes | None] = {}  # URL -> bytes written so far (None: not yet)


def _held(path: str) -> bytes | None:
    with _Held.lock:
        return _Held.files.get(path)


def _info(url: str) -> dict | None:
    """fsspec's ``info`` of ``url``, None when nothing is there."""
    fs = _fs(url)
    return _call(url, fs.info, _fs_path(url), missing=False) or None


def isfile(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    if _held(path) is not None:
        return True
    if path.endswith("/"):
        return False
    info = _info(path)
    return info is not None and info.get("type") != "directory"


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs = _fs(path)
    if _scheme(path) in _READ_ONLY:
        # HTTP has no folders: a URL is one when the server answers it with an index page
        # linking to what is below it (fsspec's listing), or when it has a state file. A HEAD
        # first, so that a file is not fetched to be told from a page.
        info = _info(path)
        if info is not None and info.get("mimetype") not in (None, "text/html"):
            return False
        listed = info is not None and bool(_call(path, fs.isdir, path, missing=False))
        return listed or isfile(join(path, "checkpoint"))
    return bool(_call(path, fs.isdir, _fs_path(path), missing=False))


def listdir(folder: str) -> list[str]:
    """The names in ``folder``; [] when it does not exist (a bucket that does not exist is an
    error). A remote folder's held-back files are listed too."""
    if not is_url(folder):
        try:
            return os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs = _fs(folder)
    if _scheme(folder) in _READ_ONLY:
        target = folder.rstrip("/") + "/"
        try:
            found = fs.ls(target, detail=False)
        except Exception:  # a server that lists no folders: only named files are found
            found = []
    else:
        found = _call(folder, fs.ls, _fs_path(folder), detail=False, missing=[])
    names = {str(p).rstrip("/").rpartition("/")[2] for p in found}
    with _Held.lock:
        names |= {basename(p) for p, data in _Held.files.items()
                  if data is not None and dirname(p) == folder}
    return sorted(n for n in names if n)


def walk_files(folder: str) -> Iterator[str]:
    """Every file under ``folder``, recursively, as paths or URLs."""
    if not is_url(folder):
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                yield os.path.join(root, name)
        return
    fs = _fs(folder)
    base = _fs_path(folder).rstrip("/")
    found = _call(folder, fs.find, base, missing=[])
    for path in sorted(found):
        yield join(folder, path[len(base):].lstrip("/"))


def glob_paths(pattern: str) -> list[str]:
    """The paths or URLs that match the glob ``pattern``, sorted."""
    if not is_url(pattern):
        import glob

        return sorted(glob.glob(pattern))
    fs = _fs(pattern)
    found = _call(pattern, fs.glob, _fs_path(pattern))
    if _scheme(pattern) in _READ_ONLY:
        return sorted(found)
    return sorted(f"{_scheme(pattern)}://{p}" for p in found)


def size(path: str) -> int:
    """The size of a file in bytes.

    Raises:
        FileNotFoundError: nothing there (for remote files too).
    """
    if not is_url(path):
        return os.path.getsize(path)
    held = _held(path)
    if held is not None:
        return len(held)
    info = _info(path)
    if info is None:
        raise FileNotFoundError(path)
    return int(info["size"])


def identity(path: str) -> dict:
    """What tells this version of a file from another: its size and modification time (local),
    or its size and ETag or generation (remote; the modification time where there is none)."""
    if not is_url(path):
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    held = _held(path)
    if held is not None:
        import zlib

        return {"size": len(held), "held": zlib.crc32(held)}
    info = _info(path)
    if info is None:
        raise FileNotFoundError(path)
    out = {"size": int(info["size"])}
    for key in ("ETag", "etag", "generation", "md5Hash", "Content-MD5", "Digest", "LastModified",
                "Last-Modified", "mtime", "created"):
        if info.get(key) is not None:
            out[key.lower()] = str(info[key])
            break
    return out


# --- reading ------------------------------------------------------------------------------

def open_read(path: str):
    """A binary file object of ``path`` (seek and read; a remote one reads by range)."""
    if not is_url(path):
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    held = _held(path)
    if held is not None:
        return io.BytesIO(held)
    _check_ranges(path)
    fs = _fs(path)
    return _call(path, fs.open, _fs_path(path), "rb", block_size=RANGE_BYTES,
                 cache_type="readahead")


#: HTTP servers seen to answer range requests, by (process, host).
_RANGES_SEEN: set[tuple[int, str]] = set()


def _check_ranges(url: str) -> None:
    """Check, once per HTTP server, that it answers range requests: one that ignores them
    sends a whole file where a piece was asked for (Python's ``http.server`` does).

    Raises:
        UserError: it does not, naming the fix.
    """
    key = (os.getpid(), url.split("://", 1)[1].split("/", 1)[0])
    if _scheme(url) not in _READ_ONLY or key in _RANGES_SEEN:
        return
    fs = _fs(url)

    def second_byte() -> None:  # a range not at the start: fsspec refuses a whole file
        with fs.open(url, "rb", block_size=2, cache_type="none") as f:
            f.seek(1)
            f.read(1)

    _call(url, second_byte)
    _RANGES_SEEN.add(key)


def _transient(e: BaseException) -> bool:
    """A failure worth another attempt: not a missing object, not a refusal."""
    return not isinstance(e, FileNotFoundError | PermissionError | UserError)


def read_range(path: str, start: int, nbytes: int) -> bytes:
    """Bytes ``start:start+nbytes`` of a remote file (fewer at its end), by one range request
    retried up to :data:`RANGE_RETRIES` times."""
    held = _held(path)
    if held is not None:
        return held[start:start + nbytes]
    _check_ranges(path)
    fs = _fs(path)
    for attempt in range(RANGE_RETRIES):
        try:
            return fs.cat_file(_fs_path(path), start=start, end=start + nbytes)
        except Exception as e:
            if attempt == RANGE_RETRIES - 1 or not _transient(e):
                raise _failure(path, e) from None
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def read_ranges(path: str, start: int, nbytes: int, out) -> None:
    """Fill the uint8 array ``out`` with bytes ``start:start+nbytes`` of a remote file, fetched
    as ranges of :data:`RANGE_BYTES` all in flight at once (each retried as
    :func:`read_range`).

    Raises:
        EOFError: the file ends before ``start + nbytes``.
    """
    import numpy as np

    bounds = [(s, min(RANGE_BYTES, start + nbytes - s))
              for s in range(start, start + nbytes, RANGE_BYTES)]
    _check_ranges(path)
    fs = _fs(path)
    got: list = [None] * len(bounds)
    if len(bounds) > 1 and hasattr(fs, "cat_ranges"):
        p = _fs_path(path)
        try:
            got = fs.cat_ranges([p] * len(bounds), [s for s, _ in bounds],
                                [s + n for s, n in bounds], on_error="return")
        except Exception:
            got = [None] * len(bounds)
    for i, (s, n) in enumerate(bounds):
        data = got[i]
        if not isinstance(data, bytes | bytearray):
            data = read_range(path, s, n)
        if len(data) != n:
            raise EOFError(path)
        out[s - start:s - start + n] = np.frombuffer(data, np.uint8)
        got[i] = None


# --- writing ------------------------------------------------------------------------------

class _HeldFile(io.BytesIO):
    """A held-back file being written: on closing, its bytes are what reads of it find."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def close(self) -> None:
        if not self.closed:
            with _Held.lock:
                _Held.files[self.path] = self.getvalue()
        super().close()


def open_write(path: str):
    """A new binary file at ``path`` to write (a remote one is uploaded on closing; a
    held-back one is kept until released). Local files are the caller's to fsync."""
    if not is_url(path):
        return open(path, "wb")  # noqa: SIM115 - the caller closes it
    with _Held.lock:
        if path in _Held.files:
            return _HeldFile(path)
    _check_scheme_writable(path)
    fs = _fs(path)
    return _call(path, fs.open, _fs_path(path), "wb", block_size=UPLOAD_BLOCK)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` as the file ``path``: flushed to the disk (local), uploaded (remote), or
    kept (held back)."""
    if is_url(path):
        f = open_write(path)
        _call(path, f.write, data)
        _call(path, f.close)
        return
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Upload:
    """A remote data shard written as a stream (the interface of
    :class:`~ckptsurgery.formats.datafile.BufferedFile`): parts go up as they fill; the object
    appears only when :meth:`close` completes the upload; :meth:`discard` abandons it."""

    direct = False

    def __init__(self, path: str):
        self.path = path
        self._file = open_write(path)

    def write(self, data) -> None:
        import numpy as np

        view = memoryview(np.asarray(data).reshape(-1).view(np.uint8))
        for s in range(0, len(view), UPLOAD_BLOCK):
            _call(self.path, self._file.write, view[s:s + UPLOAD_BLOCK])

    def close(self, fsync: bool = True) -> None:
        _call(self.path, self._file.close)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if hasattr(self._file, "discard"):
                self._file.discard()
            self._file.closed = True


def upload_file(local: str, url: str) -> None:
    """Stream the local file ``local`` up to ``url`` and check the size that arrived.

    Raises:
        OutputError: the object's size is not the file's.
    """
    upload = Upload(url)
    try:
        with open(local, "rb") as f:
            while piece := f.read(UPLOAD_BLOCK):
                upload.write(piece)
        upload.close()
    except BaseException:
        upload.discard()
        raise
    if size(url) != os.path.getsize(local):
        remove(url)
        raise OutputError(f"'{url}' did not arrive whole ({size(url)} of "
                          f"{os.path.getsize(local)} bytes); retry")


@contextlib.contextmanager
def local_stand_in(path: str) -> Iterator[str]:
    """A local path for code that writes only local files (TensorFlow's saver, numpy) to
    write what belongs at ``path``: ``path`` itself, or for a URL a path in a temporary folder
    whose files are uploaded (:func:`upload_file`) into ``path``'s folder on success."""
    if not is_url(path):
        yield path
        return
    import tempfile

    folder = tempfile.mkdtemp(prefix="ckptsurgery-upload-")
    try:
        yield os.path.join(folder, basename(path))
        for name in sorted(os.listdir(folder)):
            upload_file(os.path.join(folder, name), join(dirname(path), name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove(path: str) -> None:
    """Remove a file if it is there."""
    if not is_url(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    with _Held.lock:
        if _Held.files.get(path) is not None:
            _Held.files[path] = None
            return
    fs = _fs(path)
    _call(path, fs.rm_file, _fs_path(path), missing=True)


def _check_scheme_writable(url: str) -> None:
    if _scheme(url) in _READ_ONLY:
        raise OutputError(f"'{url}': {_scheme(url)}:// URLs are read-only; write the output to "
                          "s3://, gs://, memory:// or a local path")


def check_writable(url: str) -> None:
    """Check that outputs can go to the remote folder of ``url``: a writable scheme, a bucket
    that exists.

    Raises:
        OutputError, UserError: the scheme is read-only, the bucket does not exist, no access.
    """
    _check_scheme_writable(url)
    fs = _fs(url)
    if _scheme(url) == "memory":
        return
    if not _call(url, fs.exists, _bucket(url), missing=False):
        raise OutputError(str(_bucket_error(url)))


@contextlib.contextmanager
def held_back(paths: Sequence[str]) -> Iterator[_Release]:
    """Hold the remote files ``paths`` back while the caller writes them: writes go to memory,
    reads and listings of this process find them there, nothing is uploaded. The yielded
    object's :meth:`_Release.release` uploads them in order, each read back and compared;
    whatever is not released is dropped on leaving."""
    with _Held.lock:
        for p in paths:
            _Held.files[p] = None
    release = _Release(paths)
    try:
        yield release
    finally:
        with _Held.lock:
            for p in paths:
                _Held.files.pop(p, None)


class _Release:
    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.uploaded: list[str] = []

    def release(self, path: str) -> None:
        """Upload the held-back ``path`` (if it was written) and read it back: the same size
        and bytes, or an OutputError."""
        import zlib

        data = _held(path)
        if data is None:
            return
        with _Held.lock:
            _Held.files.pop(path)
        self.uploaded.append(path)
        write_bytes(path, data)
        back = b"".join(_chunks_of(path))
        if len(back) != len(data) or zlib.crc32(back) != zlib.crc32(data):
            raise OutputError(f"'{path}' does not read back as uploaded ({len(back)} bytes, "
                              f"{len(data)} sent); nothing else was uploaded: retry")


def _chunks_of(path: str) -> Iterable[bytes]:
    with open_read(path) as f:
        while piece := _call(path, f.read, RANGE_BYTES):
            yield piece


def copy_to(paths: Iterable[str], folder: str) -> dict[str, str]:
    """Copy the files ``paths`` (URLs) into the local ``folder``, for code that reads only
    local files (TensorFlow's); returns each URL's local path."""
    local = {}
    for url in paths:
        target = os.path.join(folder, basename(url))
        with open_read(url) as src, open(target, "wb") as dst:
            _call(url, shutil.copyfileobj, src, dst, RANGE_BYTES)
        local[url] = target
    return local
