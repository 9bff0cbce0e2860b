"""gs:// URLs against a real GCS JSON API server on this machine (gcp-storage-emulator, which
gcsfs reaches through its own STORAGE_EMULATOR_HOST setting; tests/remote_helpers.py), and
what a user without credentials is told. (A strip bucket to bucket, bit-identical to the local
one: tests/test_remote.py, for S3 and GCS.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import remote_helpers
from remote_helpers import BUCKET, free_port
from safety_helpers import assert_clean_error, run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "fixtures", "mlp")
gcs = remote_helpers.gcs  # the server's fixture


@pytest.fixture(scope="module")
def uploaded(gcs):
    """The MLP fixture at gs://ckpts/mlp/run."""
    gcs.put_folder(MLP, f"gs://{BUCKET}/mlp/run")
    return f"gs://{BUCKET}/mlp/run"


def test_inspect_of_a_gs_checkpoint_lists_what_the_local_one_does(uploaded):
    code, remote, err = run_main("inspect", uploaded, "--json")
    assert code == 0, err
    code, local, err = run_main("inspect", MLP, "--json")
    assert code == 0, err
    remote, local = json.loads(remote), json.loads(local)
    assert remote["variables"] == local["variables"]
    assert "hidden1/kernel" in [v["name"] for v in remote["variables"]]


def test_a_gs_bucket_that_does_not_exist_is_one_line(gcs):
    code, _, err = run_main("inspect", "gs://no-such-bucket/run/m.ckpt")
    assert_clean_error(code, err, 2, "bucket 'no-such-bucket'", "does not exist",
                       "STORAGE_EMULATOR_HOST")
    code, _, err = run_main("strip", MLP, "--drop", "^logits/", "--out",
                            "gs://no-such-bucket/out/m.ckpt")
    assert_clean_error(code, err, 2, "bucket 'no-such-bucket'", "create it")


def test_a_gs_object_that_does_not_exist_is_one_line_naming_404(uploaded):
    code, _, err = run_main("inspect", f"gs://{BUCKET}/nothing/m.ckpt")
    assert_clean_error(code, err, 2, f"gs://{BUCKET}/nothing/m.ckpt", "404", "check the URL")


def _cli_without_credentials(tmp_path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """``ckptsurgery ARGV`` in a new process where google-auth finds no credentials: no
    GOOGLE_APPLICATION_CREDENTIALS, an empty gcloud configuration folder, no emulator, and
    the GCE metadata server's address a closed port; plus ``env``."""
    drop = ("GOOGLE_", "GCE_", "CLOUDSDK_", "FSSPEC_", "STORAGE_EMULATOR_HOST", "GCSFS_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    closed = f"127.0.0.1:{free_port()}"
    return subprocess.run(
        [sys.executable, "-m", "ckptsurgery", *argv], capture_output=True, text=True,
        timeout=300, env={**base, "PYTHONPATH": ROOT, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
                          "GCE_METADATA_IP": closed, "GCE_METADATA_HOST": closed, **env})


def test_no_gcs_credentials_is_one_line_naming_the_three_fixes(tmp_path):
    pytest.importorskip("gcsfs")
    r = _cli_without_credentials(tmp_path, "inspect", f"gs://{BUCKET}/mlp/run/my_model.ckpt")
    assert_clean_error(r.returncode, r.stderr, 2, "no credentials for gs://",
                       "GOOGLE_APPLICATION_CREDENTIALS",
                       "gcloud auth application-default login", "FSSPEC_GS_TOKEN=anon")


def test_anonymous_access_as_the_message_says_reads_a_public_bucket(tmp_path, gcs, uploaded):
    """The third fix, with the server given as gcsfs's endpoint in fsspec's configuration
    (and gcsfs's gRPC features off: the emulator serves the JSON API only)."""
    r = _cli_without_credentials(tmp_path, "inspect", f"gs://{BUCKET}/mlp/run/my_model.ckpt",
                                 "--json", FSSPEC_GS_TOKEN="anon",
                                 FSSPEC_GS_ENDPOINT_URL=gcs.endpoint,
                                 GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
    assert r.returncode == 0, r.stderr
    assert "hidden1/kernel" in [v["name"] for v in json.loads(r.stdout)["variables"]]


def test_a_convert_batch_from_a_bucket_to_a_bucket_resumes(gcs, tmp_path):
    for name in ("mlp", "cnn"):
        gcs.put_folder(os.path.join(ROOT, "fixtures", name), f"gs://{BUCKET}/zoo/{name}")
    argv = ("convert", f"gs://{BUCKET}/zoo", "--to", "safetensors", "--out-dir",
            f"gs://{BUCKET}/zoo-st", "--jobs", "2")
    code, stdout, err = run_main(*argv)
    assert code == 0, err
    assert stdout.splitlines()[-1] == "2 done, 0 skipped (finished before), 0 failed"
    local = tmp_path / "m.safetensors"
    assert run_main("convert", MLP, "--to", "safetensors", "--out", str(local), "--quiet")[0] == 0
    assert gcs.files(f"gs://{BUCKET}/zoo-st/mlp") == {
        "my_model.ckpt.safetensors": local.read_bytes()}
    code, stdout, err = run_main(*argv)
    assert code == 0 and stdout.splitlines()[-1] == "0 done, 2 skipped (finished before), 0 failed"
