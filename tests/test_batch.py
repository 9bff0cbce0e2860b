"""Many checkpoints in one command: folders, globs, state files; --out-dir mirroring the layout;
failures reported while the others go on; a manifest that makes a rerun skip what is done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safety_helpers import copy_checkpoint, run_main, run_main_on_local_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
CORPUS = os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus"))
MANIFEST = ".ckptsurgery-batch.json"
FIXTURE_PREFIXES = ["cnn/model.ckpt", "mixed/model.ckpt", "mlp/my_model.ckpt", "rnn/model.ckpt"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The four fixtures under ``runs/a``, ``runs/b/c``...: a folder of checkpoints."""
    root = tmp_path_factory.mktemp("batch") / "runs"
    for i, rel in enumerate(FIXTURE_PREFIXES):
        copy_checkpoint(os.path.join(FIXTURES, rel), str(root / ("nested" if i % 2 else "") /
                                                          os.path.dirname(rel)))
    return root


def _prefixes(folder) -> list[str]:
    found = []
    for dirpath, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(dirpath, n[:-6]), folder)
                  for n in names if n.endswith(".index")]
    return sorted(found)


def test_strip_of_a_folder_mirrors_its_layout_and_every_output_verifies(tree, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_main("strip", str(tree), "--optimizer-slots",
                                 "--out-dir", str(out), "--jobs", "1")
    lines = stdout.splitlines()
    assert code == 0, err
    assert _prefixes(out) == _prefixes(tree)
    assert sum(ln.startswith("ok ") for ln in lines) == 4
    assert lines[-1] == "4 done, 0 skipped (finished before), 0 failed"
    code, stdout, err = run_main("verify", str(out), "--jobs", "1", "--json")
    summary = json.loads(stdout)
    assert code == 0 and (summary["done"], summary["failed"]) == (4, 0), err
    assert all(r["result"]["ok"] for r in summary["results"])


def test_a_rerun_skips_what_is_done_and_redoes_a_changed_input(tree, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tree, src)
    out = tmp_path / "out"
    argv = ("strip", str(src), "--keep", ".", "--out-dir", str(out), "--jobs", "1")
    assert run_main(*argv)[0] == 0
    code, stdout, _ = run_main(*argv)
    assert code == 0 and stdout.splitlines()[-1] == "0 done, 4 skipped (finished before), 0 failed"
    changed = src / "nested" / "mixed" / "model.ckpt.index"
    os.utime(changed, ns=(time.time_ns(), time.time_ns()))
    code, stdout, _ = run_main(*argv)
    assert code == 0 and stdout.splitlines()[-1] == "1 done, 3 skipped (finished before), 0 failed"
    assert "mixed/model.ckpt" in stdout.splitlines()[0]
    code, stdout, _ = run_main("strip", str(src), "--keep", "kernel", "--out-dir", str(out),
                               "--jobs", "1")  # other options: other outputs, all redone
    assert code == 0 and stdout.splitlines()[-1] == "4 done, 0 skipped (finished before), 0 failed"


def test_an_output_a_killed_run_started_is_redone_not_taken_as_finished(tree, tmp_path):
    out = tmp_path / "out"
    argv = ("strip", str(tree), "--keep", ".", "--out-dir", str(out), "--jobs", "1")
    assert run_main(*argv)[0] == 0
    manifest = json.loads((out / MANIFEST).read_text())
    first = sorted(manifest["inputs"])[0]
    manifest["inputs"][first]["state"] = "started"  # the output was written, not recorded
    (out / MANIFEST).write_text(json.dumps(manifest))
    code, stdout, err = run_main(*argv)
    assert code == 0, err
    assert stdout.splitlines()[-1] == "1 done, 3 skipped (finished before), 0 failed"
    assert json.loads((out / MANIFEST).read_text())["inputs"][first]["state"] == "done"


def test_a_failure_is_reported_and_the_others_go_on(tree, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tree, src)
    data = src / "mlp" / "my_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # cut short
    code, stdout, err = run_main("strip", str(src), "--keep", ".", "--out-dir",
                                 str(tmp_path / "out"), "--jobs", "1")
    assert code == 2
    failed = [ln for ln in stdout.splitlines() if ln.startswith("failed ")]
    assert len(failed) == 1 and "mlp/my_model.ckpt" in failed[0] and "damaged" in failed[0]
    assert stdout.splitlines()[-1] == "3 done, 0 skipped (finished before), 1 failed"
    assert _prefixes(tmp_path / "out") == [p for p in _prefixes(src) if "mlp" not in p]


def test_globs_state_files_and_several_sources(tmp_path):
    runs = tmp_path / "runs"
    for step in (100, 200, 300):
        copy_checkpoint(os.path.join(FIXTURES, "mlp", "my_model.ckpt"), str(runs), state=False)
        for name in os.listdir(runs):
            if name.startswith("my_model.ckpt."):
                os.replace(runs / name, runs / name.replace("my_model.ckpt", f"m.ckpt-{step}"))
    (runs / "checkpoint").write_text('model_checkpoint_path: "m.ckpt-300"\n'
                                     'all_model_checkpoint_paths: "m.ckpt-200"\n'
                                     'all_model_checkpoint_paths: "m.ckpt-300"\n')
    code, stdout, _ = run_main("inspect", str(runs / "checkpoint"), "--json")
    assert code == 0
    assert [r["relative"] for r in json.loads(stdout)["results"]] == ["m.ckpt-200", "m.ckpt-300"]
    code, stdout, _ = run_main("inspect", str(runs / "m.ckpt-*.index"), "--json")
    assert sorted(r["relative"] for r in json.loads(stdout)["results"]) == [
        "m.ckpt-100", "m.ckpt-200", "m.ckpt-300"]
    code, stdout, _ = run_main("verify", str(runs / "m.ckpt-100"),
                               os.path.join(FIXTURES, "cnn"), "--json")
    assert code == 0 and json.loads(stdout)["done"] == 2


def test_batch_arguments_are_checked(tree):
    from safety_helpers import assert_clean_error

    code, _, err = run_main("strip", str(tree), "--keep", ".")
    assert_clean_error(code, err, 2, "--out-dir")
    code, _, err = run_main("strip", str(tree), "--keep", ".", "--out", "x/m.ckpt")
    assert_clean_error(code, err, 2, "--out-dir")
    code, _, err = run_main("strip", os.path.join(FIXTURES, "mlp"), "--keep", ".")
    assert_clean_error(code, err, 2, "give --out", "--out-dir")


def _cli(*argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ckptsurgery", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT}, start_new_session=True,
                            **kwargs)


def _done(out) -> int:
    try:
        entries = json.loads((out / MANIFEST).read_text())["inputs"].values()
    except (OSError, ValueError):
        return 0
    return sum(e["state"] == "done" for e in entries)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="../shared is absent")
def test_corpus_strip_killed_halfway_finishes_on_the_rerun_and_every_output_verifies(tmp_path):
    out = tmp_path / "out"
    argv = ("strip", CORPUS, "--optimizer-slots", "--out-dir", str(out), "--jobs", "2")
    total = len(json.load(open(os.path.join(CORPUS, "INDEX.json"))))
    proc = _cli(*argv)
    while _done(out) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the command, its workers, all at once
    proc.wait()
    finished = _done(out)
    assert 2 <= finished < total, "the batch was not killed halfway"
    rerun = _cli(*argv)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    done, skipped = (int(w) for w in stdout.splitlines()[-1].split()[0:3:2])
    assert skipped == finished and done + skipped == total, stdout
    check = _cli("verify", str(out), "--jobs", "2", "--json")
    report = json.loads(check.communicate(timeout=300)[0])
    assert check.returncode == 0 and (report["done"], report["failed"]) == (total, 0)


def _manifest_without_times(out) -> dict:
    """The manifest, outputs relative to ``out``, modification times left out."""
    data = json.loads((out / MANIFEST).read_text())
    for entry in data["inputs"].values():
        entry["output"] = os.path.relpath(entry["output"], out)
        for files in (entry["input"], entry["output_files"]):
            for identity in files.values():
                identity.pop("mtime_ns")
    return data


@pytest.mark.slow
def test_dask_on_a_local_cluster_gives_the_same_outputs_and_manifest(tree, tmp_path):
    argv = ("strip", str(tree), "--optimizer-slots", "--out-dir")
    assert run_main(*argv, str(tmp_path / "local"), "--jobs", "1")[0] == 0
    code, stdout, err = run_main_on_local_cluster(*argv, str(tmp_path / "dask"))
    assert code == 0, err
    assert stdout.splitlines()[-1] == "4 done, 0 skipped (finished before), 0 failed"
    local, remote = tmp_path / "local", tmp_path / "dask"
    assert _prefixes(remote) == _prefixes(local)
    for dirpath, _, names in os.walk(local):
        for name in names:
            if name != MANIFEST:
                rel = os.path.relpath(os.path.join(dirpath, name), local)
                assert (remote / rel).read_bytes() == (local / rel).read_bytes(), rel
    assert _manifest_without_times(remote) == _manifest_without_times(local)


@pytest.mark.slow
def test_dask_reruns_the_task_of_a_worker_killed_mid_batch(tmp_path):
    import threading

    import numpy as np

    distributed = pytest.importorskip("dask.distributed")
    from ckptsurgery.formats.writer import BundleFileWriter

    rng = np.random.default_rng(0)
    for i in range(4):  # big enough that a task is still running when its worker is killed
        os.makedirs(tmp_path / "in" / f"run{i}")
        with BundleFileWriter(str(tmp_path / "in" / f"run{i}" / "m.ckpt")) as w:
            for k in range(3):
                w.add(f"layer{k}/kernel", rng.standard_normal(2**22, np.float32))
                w.add(f"layer{k}/kernel/Adam", rng.standard_normal(2**22, np.float32))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        outcome = {}
        batch = threading.Thread(target=lambda: outcome.update(result=run_main(
            "strip", str(tmp_path / "in"), "--optimizer-slots", "--out-dir",
            str(tmp_path / "out"), "--dask", cluster.scheduler_address)))
        batch.start()
        killed = None
        while killed is None and batch.is_alive():
            for state in list(cluster.scheduler.workers.values()):
                if state.processing:
                    nanny = next(n for n in cluster.workers.values()
                                 if n.worker_address == state.address)
                    killed = nanny.process.process.pid
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.01)
        batch.join(timeout=300)
    code, stdout, err = outcome["result"]
    assert killed is not None
    assert code == 0, err
    assert stdout.splitlines()[-1] == "4 done, 0 skipped (finished before), 0 failed"
    code, stdout, _ = run_main("verify", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0 and stdout.splitlines()[-1] == "4 done, 0 skipped (finished before), 0 failed"


def test_migration_commands_give_numpy_one_blas_thread_and_others_keep_its_own(tmp_path):
    """numpy's OpenBLAS threads spin after each call: in a batch they take the cores of the
    other jobs, so the commands that do no matrix products set ``OPENBLAS_NUM_THREADS=1``
    before numpy loads (a value the user set is kept); the training commands do not."""
    code = ("import os, sys; from ckptsurgery.cli import main; main(sys.argv[1:]); "
            "print(os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def threads(*argv, **extra):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                           env={**env, **extra}, check=False)
        return r.stdout.strip().splitlines()[-1]

    fixture = os.path.join(FIXTURES, FIXTURE_PREFIXES[0])
    assert threads("verify", fixture) == "1"
    assert threads("verify", fixture, OPENBLAS_NUM_THREADS="2") == "2"
    assert threads("graph", fixture, "--out", str(tmp_path / "cnn.dot")) == "None"
