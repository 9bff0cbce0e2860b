"""Folders over HTTP: searched through the server's index pages (Python's file server makes
them), and a one-line error naming the fix where a server gives none, or ignores the range
requests that reading a checkpoint needs (tests/remote_helpers.py)."""

from __future__ import annotations

import os
import shutil

import pytest
from remote_helpers import serving
from safety_helpers import assert_clean_error, run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
MANIFEST = ".ckptsurgery-batch.json"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Two fixtures, one nested, with their state files: ``zoo/mlp``, ``zoo/nested/cnn``."""
    zoo = tmp_path_factory.mktemp("served") / "zoo"
    shutil.copytree(os.path.join(FIXTURES, "mlp"), zoo / "mlp")
    shutil.copytree(os.path.join(FIXTURES, "cnn"), zoo / "nested" / "cnn")
    return zoo


def _files(folder) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name != MANIFEST:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def test_a_folder_with_index_pages_is_searched_and_its_batch_mirrors_the_layout(zoo, tmp_path):
    with serving(str(zoo)) as server:
        code, stdout, err = run_main("strip", f"{server.url}/", "--optimizer-slots", "--out-dir",
                                     str(tmp_path / "out"), "--jobs", "2")
        assert code == 0, err
        assert stdout.splitlines()[-1] == "2 done, 0 skipped (finished before), 0 failed"
        code, stdout, err = run_main("strip", server.url, "--optimizer-slots", "--out-dir",
                                     str(tmp_path / "out"), "--jobs", "2")
        assert code == 0 and stdout.splitlines()[-1] == (
            "0 done, 2 skipped (finished before), 0 failed"), err
        index = zoo / "mlp" / "my_model.ckpt.index"  # a new Last-Modified: another version
        os.utime(index, (index.stat().st_atime + 60, index.stat().st_mtime + 60))
        code, stdout, err = run_main("strip", server.url, "--optimizer-slots", "--out-dir",
                                     str(tmp_path / "out"), "--jobs", "2")
        assert code == 0 and stdout.splitlines()[-1] == (
            "1 done, 1 skipped (finished before), 0 failed"), err
    code, _, err = run_main("strip", str(zoo), "--optimizer-slots", "--out-dir",
                            str(tmp_path / "local"), "--jobs", "1")
    assert code == 0, err
    assert sorted(_files(tmp_path / "out")) == sorted(_files(tmp_path / "local"))
    assert _files(tmp_path / "out") == _files(tmp_path / "local")


def test_a_served_folder_with_a_state_file_is_one_checkpoint(zoo):
    with serving(str(zoo)) as server:
        code, stdout, err = run_main("verify", f"{server.url}/nested/cnn")
    assert code == 0 and stdout.rstrip().endswith("OK"), err
    assert f"{server.url}/nested/cnn/model.ckpt" in stdout


def test_without_index_pages_a_folder_is_one_line_naming_prefixes_or_the_state_file(zoo):
    with serving(str(zoo), index_pages=False) as server:
        code, _, err = run_main("inspect", f"{server.url}/nested/", "--jobs", "1")
        assert_clean_error(code, err, 2, f"{server.url}/nested", "index page",
                           "prefixes", "'checkpoint' state file")
        code, stdout, err = run_main("inspect", f"{server.url}/nested/cnn/checkpoint", "--jobs",
                                     "1")
    assert code == 0, err
    assert stdout.splitlines()[0].startswith(f"ok      {server.url}/nested/cnn/model.ckpt")


def test_a_server_that_ignores_range_requests_is_one_line(zoo):
    with serving(str(zoo), ranges=False) as server:
        code, _, err = run_main("inspect", f"{server.url}/mlp")
    assert_clean_error(code, err, 2, "ignores range requests", "download it")
