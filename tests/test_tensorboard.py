"""``--logdir``: TensorBoard finds the grafted graph and the per-epoch scalars in the events
that graft and demo write (read with TensorBoard's own event reader)."""

from __future__ import annotations

import os

import pytest
from conftest import FIXTURE_MLP, run_cli

from ckptsurgery.train.data import BUILTIN_SUBSET

GRAFT = ("--at", "hiddens3", "--dense", "hidden4:20:relu", "--dense", "logits:10")


def _events(logdir: str):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(logdir)
    acc.Reload()
    return acc


def test_graft_logdir_holds_the_graph_and_the_curves(tmp_path):
    logdir = str(tmp_path / "tb")
    r = run_cli("graft", FIXTURE_MLP, *GRAFT, "--data", BUILTIN_SUBSET, "--epochs", "2",
                "--out", str(tmp_path / "g.ckpt"), "--logdir", logdir, "--quiet")
    assert r.returncode == 0, r.stderr
    acc = _events(logdir)
    names = {n.name for n in acc.Graph().node}
    assert {"hidden4/MatMul", "logits/BiasAdd", "hidden3/kernel"} <= names
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "valid/accuracy", "test/accuracy"} <= set(tags)
    valid = acc.Scalars("valid/accuracy")
    assert [e.step for e in valid] == [1, 2]
    assert all(0.0 < e.value <= 1.0 for e in valid)
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert f"tensorboard --logdir {logdir}" in r.stdout


def test_demo_logdir_has_one_run_per_step(tmp_path):
    logdir = str(tmp_path / "tb")
    r = run_cli("demo", "base", "--out", str(tmp_path / "d"), "--epochs", "1", "--logdir",
                logdir, "--quiet")
    assert r.returncode == 0, r.stderr
    assert os.listdir(logdir) == ["base"]
    acc = _events(os.path.join(logdir, "base"))
    assert "hidden1/MatMul" in {n.name.rsplit("dnn/", 1)[-1] for n in acc.Graph().node}
    assert [e.step for e in acc.Scalars("valid/accuracy")] == [1]
