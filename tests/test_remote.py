"""Checkpoints at URLs: read by range requests, written so that nothing at the output is taken
for a checkpoint before it is complete and verified; against moto's S3 server and Python's HTTP
server on this machine (tests/remote_helpers.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import remote_helpers
from remote_helpers import BUCKET, free_port, local_files
from safety_helpers import assert_clean_error, run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "fixtures", "mlp")
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")
s3, gcs, http_server = remote_helpers.s3, remote_helpers.gcs, remote_helpers.http_server
SLOTS = "jncharon__wine-classifier__estimator_ckpt-3374"  # Adagrad slots, a .meta


@pytest.mark.parametrize("server", ["s3", "gcs"])  # moto's S3, gcp-storage-emulator's GCS
@pytest.mark.parametrize("source", [MLP, os.path.join(CORPUS, SLOTS)], ids=["fixture", "corpus"])
def test_strip_bucket_to_bucket_is_bit_identical_to_the_local_strip(request, tmp_path, source,
                                                                     server):
    if not os.path.isdir(source):
        pytest.skip("../shared is absent")
    remote_helpers.assert_strip_in_a_bucket_is_the_local_strip(
        request.getfixturevalue(server), source, tmp_path)


def test_a_remote_output_that_exists_needs_force_and_a_stray_data_shard_does_not(s3):
    out = f"s3://{BUCKET}/force/m.ckpt"
    code, _, err = run_main("strip", MLP, "--drop", "^logits/", "--out", out, "--quiet")
    assert code == 0, err
    code, _, err = run_main("strip", MLP, "--drop", "^logits/", "--out", out, "--quiet")
    assert_clean_error(code, err, 2, "exists", "--force")
    s3.fs().rm_file(f"{BUCKET}/force/m.ckpt.index")  # what an interrupted write leaves
    code, _, err = run_main("strip", MLP, "--drop", "^logits/", "--out", out, "--quiet")
    assert code == 0, err
    code, _, err = run_main("strip", MLP, "--drop", "^hidden5/", "--out", out, "--quiet",
                            "--force")
    assert code == 0, err
    code, stdout, _ = run_main("inspect", out, "--json")
    assert '"hidden5/kernel"' not in stdout and '"logits/kernel"' in stdout


def _big_checkpoint(folder: str, mb: int) -> str:
    """A checkpoint of ``mb`` MB in four tensors, written by the library's writer."""
    from ckptsurgery.formats.writer import BundleFileWriter

    prefix = os.path.join(folder, "big.ckpt")
    rng = np.random.default_rng(0)
    with BundleFileWriter(prefix) as writer:
        for i in range(4):
            writer.add(f"layer{i}/kernel", rng.standard_normal(mb * 2**18 // 4, np.float32))
    return prefix


def test_inspect_over_http_reads_the_index_and_not_the_data(http_server):
    _big_checkpoint(http_server.folder, 48)
    http_server.served.clear()
    code, stdout, err = run_main("inspect", f"{http_server.url}/big.ckpt", "--json")
    assert code == 0, err
    assert '"layer3/kernel"' in stdout
    total = sum(os.path.getsize(os.path.join(http_server.folder, n))
                for n in os.listdir(http_server.folder))
    assert http_server.served.get("big.ckpt.data-00000-of-00001", 0) == 0
    assert 0 < sum(http_server.served.values()) < total / 100


def test_a_range_request_that_fails_once_is_retried(http_server):
    _big_checkpoint(http_server.folder, 20)
    http_server.fail.add("big.ckpt.data-00000-of-00001")
    code, stdout, err = run_main("verify", f"{http_server.url}/big.ckpt")
    assert http_server.failed == ["big.ckpt.data-00000-of-00001"]
    assert code == 0 and stdout.rstrip().endswith("OK"), err


def test_http_is_read_only(http_server):
    code, _, err = run_main("strip", MLP, "--drop", "^logits/", "--out",
                            f"{http_server.url}/out/m.ckpt")
    assert_clean_error(code, err, 2, "read-only", "s3://")


def test_a_missing_http_checkpoint_is_one_line_naming_404(http_server):
    code, _, err = run_main("inspect", f"{http_server.url}/nothing/m.ckpt")
    assert_clean_error(code, err, 2, "404", "check the URL")


def test_a_bucket_that_does_not_exist_is_one_line(s3):
    code, _, err = run_main("inspect", "s3://no-such-bucket/run/m.ckpt")
    assert_clean_error(code, err, 2, "bucket 'no-such-bucket'", "does not exist")
    code, _, err = run_main("strip", MLP, "--drop", "^logits/", "--out",
                            "s3://no-such-bucket/out/m.ckpt")
    assert_clean_error(code, err, 2, "bucket 'no-such-bucket'", "create it")


def test_a_scheme_without_its_implementation_names_the_extra(monkeypatch):
    """s3fs not installed: the message names the extra to install."""
    import importlib

    from remote_helpers import reset_filesystems

    registry = importlib.import_module("fsspec.registry")  # fsspec.registry is a mapping
    reset_filesystems()
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs raises ImportError
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    try:
        code, _, err = run_main("inspect", "s3://bucket/run/m.ckpt")
    finally:
        monkeypatch.undo()
        reset_filesystems()
    assert_clean_error(code, err, 2, "pip install 'ckptsurgery[s3]'")


def _cli(*argv: str, env: dict) -> subprocess.CompletedProcess:
    """``ckptsurgery ARGV`` in a new process whose only AWS settings are those in ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([sys.executable, "-m", "ckptsurgery", *argv], capture_output=True,
                          text=True, env={**base, "PYTHONPATH": ROOT, **env}, timeout=120)


def test_missing_credentials_are_one_line_naming_the_settings(tmp_path):
    env = {"AWS_CONFIG_FILE": str(tmp_path / "none"),
                                  "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                  "AWS_EC2_METADATA_DISABLED": "true",
                                  "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    r = _cli("inspect", "s3://bucket/run/m.ckpt", env=env)
    assert_clean_error(r.returncode, r.stderr, 2, "no credentials", "AWS_ACCESS_KEY_ID")


class _CuttingProxy:
    """A TCP proxy to the S3 server that, once ``limit`` bytes went up (in the middle of a
    request), drops every connection and stops the server itself: the server going away
    during an upload."""

    def __init__(self, s3, limit: int):
        self.s3, self.limit, self.sent = s3, limit, 0
        self.listener = socket_listener()
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.stopped = threading.Thread(target=s3.stop)
        self._sockets: list = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.s3.port))
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src, dst, upward: bool) -> None:
        try:
            while data := src.recv(65536):
                if upward:
                    with self._lock:
                        self.sent += len(data)
                        if self.sent > self.limit and not self.cut.is_set():
                            self._cut()
                    if self.cut.is_set():
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def _cut(self) -> None:
        """(Holding the lock.) No new connections, every open one dropped, the server
        stopped (in a thread: it waits for its request handlers, which wait for us)."""
        self.cut.set()
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(2)
        self.stopped.start()


def socket_listener():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


@pytest.mark.slow
def test_an_upload_cut_by_the_server_stopping_leaves_no_checkpoint_and_the_rerun_completes(
        s3, tmp_path):
    source = os.path.join(CORPUS, SLOTS) if os.path.isdir(CORPUS) else MLP
    out = f"s3://{BUCKET}/cut/m.ckpt"
    proxy = _CuttingProxy(s3, limit=60_000)  # past the reads of the input, inside the upload
    env = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    try:
        r = _cli("strip", source, "--optimizer-slots", "--out", out, "--quiet", env=env)
    finally:
        if proxy.cut.is_set():
            proxy.stopped.join()
            s3.start()
        else:
            proxy.listener.close()
    assert proxy.cut.is_set(), "the proxy never cut the upload"
    assert_clean_error(r.returncode, r.stderr, 2, "cut/m.ckpt")
    left = s3.names(f"s3://{BUCKET}/cut")
    assert "m.ckpt.index" not in left and "checkpoint" not in left, left
    code, _, err = run_main("inspect", out)
    assert_clean_error(code, err, 2, "no checkpoint")
    # Plain TensorFlow, given everything that is there, finds no checkpoint either.
    local = tmp_path / "left"
    local.mkdir()
    for name in left:
        (local / name).write_bytes(s3.fs().cat_file(f"{BUCKET}/cut/{name}"))
    probe = ("import sys, tensorflow as tf\n"
             "print(tf.train.latest_checkpoint(sys.argv[1]))\n"
             "try:\n    tf.train.load_checkpoint(sys.argv[1] + '/m.ckpt'); print('loaded')\n"
             "except Exception as e:\n    print('refused', type(e).__name__)\n")
    tf = subprocess.run([sys.executable, "-c", probe, str(local)], capture_output=True,
                        text=True, timeout=300)
    assert tf.stdout.split() == ["None", "refused", "NotFoundError"], tf.stdout + tf.stderr
    r = _cli("strip", source, "--optimizer-slots", "--out", out, "--quiet", env=s3.env)
    assert r.returncode == 0, r.stderr
    local_out = tmp_path / "local"
    code, _, err = run_main("strip", source, "--optimizer-slots", "--out",
                            str(local_out / "m.ckpt"), "--quiet")
    assert code == 0, err
    assert s3.files(f"s3://{BUCKET}/cut") == local_files(str(local_out))


def test_memory_urls_round_trip(tmp_path):
    out = "memory://roundtrip/m.ckpt"
    code, _, err = run_main("rename", MLP, "--map", "^hidden1/=first/", "--out", out, "--quiet")
    assert code == 0, err
    code, stdout, err = run_main("strip", out, "--keep", "^first/", "--out",
                                 str(tmp_path / "m.ckpt"), "--quiet")
    assert code == 0, err
    from ckptsurgery.formats.checkpoint import open_checkpoint

    ckpt = open_checkpoint(str(tmp_path / "m.ckpt"))
    assert sorted(ckpt.variables) == ["first/bias", "first/kernel"]
    original = open_checkpoint(MLP)
    assert np.array_equal(ckpt.read("first/kernel"), original.read("hidden1/kernel"))
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_tensorflow_reads_a_remote_v1_checkpoint_from_a_local_copy(http_server):
    source = os.path.join(CORPUS, "AloshkaD__traffic-signs__model_v1")
    if not os.path.isdir(source):
        pytest.skip("../shared is absent")
    folder = os.path.join(http_server.folder, "v1")
    shutil.copytree(source, folder)
    code, stdout, err = run_main("inspect", f"{http_server.url}/v1/model.ckpt", "--json",
                                 "--check-import")
    assert code == 0, err
    local = run_main("inspect", os.path.join(source, "model.ckpt"), "--json")[1]
    import json

    remote, local = json.loads(stdout), json.loads(local)
    assert remote["variables"] == local["variables"] and remote["format"] == "V1"
    assert remote["meta"]["importable"] is True and remote["meta"]["graft_points"]


def test_a_single_file_output_goes_to_s3_whole(s3, tmp_path):
    out = f"s3://{BUCKET}/npz/weights.npz"
    code, _, err = run_main("convert", MLP, "--to", "npz", "--out", out, "--quiet")
    assert code == 0, err
    path = tmp_path / "w.npz"
    path.write_bytes(s3.fs().cat_file(out.removeprefix("s3://")))
    with np.load(path) as npz:
        assert np.array_equal(npz["hidden1/kernel"],
                              run_checkpoint_read(MLP, "hidden1/kernel"))


def run_checkpoint_read(path: str, name: str):
    from ckptsurgery.formats.checkpoint import open_checkpoint

    return open_checkpoint(path).read(name)


def test_a_batch_from_a_bucket_to_a_bucket_mirrors_the_layout_and_resumes(s3):
    for name in ("mlp", "cnn"):
        s3.put_folder(os.path.join(ROOT, "fixtures", name), f"s3://{BUCKET}/zoo/{name}")
    argv = ("strip", f"s3://{BUCKET}/zoo", "--optimizer-slots", "--out-dir",
            f"s3://{BUCKET}/zoo-slim", "--jobs", "2")
    code, stdout, err = run_main(*argv)
    assert code == 0, err
    assert stdout.splitlines()[-1] == "2 done, 0 skipped (finished before), 0 failed"
    assert s3.names(f"s3://{BUCKET}/zoo-slim/mlp") == [
        "checkpoint", "my_model.ckpt.data-00000-of-00001", "my_model.ckpt.index",
        "my_model.ckpt.meta"]
    code, stdout, err = run_main(*argv)
    assert code == 0 and stdout.splitlines()[-1] == "0 done, 2 skipped (finished before), 0 failed"
    code, stdout, err = run_main("verify", f"s3://{BUCKET}/zoo-slim", "--jobs", "1")
    assert code == 0 and stdout.splitlines()[-1] == "2 done, 0 skipped (finished before), 0 failed"
