"""Shared test helpers: paths to fixtures and ../shared, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
CORPUS = os.path.join(SHARED, "corpus")
MNIST = os.path.join(SHARED, "data", "mnist.npz")
FIXTURE_MLP = os.path.join(ROOT, "fixtures", "mlp", "my_model.ckpt")
FIXTURE_MIXED = os.path.join(ROOT, "fixtures", "mixed", "model.ckpt")
FIXTURE_CNN = os.path.join(ROOT, "fixtures", "cnn", "model.ckpt")
FIXTURE_RNN = os.path.join(ROOT, "fixtures", "rnn", "model.ckpt")


@pytest.fixture
def mlp_ckpt() -> str:
    """The reference MLP fixture made by fixtures/make_fixtures.py."""
    return FIXTURE_MLP


@pytest.fixture(scope="session")
def shared() -> str:
    if not os.path.isdir(SHARED):
        pytest.skip("../shared is not beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def mnist(shared) -> str:
    return MNIST


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``ckptsurgery demo`` (all seven steps, one epoch each, on the built-in subset), run once
    per test session and shared by every test that reads its output: (out dir, result, JSON)."""
    import json

    out = str(tmp_path_factory.mktemp("demo") / "run")
    proc = run_cli("demo", "--out", out, "--epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc, json.loads(proc.stdout)


def corpus_entries() -> list[str]:
    """The folders of ../shared/corpus (empty when ../shared is absent)."""
    if not os.path.isdir(CORPUS):
        return []
    return sorted(d for d in os.listdir(CORPUS) if os.path.isdir(os.path.join(CORPUS, d)))


def run_cli(*args: str, timeout: float = 600, process: bool = False) -> subprocess.CompletedProcess:
    """``ckptsurgery ARGS`` from the repository's root; ``(returncode, stdout, stderr)``.

    By default in this process (``ckptsurgery.cli.main``, the function the command runs), so
    that TensorFlow loads once per test session. ``process=True`` runs ``python -m ckptsurgery``
    in a fresh process, as a user's shell does: for what only a process shows (the entry point,
    crash containment, signals, TensorFlow's own stderr lines).
    """
    if process:
        return subprocess.run([sys.executable, "-m", "ckptsurgery", *args],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    from safety_helpers import run_main

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        code, out, err = run_main(*args)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["ckptsurgery", *args], code, out, err)


def read_vars(prefix: str) -> dict:
    """All variables of a checkpoint as numpy arrays."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def pytest_terminal_summary(terminalreporter):
    """Show what tests recorded with ``record_property("summary", ...)`` (fuzz and kill counts)
    at the end of the run, passed or failed."""
    lines = [value for reports in terminalreporter.stats.values() for report in reports
             if getattr(report, "when", None) == "call"
             for key, value in getattr(report, "user_properties", ()) if key == "summary"]
    if lines:
        terminalreporter.section("ckptsurgery summary")
        for line in lines:
            terminalreporter.write_line(line)
