"""Real servers on this machine for the remote tests: moto's S3 API server, the GCS API server
of ``gcp-storage-emulator``, and Python's HTTP server with range requests (counting the bytes it
serves, failing a request on demand).

Import the fixtures (``from remote_helpers import s3, gcs, http_server``) into a test module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

BUCKET = "ckpts"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset_filesystems() -> None:
    """Forget the file systems made so far (they keep the endpoint they were made with)."""
    from ckptsurgery.formats import storage

    storage._filesystem.cache_clear()
    storage._BUCKETS_SEEN.clear()
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    with contextlib.suppress(ImportError):
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()


@contextlib.contextmanager
def environment(env: dict):
    """``os.environ`` with ``env`` set, and the file systems made under it forgotten after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_filesystems()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_filesystems()


class _Bucket:
    """What the tests do in a server's buckets through its fsspec file system (``fs()``),
    URLs of the scheme ``scheme``."""

    scheme = ""

    def fs(self):
        raise NotImplementedError

    def put_folder(self, folder: str, url: str) -> None:
        """Upload the files of a local folder (not sub-folders) under ``url``."""
        fs = self.fs()
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                fs.put_file(path, f"{self._path(url)}/{name}")

    def names(self, url: str) -> list[str]:
        """The names of the objects and folders under ``url``."""
        fs, path = self.fs(), self._path(url)
        return sorted(p.rsplit("/", 1)[1] for p in fs.ls(path)) if fs.exists(path) else []

    def files(self, url: str) -> dict[str, bytes]:
        """The objects under ``url`` (not sub-folders), by name."""
        fs, path = self.fs(), self._path(url)
        return {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in sorted(fs.ls(path))
                if fs.isfile(p)}

    def _path(self, url: str) -> str:
        return url.removeprefix(f"{self.scheme}://")


def local_files(folder: str) -> dict[str, bytes]:
    """The files of a local folder (not sub-folders), by name."""
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def assert_strip_in_a_bucket_is_the_local_strip(server: _Bucket, source: str, tmp_path) -> None:
    """``strip --optimizer-slots`` of the checkpoint folder ``source`` uploaded to the bucket
    ``ckpts``, written there: verified, and bit-identical to the local strip."""
    from safety_helpers import run_main

    name = os.path.basename(source)
    base = f"{server.scheme}://{BUCKET}/{name}"
    server.put_folder(source, f"{base}/in")
    local = tmp_path / "local"
    code, _, err = run_main("strip", source, "--optimizer-slots", "--out", str(local / "m.ckpt"),
                            "--quiet")
    assert code == 0, err
    code, stdout, err = run_main("strip", f"{base}/in", "--optimizer-slots", "--out",
                                 f"{base}/slim/m.ckpt", "--quiet")
    assert code == 0, err
    assert f"wrote {base}/slim/m.ckpt" in stdout
    assert server.files(f"{base}/slim") == local_files(str(local))
    code, stdout, err = run_main("verify", f"{base}/slim/m.ckpt")
    assert code == 0 and stdout.rstrip().endswith("OK"), err


class MotoS3(_Bucket):
    """moto's S3 server on a loopback port; its objects outlive :meth:`stop` / :meth:`start`."""

    scheme = "s3"

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._make = partial(ThreadedMotoServer, ip_address="127.0.0.1", port=self.port,
                             verbose=False)
        self.server = None

    def start(self) -> None:
        self.server = self._make()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def env(self) -> dict:
        return {**ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing",
                                 skip_instance_cache=True, use_listings_cache=False)


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server with the bucket ``ckpts``, and the environment pointing at it."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = MotoS3()
    server.start()
    with environment(server.env):
        server.fs().mkdir(BUCKET)
        yield server
    server.stop()


class EmulatedGCS(_Bucket):
    """gcp-storage-emulator's GCS JSON API server on a loopback port, objects in memory, with
    the bucket ``ckpts``."""

    scheme = "gs"

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = create_server("127.0.0.1", self.port, in_memory=True,
                                    default_bucket=BUCKET)
        self.server.start()
        # A client that closes a connection early is no error of the test's.
        self.server._api._httpd.handle_error = lambda *args: None

    def fs(self):
        """gcsfs's JSON API file system (its gRPC one would wait a minute for the gRPC
        service the emulator lacks)."""
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(endpoint_url=self.endpoint, token="anon", skip_instance_cache=True,
                             use_listings_cache=False)


@pytest.fixture(scope="session")
def gcs():
    """The GCS emulator, and STORAGE_EMULATOR_HOST (gcsfs's own setting) pointing at it."""
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("gcsfs")
    server = EmulatedGCS()
    with environment({"STORAGE_EMULATOR_HOST": server.endpoint}):
        yield server
    server.server.stop()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Python's file server with ``Range: bytes=a-b`` answered by 206 and the bytes sent
    counted by file; ``fail`` holds names whose next range request gets a 503."""

    def log_message(self, *args) -> None:
        pass

    def list_directory(self, path):
        """Python's index page of a folder, or a 404 (as a server without index pages)."""
        if self.server.index_pages:
            return super().list_directory(path)
        self.send_error(404, "no index pages here")
        return None

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def do_GET(self) -> None:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        name = os.path.basename(path)
        if m is None or not os.path.isfile(path):
            self.server.count(name, os.path.getsize(path) if os.path.isfile(path) else 0)
            return super().do_GET()
        if name in self.server.fail:
            self.server.fail.discard(name)
            self.server.failed.append(name)
            self.send_error(503, "injected failure")
            return
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(max(0, end - start + 1))
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.count(name, len(data))


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: str, *, index_pages: bool = True,
                 handler=_RangeHandler):
        super().__init__(("127.0.0.1", 0), partial(handler, directory=folder))
        self.folder = folder
        self.index_pages = index_pages
        self.served: dict[str, int] = {}
        self.fail: set[str] = set()
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, name: str, n: int) -> None:
        with self._lock:
            self.served[name] = self.served.get(name, 0) + n


class _PlainHandler(SimpleHTTPRequestHandler):
    """Python's own file server, which ignores range requests."""

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(folder: str, *, index_pages: bool = True, ranges: bool = True):
    """An HTTP server over ``folder`` while in the block: with range requests (or Python's
    plain one, without), with index pages of folders (or a 404 for them)."""
    server = RangeServer(folder, index_pages=index_pages,
                         handler=_RangeHandler if ranges else _PlainHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """An HTTP server with range requests over a fresh folder (``.folder``)."""
    folder = str(tmp_path_factory.mktemp("http"))
    with serving(folder) as server:
        yield server
    shutil.rmtree(folder, ignore_errors=True)
