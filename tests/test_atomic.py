"""A kill at any moment leaves no output or a complete one; inputs are never changed.

The export runs in a worker that forks a fresh exporter for each kill (see export_worker.py):
one TensorFlow import for all of them. Each exporter loops over the graft workflow with
``--force`` into the same prefix; before half the kills the output is removed, so kills land
while a first output is written, while an existing one is replaced, and in between.
"""

from __future__ import annotations

import glob
import os
import random
import select
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import ROOT
from safety_helpers import copy_checkpoint, sha256_files

KILLS = 25
WORKER = os.path.join(ROOT, "tests", "export_worker.py")


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"export worker silent for {timeout} s")
    return proc.stdout.readline().strip()


def _state(prefix: str) -> str:
    """``none`` (no ``.index``: not a checkpoint) or ``complete`` (verify accepts it and plain
    TensorFlow restores it, values equal to what the files hold); anything else fails."""
    import numpy as np
    import tensorflow as tf

    from ckptsurgery.safety.verify import verify_checkpoint

    if not os.path.exists(prefix + ".index"):
        return "none"
    report = verify_checkpoint(prefix)
    assert report.ok, f"a killed export left a broken checkpoint: {report.problems}"
    reader = tf.train.load_checkpoint(prefix)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        saver.restore(sess, prefix)
        variables = graph.get_collection("variables")
        assert len(variables) == 10
        for var, value in zip(variables, sess.run(variables), strict=True):
            assert np.array_equal(value, reader.get_tensor(var.op.name))
    return "complete"


@pytest.mark.slow
def test_sigkill_during_export_leaves_no_output_or_a_complete_one(mlp_ckpt, tmp_path,
                                                                    record_property):
    source = copy_checkpoint(mlp_ckpt, str(tmp_path / "in"))
    inputs = sha256_files(sorted(glob.glob(str(tmp_path / "in" / "*"))))
    out = str(tmp_path / "out" / "x.ckpt")
    with open(tmp_path / "worker.err", "w") as err:
        proc = subprocess.Popen([sys.executable, WORKER, source, out], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    try:
        assert _readline(proc, 300) == "ready"
        rng = random.Random(20261123)
        outcomes, exports = Counter(), 0
        for _ in range(KILLS):
            if rng.random() < 0.5:  # half the kills hit a first write, half a replacement
                for path in glob.glob(glob.escape(out) + ".*"):
                    os.remove(path)
            proc.stdin.write(f"kill {rng.uniform(0.0, 0.5):.3f}\n")
            proc.stdin.flush()
            answer = _readline(proc, 120)
            assert answer.startswith("killed "), (answer, (tmp_path / "worker.err").read_text())
            exports += int(answer.split()[1])
            outcomes[_state(out)] += 1
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    summary = (f"kill test: {KILLS} SIGKILLs at random points of {exports} completed exports: "
               f"{outcomes['none']} left no output, {outcomes['complete']} a complete checkpoint "
               "(verify accepts it, plain TF restores it); "
               f"{len(glob.glob(str(tmp_path / 'out' / '.x.ckpt.tmp-*')))} temporary folders "
               "left beside it by the killed processes")
    print(summary)
    record_property("summary", summary)
    assert outcomes["none"] + outcomes["complete"] == KILLS
    # each new export clears what killed ones abandoned: at most the last kill's folder is left
    assert len(glob.glob(str(tmp_path / "out" / ".x.ckpt.tmp-*"))) <= 1
    assert outcomes["none"] and outcomes["complete"], "the kills did not cover both outcomes"
    assert sha256_files(sorted(glob.glob(str(tmp_path / "in" / "*")))) == inputs


def test_killing_the_command_kills_its_worker_process(mlp_ckpt, tmp_path):
    """The CLI runs the command in a forked child (crashguard); ``kill -9`` of the command must
    not leave that child running on, writing."""
    out = str(tmp_path / "x.ckpt")
    proc = subprocess.Popen([sys.executable, "-m", "ckptsurgery", "graft", mlp_ckpt, "--at",
                             "hiddens3", "--dense", "logits:10", "--out", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    deadline = time.monotonic() + 60
    child = ""
    while not child and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        with open(children) as f:
            child = f.read().strip()
    assert child, "the command did not start a child"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while _alive(int(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(int(child)), "the command's child survived kill -9 of the command"
    assert not os.path.exists(out + ".index")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_new_write_removes_what_killed_writers_abandoned(tmp_path):
    from ckptsurgery.formats.output import atomic_file

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    abandoned = tmp_path / f".report.json.tmp-{dead}-abcd"
    abandoned.mkdir()
    running = tmp_path / f".report.json.tmp-{os.getpid()}-efgh"  # a writer still at work
    running.write_text("partial")
    with atomic_file(str(tmp_path / "report.json")) as tmp, open(tmp, "w") as f:
        f.write("{}")
    assert not abandoned.exists() and running.exists()
    assert (tmp_path / "report.json").read_text() == "{}"
