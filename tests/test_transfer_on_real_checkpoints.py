"""Transfer learning as a new user does it, on real checkpoints of other projects and real
MNIST: ``advise`` prints a command, the command runs as printed, what its plan says trains
changes, and the result is good. (Issue 26's acceptance tests; every strategy on every corpus
checkpoint is in test_layergroups.py.)"""

from __future__ import annotations

import json
import os
import shlex

import numpy as np
import pytest
from conftest import CORPUS, MNIST, read_vars, run_cli

TRAFFIC = os.path.join(CORPUS, "AloshkaD__traffic-signs__model_v1", "model.ckpt")
HANDSON = os.path.join(CORPUS, "haerfest__handson-ml__my_model_final", "my_model_final.ckpt")


def _advise_and_run(*args: str) -> tuple[str, dict]:
    """``advise ARGS``, then its printed command exactly as printed (``--json`` added to read
    the result): (advise's output, the graft's JSON result)."""
    r = run_cli("advise", *args)
    assert r.returncode == 0, r.stderr
    command = shlex.split(r.stdout.strip().splitlines()[-1])
    assert command[:2] == ["ckptsurgery", "graft"]
    ran = run_cli(*command[1:], "--json")
    assert ran.returncode == 0, ran.stderr
    return r.stdout, json.loads(ran.stdout) | {"log": ran.stderr}


@pytest.mark.slow
def test_traffic_sign_cnn_learns_five_digits_from_the_advised_command(shared, tmp_path):
    from PIL import Image

    with np.load(MNIST) as f:
        parts = {"train": (f["x_train"], f["y_train"]), "test": (f["x_test"], f["y_test"])}
    for part, (x, y) in parts.items():
        for digit in range(5):
            folder = tmp_path / "digits" / part / str(digit)
            folder.mkdir(parents=True)
            for i, row in enumerate(np.flatnonzero(y == digit)[:100]):
                Image.fromarray(x[row]).save(folder / f"{i}.png")
    out = str(tmp_path / "signs-to-digits.ckpt")
    advice, result = _advise_and_run(TRAFFIC, "--data", str(tmp_path / "digits"),
                                     "--dissimilar", "--out", out)
    assert "strategy: fine-tune-top:2" in advice
    plan = result["plan"]
    assert plan["strategy_layers"]["trained"] == ["Variable_3", "Variable_2"]
    before, after = read_vars(TRAFFIC), read_vars(out)
    for row in plan["trained"]:
        if row["name"] in before:
            assert before[row["name"]].tobytes() != after[row["name"]].tobytes(), row["name"]
    for row in plan["frozen"]:
        assert before[row["name"]].tobytes() == after[row["name"]].tobytes(), row["name"]
    assert {r["name"] for r in plan["trained"]} == {"Variable_2", "Variable_7", "Variable_3",
                                                     "Variable_8", "new_logits/kernel",
                                                     "new_logits/bias"}
    assert result["training"]["test_accuracy"] >= 0.8


@pytest.mark.slow
def test_handson_mlp_on_an_npz_sorted_by_class_validates_on_every_digit(shared, tmp_path):
    with np.load(MNIST) as f:
        x, y = f["x_train"], f["y_train"]
    rows = np.concatenate([np.flatnonzero(y == digit)[:100] for digit in range(10)])
    np.savez(tmp_path / "sorted.npz", x_train=x[rows], y_train=y[rows])
    advice, result = _advise_and_run(HANDSON, "--data", str(tmp_path / "sorted.npz"),
                                     "--similar", "--out", str(tmp_path / "o.ckpt"))
    assert "800 training images in 10 classes" in advice
    assert result["data"]["per_class"] == {str(d): {"train": 80, "valid": 20}
                                           for d in range(10)}
    assert "split:   train/valid rows per class: 0: 80/20, 1: 80/20" in result["log"]
    assert result["training"]["final_valid_accuracy"] >= 0.5
