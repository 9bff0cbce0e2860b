"""Fitting the ecosystem: the pytest plugin is installed with the package (``pytest11`` entry
point) and its fixtures work in a user's suite that imports nothing from it (``examples/`` is
such a suite); installing beside ``tensorflow`` adds no second TensorFlow."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from conftest import ROOT


def test_the_plugin_is_registered_with_pytest():
    names = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert names.get("ckptsurgery") == "ckptsurgery.pytest_plugin"


def test_the_fixtures_give_a_graph_a_session_and_a_trained_checkpoint(tf1_graph, tf1_session,
                                                                       mlp_checkpoint, ckpt):
    assert tf1_session.graph is tf1_graph
    shapes = ckpt.assert_restores(mlp_checkpoint)
    assert shapes["hidden1/kernel"] == [784, 300] and shapes["logits/kernel"] == [50, 10]


def test_the_cnn_fixture_is_a_convolutional_model_with_a_training_switch(cnn_checkpoint):
    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graph.graftpoints import find_graft_points
    from ckptsurgery.graphdef.metagraph import placeholders

    meta = open_checkpoint(cnn_checkpoint).meta_graph
    assert placeholders(meta) == {"x": "float32", "y": "int64", "is_training": "bool"}
    assert "inputs" not in meta.collection_def and "logits" not in meta.collection_def
    points, _ = find_graft_points(meta)
    pool = next(p for p in points if p.at == "pool1/MaxPool:0")
    assert pool.shape == [None, 14, 14, 8] and pool.flags == ["--pool", "flatten"]


def test_an_assertion_failure_names_the_variables(mlp_checkpoint, ckpt, tmp_path):
    with pytest.raises(AssertionError, match="hidden1/kernel"):
        ckpt.assert_changed(mlp_checkpoint, mlp_checkpoint, scope="hidden1/")


@pytest.mark.slow
def test_the_example_suite_passes_with_only_the_plugin():
    proc = subprocess.run([sys.executable, "-m", "pytest", "examples", "-q", "-n", "0",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout


@pytest.mark.slow
def test_installing_beside_tensorflow_adds_no_second_tensorflow(tmp_path):
    """The environment has the ``tensorflow`` wheel: pip's plan for this package installs the
    package alone, no ``tensorflow-cpu`` or other TensorFlow distribution."""
    import json

    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                           "--no-build-isolation", "--report", str(report), "-e", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = [item["metadata"]["name"].lower()
             for item in json.loads(report.read_text())["install"]]
    assert not [n for n in names if n.startswith(("tensorflow", "tf-nightly", "intel-tensorflow"))]
    assert "ckptsurgery" in names
