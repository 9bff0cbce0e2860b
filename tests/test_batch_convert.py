"""``convert`` on many checkpoints: outputs named after the inputs' layout plus the format's
suffix (a file, a tf2 prefix, a transformers folder), each bit-identical to converting that
checkpoint alone, recorded in the manifest so that a rerun skips them unless they changed."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safety_helpers import assert_clean_error, run_main, run_main_on_local_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
MANIFEST = ".ckptsurgery-batch.json"


def _tree(root, names: list[str]):
    """The fixture folders ``names`` copied under ``root/zoo``, the second one nested."""
    zoo = root / "zoo"
    for i, name in enumerate(names):
        shutil.copytree(os.path.join(FIXTURES, name), zoo / ("nested" if i else "") / name)
    return zoo


def _files(folder) -> dict[str, bytes]:
    """Every file under ``folder`` but the manifest, by relative path."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if name != MANIFEST:
                out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def _summary(stdout: str) -> str:
    return stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("convert"), ["mlp", "cnn"])


def test_safetensors_of_a_folder_mirror_its_layout_bit_identical_to_one_at_a_time(zoo, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_main("convert", str(zoo), "--to", "safetensors", "--torch-layout",
                                 "--out-dir", str(out), "--jobs", "2")
    assert code == 0, err
    assert _summary(stdout) == "2 done, 0 skipped (finished before), 0 failed"
    alone = tmp_path / "alone"
    for rel in ("mlp/my_model.ckpt", "nested/cnn/model.ckpt"):
        code, _, err = run_main("convert", str(zoo / rel), "--to", "safetensors",
                                "--torch-layout", "--out", str(alone / f"{rel}.safetensors"),
                                "--quiet")
        assert code == 0, err
    assert sorted(_files(out)) == ["mlp/my_model.ckpt.safetensors",
                                   "nested/cnn/model.ckpt.safetensors"]
    assert _files(out) == _files(alone)
    entries = json.loads((out / MANIFEST).read_text())["inputs"]
    assert sorted(os.path.relpath(e["output"], out) for e in entries.values()) == [
        "mlp/my_model.ckpt.safetensors", "nested/cnn/model.ckpt.safetensors"]
    assert {name for e in entries.values() for name in e["output_files"]} == {
        "my_model.ckpt.safetensors", "model.ckpt.safetensors"}


def test_a_rerun_skips_finished_files_and_redoes_a_damaged_one(zoo, tmp_path):
    out = tmp_path / "out"
    argv = ("convert", str(zoo), "--to", "npz", "--out-dir", str(out), "--jobs", "1")
    assert run_main(*argv)[0] == 0
    code, stdout, _ = run_main(*argv)
    assert code == 0 and _summary(stdout) == "0 done, 2 skipped (finished before), 0 failed"
    damaged = out / "mlp" / "my_model.ckpt.npz"
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-10])
    code, stdout, err = run_main(*argv)
    assert code == 0, err
    assert _summary(stdout) == "1 done, 1 skipped (finished before), 0 failed"
    assert "mlp/my_model.ckpt" in stdout.splitlines()[0]
    assert damaged.read_bytes() == good


def test_a_tf2_batch_writes_prefixes_that_verify(zoo, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_main("convert", str(zoo), "--to", "tf2", "--out-dir", str(out),
                                 "--jobs", "1")
    assert code == 0, err
    code, stdout, err = run_main("verify", str(out), "--jobs", "1", "--json")
    report = json.loads(stdout)
    assert code == 0 and (report["done"], report["failed"]) == (2, 0), err
    assert sorted(r["relative"] for r in report["results"]) == [
        "mlp/my_model.ckpt", "nested/cnn/model.ckpt"]


def test_hf_folders_are_recorded_file_by_file_and_a_changed_one_is_redone(tmp_path):
    zoo = _tree(tmp_path, ["bert_classifier", "gpt2"])
    out = tmp_path / "out"
    argv = ("convert", str(zoo), "--to", "hf", "--out-dir", str(out), "--jobs", "2")
    code, stdout, err = run_main(*argv)
    assert code == 0, err
    assert _summary(stdout) == "2 done, 0 skipped (finished before), 0 failed"
    alone = tmp_path / "alone"
    code, _, err = run_main("convert", str(zoo / "nested" / "gpt2"), "--to", "hf", "--out",
                            str(alone), "--quiet")
    assert code == 0, err
    assert _files(out / "nested" / "gpt2" / "model.ckpt") == _files(alone)
    entries = json.loads((out / MANIFEST).read_text())["inputs"]
    bert = entries[str(zoo / "bert_classifier" / "model.ckpt")]
    assert sorted(bert["output_files"]) == ["config.json", "model.safetensors",
                                            "tokenizer_config.json", "vocab.txt"]
    code, stdout, _ = run_main(*argv)
    assert code == 0 and _summary(stdout) == "0 done, 2 skipped (finished before), 0 failed"
    os.remove(out / "bert_classifier" / "model.ckpt" / "vocab.txt")
    code, stdout, err = run_main(*argv)
    assert code == 0, err
    assert _summary(stdout) == "1 done, 1 skipped (finished before), 0 failed"
    assert (out / "bert_classifier" / "model.ckpt" / "vocab.txt").is_file()


def test_one_convert_still_needs_out_and_a_batch_needs_out_dir(zoo):
    code, _, err = run_main("convert", str(zoo / "mlp"), "--to", "npz")
    assert_clean_error(code, err, 2, "--out", "--out-dir")
    code, _, err = run_main("convert", str(zoo), "--to", "npz")
    assert_clean_error(code, err, 2, "--out-dir")


def test_options_that_do_not_go_together_are_one_line_before_any_task(zoo, tmp_path):
    code, stdout, err = run_main("convert", str(zoo), "--to", "npz", "--dry-run", "--out-dir",
                                 str(tmp_path / "out"))
    assert_clean_error(code, err, 2, "--dry-run apply to --to hf only")
    assert stdout == "" and not (tmp_path / "out").exists()
    code, stdout, err = run_main("strip", str(zoo), "--out-dir", str(tmp_path / "out"))
    assert_clean_error(code, err, 2, "nothing to strip")
    code, stdout, err = run_main("rename", str(zoo), "--map", "(=x", "--out-dir",
                                 str(tmp_path / "out"))
    assert_clean_error(code, err, 2, "(")
    assert stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dask_converts_to_the_same_files_and_manifest(zoo, tmp_path):
    argv = ("convert", str(zoo), "--to", "safetensors", "--out-dir")
    assert run_main(*argv, str(tmp_path / "local"), "--jobs", "1")[0] == 0
    code, stdout, err = run_main_on_local_cluster(*argv, str(tmp_path / "dask"))
    assert code == 0, err
    assert _summary(stdout) == "2 done, 0 skipped (finished before), 0 failed"
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")

    def without_times(folder):
        entries = json.loads((folder / MANIFEST).read_text())["inputs"]
        return {src: (os.path.relpath(e["output"], folder), sorted(e["output_files"]),
                      e["command"], e["state"]) for src, e in entries.items()}

    assert without_times(tmp_path / "dask") == without_times(tmp_path / "local")


def test_an_hf_folder_to_a_url_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gpt2 = os.path.join(FIXTURES, "gpt2")
    for argv in (("--out", "memory://models/hf"), ("--out-dir", "memory://models/hf")):
        code, _, err = run_main("convert", gpt2, "--to", "hf", *argv)
        assert_clean_error(code, err, 2, "memory://models/hf", "local folder", "copy it up")
    code, _, err = run_main("export", os.path.join(FIXTURES, "mlp"), "--to", "tflite", "--out",
                            "memory://models/m.tflite")
    assert_clean_error(code, err, 2, "memory://models/m.tflite", "local path only")
    assert os.listdir(tmp_path) == []
