"""Transfer strategies (feature-extract, fine-tune-top[:N], fine-tune-all) and the advice that
picks one by data size and similarity."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from conftest import FIXTURE_MLP, read_vars, run_cli
from safety_helpers import assert_clean_error

from ckptsurgery.train.data import BUILTIN_SUBSET

NEW = ("--dense", "hidden4:20:relu", "--dense", "logits:10")
LAYERS = ("hidden1", "hidden2", "hidden3")


@pytest.mark.parametrize("strategy, trained, frozen", [
    ("feature-extract", [], ["hidden1", "hidden2", "hidden3"]),
    ("fine-tune-top", ["hidden3"], ["hidden1", "hidden2"]),
    ("fine-tune-top:2", ["hidden2", "hidden3"], ["hidden1"]),
    ("fine-tune-all", ["hidden1", "hidden2", "hidden3"], []),
])
def test_each_strategy_trains_what_it_says_and_keeps_the_rest(tmp_path, strategy, trained,
                                                               frozen):
    out = str(tmp_path / "s.ckpt")
    r = run_cli("graft", FIXTURE_MLP, "--at", "hiddens3", *NEW, "--strategy", strategy,
                "--data", BUILTIN_SUBSET, "--epochs", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("strategy:"))
    assert f"reused layers trained: {', '.join(trained) or 'none'}" in line
    assert f"frozen: {', '.join(frozen) or 'none'}" in line
    base, new = read_vars(FIXTURE_MLP), read_vars(out)
    for layer in LAYERS:
        same = new[f"{layer}/kernel"].tobytes() == base[f"{layer}/kernel"].tobytes()
        assert same == (layer in frozen), layer


def test_fine_tune_all_moves_reused_layers_at_the_lower_rate(tmp_path):
    """One SGD step: new layers move by lr x gradient, reused ones by lr_reused x gradient."""
    import tensorflow as tf

    from ckptsurgery.formats.checkpoint import open_checkpoint
    from ckptsurgery.graft.build import GraftSpec, build
    from ckptsurgery.graph.layers import DenseSpec
    from ckptsurgery.graph.restore import restore
    from ckptsurgery.train.fit import TrainConfig, add_training_ops

    source = open_checkpoint(FIXTURE_MLP)
    grafted = build(source, GraftSpec("hiddens3", [DenseSpec("hidden4", 20, "relu"),
                                                   DenseSpec("logits", 10)],
                                      strategy="fine-tune-all"))
    assert sorted(v.op.name for v in grafted.slower) == [f"{n}/{k}" for n in LAYERS
                                                         for k in ("bias", "kernel")]
    ops = add_training_ops(grafted.inputs, grafted.labels, grafted.output, grafted.train_vars,
                           TrainConfig(optimizer="sgd", lr=0.1), slower=(grafted.slower, 0.01))
    with grafted.graph.as_default():
        grads = tf.compat.v1.gradients(ops.loss, grafted.train_vars)
    rng = np.random.RandomState(0)
    feed = {grafted.inputs: rng.rand(32, 784).astype(np.float32),
            grafted.labels: rng.randint(0, 10, 32)}
    with tf.compat.v1.Session(graph=grafted.graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        restore(sess, grafted.restore_vars, source)
        before, g = sess.run([grafted.train_vars, grads], feed)
        sess.run(ops.train_op, feed)
        after = sess.run(grafted.train_vars)
    slow = {v.op.name for v in grafted.slower}
    for var, b, a, grad in zip(grafted.train_vars, before, after, g, strict=True):
        lr = 0.01 if var.op.name in slow else 0.1
        np.testing.assert_allclose(b - a, lr * grad, rtol=1e-4, atol=1e-7, err_msg=var.op.name)


@pytest.mark.parametrize("args, words", [
    (("--strategy", "fine-tune-some"), ("fine-tune-some", "feature-extract, fine-tune-top[:N]")),
    (("--strategy", "fine-tune-top:4"), ("reuses 3 layer(s)", "at most 3")),
    (("--strategy", "fine-tune-top:0"), ("1 or more",)),
    (("--strategy", "feature-extract", "--cut-after", "hiddens2"), ("drop --cut-after",)),
])
def test_bad_strategies_are_one_line(tmp_path, args, words):
    r = run_cli("graft", FIXTURE_MLP, "--at", "hiddens3", *NEW, *args, "--dry-run", "--out",
                str(tmp_path / "x"))
    assert_clean_error(r.returncode, r.stderr, 2, *words)


def _subset_npz(path, per_class: int) -> str:
    with np.load(BUILTIN_SUBSET) as f:
        x, y = f["x_train"], f["y_train"]
    picks = np.concatenate([np.flatnonzero(y == k)[:per_class] for k in range(10)])
    np.savez(path, x_train=x[picks], y_train=y[picks])
    return str(path)


def test_advise_picks_the_quadrant_and_its_command_runs_as_printed(tmp_path):
    small = _subset_npz(tmp_path / "small.npz", 100)
    r = run_cli("advise", FIXTURE_MLP, "--data", small, "--similar", "--out",
                str(tmp_path / "fe.ckpt"))
    assert r.returncode == 0, r.stderr
    assert "quadrant: small (800 training images), similar" in r.stdout
    assert "(0: 80, 1: 80, 2: 80" in r.stdout and "200 more for validation" in r.stdout
    assert "strategy: feature-extract" in r.stdout
    command = shlex.split(r.stdout.strip().splitlines()[-1])
    assert command[:2] == ["ckptsurgery", "graft"] and "--strategy" in command
    ran = run_cli(*command[1:])
    assert ran.returncode == 0, ran.stderr
    assert read_vars(str(tmp_path / "fe.ckpt"))["hidden1/kernel"].tobytes() == \
        read_vars(FIXTURE_MLP)["hidden1/kernel"].tobytes()
    r = run_cli("advise", FIXTURE_MLP, "--data", small, "--dissimilar", "--json")
    assert '"strategy": "fine-tune-top:2"' in r.stdout


def test_advise_calls_fifty_thousand_images_large(tmp_path):
    rng = np.random.RandomState(0)
    large = tmp_path / "large.npz"
    np.savez(large, x_train=rng.randint(0, 256, (50_000, 28, 28), dtype=np.uint8),
             y_train=rng.randint(0, 10, 50_000))
    r = run_cli("advise", FIXTURE_MLP, "--data", str(large), "--dissimilar")
    assert r.returncode == 0, r.stderr
    assert "quadrant: large (45,000 training images), dissimilar" in r.stdout
    assert "--strategy fine-tune-all" in r.stdout
    r = run_cli("advise", FIXTURE_MLP, "--data", str(large), "--similar")
    assert "--strategy fine-tune-top:1" in r.stdout


def _class_folders(root, classes=3, per_class=20, with_test=True) -> str:
    """PNG class folders of real MNIST digits from the built-in subset: ROOT/train/<digit>/
    (and ROOT/test/<digit>/), or ROOT/<digit>/ alone."""
    from PIL import Image

    with np.load(BUILTIN_SUBSET) as f:
        parts = [("train", f["x_train"], f["y_train"])] + \
            ([("test", f["x_test"], f["y_test"])] if with_test else [])
    for part, x, y in parts:
        for digit in range(classes):
            folder = root / (part if with_test else "") / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i, row in enumerate(np.flatnonzero(y == digit)[:per_class]):
                Image.fromarray((x[row].reshape(28, 28) * (255 if x.max() <= 1 else 1))
                                .astype(np.uint8)).save(folder / f"{i}.png")
    return str(root)


def _run_printed(stdout: str) -> tuple:
    command = shlex.split(stdout.strip().splitlines()[-1])
    assert command[:2] == ["ckptsurgery", "graft"]
    return command, run_cli(*command[1:], "--epochs", "1", "--json")


@pytest.mark.parametrize("with_test", [True, False], ids=["train-and-test", "classes-only"])
def test_advise_command_runs_as_printed_on_class_folders(tmp_path, with_test):
    data = _class_folders(tmp_path / "digits", with_test=with_test)
    r = run_cli("advise", FIXTURE_MLP, "--data", data, "--dissimilar", "--out",
                str(tmp_path / "o.ckpt"))
    assert r.returncode == 0, r.stderr
    assert "48 training images in 3 classes (0: 16, 1: 16, 2: 16), 12 more" in r.stdout
    command, ran = _run_printed(r.stdout)
    assert ran.returncode == 0, ran.stderr
    assert "--dense" in command and "new_logits:3" in command
    result = json.loads(ran.stdout)
    assert result["data"]["train_rows"] == 48 and result["data"]["valid_rows"] == 12
    assert (result["training"]["test_accuracy"] is not None) == with_test


def test_advise_sizes_on_classes_and_per_class_and_passes_them_on(tmp_path):
    sorted_npz = _subset_npz(tmp_path / "sorted.npz", 100)  # 100 per digit, sorted by class
    r = run_cli("advise", FIXTURE_MLP, "--data", sorted_npz, "--similar", "--classes", "5-9",
                "--per-class", "30", "--seed", "3", "--out", str(tmp_path / "o.ckpt"))
    assert r.returncode == 0, r.stderr
    assert "150 training images in 5 classes (0: 30, 1: 30, 2: 30, 3: 30, 4: 30)" in r.stdout
    command, ran = _run_printed(r.stdout)
    assert command[command.index("--classes") + 1] == "5,6,7,8,9"
    assert command[command.index("--per-class") + 1] == "30"
    assert command[command.index("--seed") + 1] == "3"
    assert "new_logits:5" in command
    assert ran.returncode == 0, ran.stderr
    data = json.loads(ran.stdout)["data"]
    assert data["train_rows"] == 150
    assert data["per_class"] == {str(k): {"train": 30, "valid": 20} for k in range(5)}


def _graft_on_digits(tmp_path, counts: dict[int, int], valid_size: int, epochs: int):
    """``graft`` on the first ``counts[digit]`` rows of each digit of the built-in subset."""
    with np.load(BUILTIN_SUBSET) as f:
        x, y = f["x_train"], f["y_train"]
    rows = np.concatenate([np.flatnonzero(y == d)[:n] for d, n in counts.items()])
    np.savez(tmp_path / "d.npz", x_train=x[rows], y_train=y[rows])
    r = run_cli("graft", FIXTURE_MLP, "--at", "hiddens3", "--dense", "new_logits:2",
                "--data", str(tmp_path / "d.npz"), "--valid-size", str(valid_size), "--epochs",
                str(epochs), "--out", str(tmp_path / "o.ckpt"))
    assert r.returncode == 0, r.stderr
    return r


def test_graft_warns_when_validation_misses_a_class_training_has(tmp_path):
    """Class 1 has one row: it goes to training, and validation misses it."""
    r = _graft_on_digits(tmp_path, {0: 40, 1: 1}, valid_size=10, epochs=1)
    assert "split:   train/valid rows per class: 0: 30/10, 1: 1/0" in r.stdout
    assert "warning: the validation split does not represent training: validation has no " \
           "rows of class(es) 1 that training has" in r.stderr


def test_graft_warns_when_validation_accuracy_is_zero_in_every_epoch(tmp_path):
    """Two rows, one per class: validation gets the 0, training only ever sees the 1."""
    r = _graft_on_digits(tmp_path, {0: 1, 1: 1}, valid_size=1, epochs=2)
    assert "split:   train/valid rows per class: 0: 0/1, 1: 1/0" in r.stdout
    assert "warning: validation accuracy was 0 in every epoch: validation has class(es) 0 " \
           "that training never sees" in r.stderr
