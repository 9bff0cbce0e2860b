"""``ckptsurgery demo``: the seven steps, the report, the frozen-layer check, step by step runs.

The fast tests run the demo for one epoch on the MNIST subset shipped in the package; the slow
one runs it as the README says, on full MNIST, and checks the published accuracies.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import read_vars, run_cli

STEPS = ["base", "graft", "freeze-varlist", "freeze-stop-gradient", "cache", "fine-tune",
         "distill"]
TRANSFER = ["freeze-varlist", "freeze-stop-gradient", "cache"]
CHECKPOINTS = {
    "base": "my_model.ckpt", "graft": "my_new_model.ckpt",
    "freeze-varlist": "my_transfer_model.ckpt", "freeze-stop-gradient": "my_transfer_model2.ckpt",
    "cache": "my_caching_model.ckpt", "fine-tune": "my_finetuned_model.ckpt",
    "distill": "my_distilled_model.ckpt",
}
#: Validation accuracies of the original write-up (../shared/data/README.md), 5 epochs each.
REFERENCE = {"base": 0.9570, "graft": 0.9752, "freeze-varlist": 0.9584,
             "freeze-stop-gradient": 0.9576, "cache": 0.9576}


@pytest.fixture
def subset_run(demo_run):
    """All seven steps, one epoch each, on the built-in subset (the session's one demo run)."""
    return demo_run


def _report(out: str) -> dict:
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        return json.load(f)


def test_the_demo_writes_seven_checkpoints_and_the_report(subset_run):
    out, _, _ = subset_run
    for name in CHECKPOINTS.values():
        for suffix in (".index", ".meta", ".data-00000-of-00001"):
            assert os.path.isfile(os.path.join(out, name + suffix)), name + suffix
    for name in ("report.json", "report.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    # the distill step's six comparison runs write nothing
    assert sorted(f for f in os.listdir(out) if f.endswith(".index")) == sorted(
        c + ".index" for c in CHECKPOINTS.values())
    with open(os.path.join(out, "accuracy.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_demo_log_is_short_a_few_lines_per_step(subset_run):
    """The steps' plans are their totals, the epochs one line: the whole log (the table aside,
    which --json replaces) stays well under 80 lines."""
    _, proc, _ = subset_run
    log = [ln for ln in proc.stderr.splitlines() if not ln.startswith("ckptsurgery: warning")]
    assert len(log) < 60, "\n".join(log)
    assert sum(ln.startswith("[") for ln in log) == 7
    assert sum("valid accuracy per epoch" in ln for ln in log) == 7
    assert sum(ln.strip().startswith("seed ") for ln in log) == 3  # distill: its comparison
    assert not any(ln.strip().startswith(("hidden1/kernel", "epoch 1/")) for ln in log)


def test_report_json_holds_each_steps_results(subset_run):
    out, _, printed = subset_run
    report = _report(out)
    assert printed == report, "--json prints the report"
    assert list(report["steps"]) == STEPS
    assert report["data"]["source"] == "built-in MNIST subset"
    assert report["data"]["valid_rows"] == 5000
    for name, step in report["steps"].items():
        assert step["checkpoint"] == CHECKPOINTS[name]
        assert len(step["valid_accuracy"]) == len(step["seconds"]) == 1
        assert 0.1 < step["final_valid_accuracy"] <= 1.0, name
        assert step["final_valid_accuracy"] == max(step["valid_accuracy"])
        assert 0.0 < step["test_accuracy"] <= 1.0
        assert set(step["params"]) == {"trained", "frozen", "new", "reused"}


def test_parameter_counts_follow_what_each_step_trains(subset_run):
    steps = _report(subset_run[0])["steps"]
    mlp = 784 * 300 + 300 + 300 * 50 + 50 + 3 * (50 * 50 + 50) + 50 * 10 + 10
    assert steps["base"]["params"] == {"trained": mlp, "frozen": 0, "new": mlp, "reused": 0}
    new_top = 50 * 20 + 20 + 20 * 10 + 10
    frozen = 784 * 300 + 300 + 300 * 50 + 50
    for name in TRANSFER:
        assert steps[name]["params"] == {"trained": 50 * 50 + 50 + new_top, "frozen": frozen,
                                         "new": new_top, "reused": frozen + 50 * 50 + 50}
    assert steps["graft"]["params"]["frozen"] == steps["fine-tune"]["params"]["frozen"] == 0
    assert steps["fine-tune"]["params"]["new"] == 0
    assert steps["distill"]["params"] == steps["graft"]["params"]


def test_the_distill_step_compares_three_seeds_and_keeps_a_distilled_student(subset_run):
    out = subset_run[0]
    step = _report(out)["steps"]["distill"]
    table = step["distill"]
    assert table["seeds"] == [1, 2, 3] and table["per_class"] == 100
    assert len(table["labels_alone"]) == len(table["distilled"]) == 3
    assert all(0.1 < a < 1 for a in table["labels_alone"] + table["distilled"])
    assert table["labels_alone"] != table["distilled"], "the soft targets change training"
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        md = f.read()
    assert "## Distillation" in md
    assert f"| 2 | {table['labels_alone'][1]:.4f} | {table['distilled'][1]:.4f} |" in md


def test_frozen_check_shows_hidden1_2_unchanged_in_transfer_steps_changed_in_fine_tune(subset_run):
    steps = _report(subset_run[0])["steps"]
    assert steps["base"]["frozen_check"] is None
    for name in TRANSFER:
        check = steps[name]["frozen_check"]
        assert check["hidden1_2"] == "identical", name
        assert check["layers"]["hidden1"]["status"] == check["layers"]["hidden2"]["status"] \
            == "identical"
        assert check["layers"]["hidden3"]["status"] == "changed"
        assert check["frozen_identical"] is True
    for name in ("graft", "fine-tune"):
        check = steps[name]["frozen_check"]
        assert check["hidden1_2"] == "changed", name
        assert check["layers"]["hidden1"]["max_abs_diff"] > 0
        assert check["frozen_identical"] is None


def test_frozen_check_agrees_with_the_checkpoints_themselves(subset_run):
    out = subset_run[0]
    base = read_vars(os.path.join(out, CHECKPOINTS["base"]))
    lower = ["hidden1/kernel", "hidden1/bias", "hidden2/kernel", "hidden2/bias"]
    for name in TRANSFER:
        values = read_vars(os.path.join(out, CHECKPOINTS[name]))
        for var in lower:
            assert np.array_equal(values[var], base[var]), f"{name}: {var} moved"
    tuned = read_vars(os.path.join(out, CHECKPOINTS["fine-tune"]))
    assert not np.array_equal(tuned["hidden1/kernel"], base["hidden1/kernel"])


def test_fine_tune_starts_from_the_best_transfer_step(subset_run):
    steps = _report(subset_run[0])["steps"]
    best = max(TRANSFER, key=lambda n: steps[n]["final_valid_accuracy"])
    assert steps["fine-tune"]["started_from"] == best
    assert steps["fine-tune"]["source"] == CHECKPOINTS[best]


def test_report_md_shows_the_table_the_plot_and_the_check(subset_run):
    with open(os.path.join(subset_run[0], "report.md"), encoding="utf-8") as f:
        text = f.read()
    assert "| step | valid acc | test acc |" in text
    assert "![Validation accuracy per epoch](accuracy.png)" in text
    assert "| freeze-varlist | identical | identical | changed" in text


def test_an_existing_output_needs_force(subset_run):
    proc = run_cli("demo", "base", "--out", subset_run[0])
    assert proc.returncode == 2
    assert "my_model.ckpt' exists" in proc.stderr and "pass --force" in proc.stderr


def test_a_step_without_the_earlier_steps_outputs_fails_clearly(tmp_path):
    out = str(tmp_path / "empty")
    proc = run_cli("demo", "graft", "--out", out)
    assert proc.returncode == 2
    assert "step 'graft' needs the output of step 'base'" in proc.stderr
    assert "ckptsurgery demo base --out" in proc.stderr
    assert not os.path.exists(out), "nothing is written when a step cannot run"


def test_steps_run_alone_add_to_the_folders_report(tmp_path):
    out = str(tmp_path / "steps")
    assert run_cli("demo", "base", "--out", out, "--epochs", "1", "--quiet").returncode == 0
    proc = run_cli("demo", "graft", "--out", out, "--epochs", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(_report(out)["steps"]) == ["base", "graft"]
    assert "graft" in proc.stdout and "hidden1-2 vs base" in proc.stdout, "the table is printed"
    proc = run_cli("demo", "fine-tune", "--out", out, "--epochs", "1")
    assert proc.returncode == 2
    assert "needs the output of step 'freeze-varlist'" in proc.stderr


def test_missing_data_is_a_user_error(tmp_path):
    proc = run_cli("demo", "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "no data at" in proc.stderr
    assert not os.path.exists(tmp_path / "o")


def test_steps_after_base_are_graft_jobs():
    from ckptsurgery.graft.demo import DemoConfig, graft_job
    from ckptsurgery.graft.job import GraftJob

    config = DemoConfig(out="out", data="mnist.npz", epochs=3, seed=7)
    cache = graft_job("cache", config)
    assert isinstance(cache, GraftJob)
    assert (cache.spec.at, cache.spec.cut_after, cache.spec.restore_scope) == \
        ("hiddens3", "hiddens2", "hidden[123]")
    assert cache.train.cache_frozen and cache.train.epochs == 3 and cache.spec.seed == 7
    assert graft_job("freeze-varlist", config).spec.train_scope == "hidden[34]|logits"
    tune = graft_job("fine-tune", config, source="out/my_transfer_model.ckpt")
    assert tune.spec.layers == [] and tune.spec.uncut


@pytest.mark.slow
def test_full_mnist_reproduces_the_published_accuracies(mnist, tmp_path):
    out = str(tmp_path / "mnist")
    proc = run_cli("demo", "--data", mnist, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = _report(out)["steps"]
    for name, expected in REFERENCE.items():
        assert steps[name]["final_valid_accuracy"] == pytest.approx(expected, abs=0.01), name
        assert len(steps[name]["valid_accuracy"]) == 5
        assert steps[name]["final_valid_accuracy"] == max(steps[name]["valid_accuracy"])
    assert steps["graft"]["final_valid_accuracy"] >= 0.97  # the write-up's 0.9752
    assert read_vars(os.path.join(out, CHECKPOINTS["graft"])).keys() >= {
        f"hidden{i}/{k}" for i in (1, 2, 3) for k in ("kernel", "bias")}
    best_transfer = max(steps[n]["final_valid_accuracy"] for n in TRANSFER)
    assert steps["fine-tune"]["final_valid_accuracy"] >= best_transfer
    assert [steps[n]["frozen_check"]["hidden1_2"] for n in STEPS[1:]] == \
        ["changed", "identical", "identical", "identical", "changed", "changed"]
    # Issue 13: on 100 images per digit, the base's soft targets beat the labels alone, each seed.
    table = steps["distill"]["distill"]
    for seed, alone, distilled in zip(table["seeds"], table["labels_alone"], table["distilled"],
                                      strict=True):
        assert distilled > alone, f"seed {seed}: distilled {distilled} <= labels alone {alone}"


def test_the_cache_step_is_what_the_graft_command_gives(subset_run, tmp_path):
    from ckptsurgery.train.data import BUILTIN_SUBSET

    out = subset_run[0]
    mine = str(tmp_path / "cache.ckpt")
    proc = run_cli("graft", os.path.join(out, CHECKPOINTS["base"]), "--at", "hiddens3",
                   "--dense", "hidden4:20:relu", "--dense", "logits:10",
                   "--restore-scope", "hidden[123]", "--cut-after", "hiddens2", "--cache-frozen",
                   "--optimizer", "sgd", "--lr", "0.01", "--epochs", "1",
                   "--data", BUILTIN_SUBSET, "--out", mine, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    demo, graft = read_vars(os.path.join(out, CHECKPOINTS["cache"])), read_vars(mine)
    assert demo.keys() == graft.keys()
    for name in demo:
        assert np.array_equal(demo[name], graft[name]), name
