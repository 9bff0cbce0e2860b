"""Knowledge distillation: the student's loss mixes the teacher's soft targets (at a
temperature) with the hard labels, weighted by alpha; the teacher runs once, never trained."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_vars, run_cli
from safety_helpers import assert_clean_error

from ckptsurgery.train.data import BUILTIN_SUBSET

STUDENT = ("--at", "hiddens3", "--dense", "new_hidden:20:relu", "--dense", "new_logits:10")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """The reference MLP trained 2 epochs on the packaged MNIST subset."""
    out = tmp_path_factory.mktemp("teacher")
    r = run_cli("demo", "base", "--out", str(out), "--epochs", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    return str(out / "my_model.ckpt")


@pytest.fixture(scope="module")
def noisy_labels(tmp_path_factory) -> str:
    """The subset with every training label replaced at random (validation rows, drawn from
    them, too); the test part keeps its true labels."""
    with np.load(BUILTIN_SUBSET) as f:
        x, y, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    y = np.random.RandomState(0).randint(0, 10, len(y))
    path = tmp_path_factory.mktemp("noisy") / "noisy.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    return str(path)


def _student(teacher, data, out, *extra, result=False):
    r = run_cli("graft", teacher, *STUDENT, "--data", data, "--epochs", "2", "--seed", "3",
                "--out", out, "--json", "--quiet", *extra)
    assert r.returncode == 0, r.stderr
    import json

    return (json.loads(r.stdout) | {"log": r.stderr}) if result else \
        json.loads(r.stdout)["training"]["test_accuracy"]


def test_soft_targets_teach_where_the_labels_are_noise(teacher, noisy_labels, tmp_path):
    """Random training labels: alone they teach nothing; with alpha 1 the student learns the
    digits from the teacher's soft targets (accuracy on the test part's true labels)."""
    hard = _student(teacher, noisy_labels, str(tmp_path / "h.ckpt"))
    soft = _student(teacher, noisy_labels, str(tmp_path / "s.ckpt"), "--distill-from", teacher,
                    "--alpha", "1")
    print(f"noisy labels: hard {hard:.4f}, distilled {soft:.4f}")
    # measured: hard 0.095 (chance 0.1), distilled 0.451 from a 2-epoch teacher
    assert hard < 0.2 and soft > 0.35


def test_alpha_zero_is_training_on_the_labels_alone(teacher, tmp_path):
    _student(teacher, BUILTIN_SUBSET, str(tmp_path / "h.ckpt"))
    _student(teacher, BUILTIN_SUBSET, str(tmp_path / "d.ckpt"), "--distill-from", teacher,
             "--alpha", "0")
    plain, distilled = read_vars(str(tmp_path / "h.ckpt")), read_vars(str(tmp_path / "d.ckpt"))
    for name in ("new_hidden/kernel", "new_logits/kernel", "hidden1/kernel"):
        assert plain[name].tobytes() == distilled[name].tobytes(), name


@pytest.mark.parametrize("extra, words", [
    (("--alpha", "1.5"), ("--alpha 1.5", "between 0 and 1")),
    (("--temperature", "0"), ("--temperature 0", "above 0")),
])
def test_bad_distillation_settings_are_one_line(teacher, tmp_path, extra, words):
    r = run_cli("graft", teacher, *STUDENT, "--data", BUILTIN_SUBSET, "--distill-from",
                teacher, *extra, "--out", str(tmp_path / "x.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, *words)


def test_a_teacher_with_other_classes_is_refused(teacher, tmp_path):
    r = run_cli("graft", teacher, "--at", "hiddens3", "--dense", "new_logits:5", "--data",
                BUILTIN_SUBSET, "--classes", "0-4", "--distill-from", teacher, "--out",
                str(tmp_path / "x.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "teacher gives 10 logits, the student 5")
    assert not (tmp_path / "x.ckpt.index").exists()


def test_the_teacher_tensor_and_its_validation_accuracy_are_reported(teacher, tmp_path):
    result = _student(teacher, BUILTIN_SUBSET, str(tmp_path / "d.ckpt"), "--distill-from",
                      teacher, result=True)
    told = result["teacher"]
    assert told["output"] == "dnn/logits/BiasAdd:0" and told["checkpoint"] == teacher
    assert told["chance"] < 0.2 < 0.3 < told["valid_accuracy"] <= 1  # a 2-epoch teacher: 0.46
    assert (f"({told['output']}) at temperature 4, alpha 0.7; the teacher's accuracy on the "
            f"5,000 validation rows: {told['valid_accuracy']:.4f}") in result["log"]
    assert "no better than chance" not in result["log"]


def test_a_teacher_no_better_than_chance_is_a_warning(teacher, tmp_path):
    """Labels shifted by one digit: the teacher, right about the digits, is wrong on every
    row it gets right."""
    with np.load(BUILTIN_SUBSET) as f:
        x, y = f["x_train"], f["y_train"]
    np.savez(tmp_path / "shifted.npz", x_train=x, y_train=(y + 1) % 10)
    result = _student(teacher, str(tmp_path / "shifted.npz"), str(tmp_path / "d.ckpt"),
                      "--distill-from", teacher, "--epochs", "1", result=True)
    assert result["teacher"]["valid_accuracy"] < result["teacher"]["chance"]
    assert "warning: --distill-from: the teacher (dnn/logits/BiasAdd:0) is no better than " \
           "chance on the validation rows" in result["log"]


def test_a_teacher_worse_than_the_measured_labels_only_student_is_a_warning(teacher, tmp_path):
    from ckptsurgery.errors import CkptSurgeryWarning
    from ckptsurgery.graft.build import GraftSpec
    from ckptsurgery.graft.distill import Distillation
    from ckptsurgery.graft.job import GraftJob, run_graft
    from ckptsurgery.graph.layers import DenseSpec
    from ckptsurgery.train.fit import TrainConfig

    job = GraftJob(teacher, GraftSpec("hiddens3", [DenseSpec("new_logits", 10)]), None,
                   data=BUILTIN_SUBSET, train=TrainConfig(epochs=1, progress=False),
                   distill=Distillation(teacher), labels_only_accuracy=0.99)
    with pytest.warns(CkptSurgeryWarning, match=r"the teacher \(0\.\d+ on the validation rows\) "
                                                r"is worse than the student on the labels "
                                                r"alone \(0\.9900\)"):
        result = run_graft(job, log=lambda _: None)
    assert result.teacher["labels_only_accuracy"] == 0.99
