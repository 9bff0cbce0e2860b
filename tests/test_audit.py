"""``ckptsurgery audit`` flags graphs that touch files, the network or run code; graft refuses
to run them without --allow-unsafe-ops."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import CORPUS, corpus_entries
from safety_helpers import assert_clean_error, run_main

EXIT_FLAGGED = 3
GRAFT = ("--at", "hiddens3", "--dense", "hidden4:20:relu", "--dense", "logits:10")


def _make(folder: str, add_ops, *, wire_into: str | None = "dnn/hidden1/MatMul") -> str:
    """The reference MLP plus the ops ``add_ops(graph, folder)`` adds, exported with its saver;
    the op named ``wire_into`` gets a control input on the first added op, so that computing
    the model runs it (what a hostile graph would do)."""
    import tensorflow as tf

    from ckptsurgery.formats.metafile import read_meta_graph, write_meta_graph
    from ckptsurgery.graph.export import export_checkpoint
    from ckptsurgery.graph.models import build_mlp

    graph = tf.Graph()
    graph.seed = 42
    build_mlp(graph)
    with graph.as_default():
        first = add_ops(graph, folder)
    prefix = os.path.join(folder, "model.ckpt")
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        export_checkpoint(sess, graph, prefix)
    if wire_into:
        meta = read_meta_graph(prefix + ".meta")
        next(n for n in meta.graph_def.node if n.name == wire_into).input.append("^" + first)
        write_meta_graph(meta, prefix + ".meta")
    return prefix


def _write_file(graph, folder):
    import tensorflow as tf

    tf.io.write_file(os.path.join(folder, "PWNED"), tf.constant("owned"), name="leak")
    return "leak"


def _read_file(graph, folder):
    import tensorflow as tf

    tf.io.read_file("/etc/hostname", name="peek")
    return "peek"


def _foreign_save(graph, folder):
    import tensorflow as tf

    var = graph.get_collection("variables")[0]
    tf.raw_ops.SaveV2(prefix=tf.constant(os.path.join(folder, "exfil")), tensor_names=["w"],
                      shape_and_slices=[""], tensors=[var], name="exfil")
    return "exfil"


def _in_a_function(graph, folder):
    import tensorflow as tf

    @tf.function
    def hidden(x):
        tf.io.write_file(os.path.join(folder, "FN"), tf.strings.as_string(tf.reduce_sum(x)))
        return x

    return hidden(tf.constant([1.0])).op.name


@pytest.fixture(scope="module")
def unsafe(tmp_path_factory) -> dict[str, str]:
    """Checkpoints whose graphs hold a WriteFile, a ReadFile, a SaveV2 outside the saver, and a
    WriteFile inside a library function."""
    root = tmp_path_factory.mktemp("unsafe")
    made = {}
    for name, add in (("write", _write_file), ("read", _read_file), ("save", _foreign_save),
                      ("function", _in_a_function)):
        folder = root / name
        folder.mkdir()
        made[name] = _make(str(folder), add, wire_into=None if name == "function" else
                           "dnn/hidden1/MatMul")
    return made


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> str:
    """A few random MNIST-shaped images in Keras's mnist.npz layout."""
    rng = np.random.RandomState(0)
    path = str(tmp_path_factory.mktemp("data") / "tiny.npz")
    np.savez(path, x_train=rng.randint(0, 255, (60, 28, 28)).astype(np.uint8),
             y_train=rng.randint(0, 10, 60).astype(np.uint8),
             x_test=rng.randint(0, 255, (20, 28, 28)).astype(np.uint8),
             y_test=rng.randint(0, 10, 20).astype(np.uint8))
    return path


def test_clean_fixture_passes(mlp_ckpt):
    code, out, err = run_main("audit", mlp_ckpt)
    assert code == 0 and err == ""
    assert "2 of them the saver's own save/restore ops (accepted)" in out
    assert "no op reads or writes files" in out


@pytest.mark.parametrize("entry", corpus_entries())
def test_corpus_graphs_pass(shared, entry):
    record = json.load(open(os.path.join(CORPUS, entry, "record.json")))
    code, out, _ = run_main("audit", os.path.join(CORPUS, entry, record["prefix"]), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["flagged"] == []
    if record["has_meta"]:
        assert report["ops_checked"] == record["meta_n_nodes"]
        assert report["saver_ops"] >= 1


def test_writefile_is_flagged(unsafe):
    code, out, _ = run_main("audit", unsafe["write"])
    assert code == EXIT_FLAGGED
    assert "FLAGGED (1):" in out
    assert "WriteFile  leak  [writes files]" in out


def test_readfile_is_flagged(unsafe):
    code, out, _ = run_main("audit", unsafe["read"], "--json")
    assert code == EXIT_FLAGGED
    assert json.loads(out)["flagged"] == [
        {"op": "peek", "type": "ReadFile", "category": "reads files",
         "reason": "reads the file its input names", "function": ""}]


def test_save_op_outside_the_saver_is_flagged_and_the_savers_own_are_not(unsafe):
    from ckptsurgery.safety.audit import audit_checkpoint

    report = audit_checkpoint(unsafe["save"])
    assert [(f.type, f.op, f.category) for f in report.findings] == [
        ("SaveV2", "exfil", "writes files")]
    assert report.saver_ops == 2  # save/SaveV2 and save/RestoreV2


def test_save_op_in_the_saver_scope_with_its_own_path_is_flagged(mlp_ckpt, tmp_path):
    """A SaveV2 hidden in the saver's scope, writing where the graph wants and run with the
    saver's restore: not the saver's own."""
    from ckptsurgery.formats.metafile import read_meta_graph
    from ckptsurgery.safety.audit import audit_meta_graph

    meta = read_meta_graph(mlp_ckpt + ".meta")
    nodes = {n.name: n for n in meta.graph_def.node}
    path = meta.graph_def.node.add()
    path.CopyFrom(nodes["save/Const"])
    path.name = "save/evil_path"
    path.attr["value"].tensor.string_val[:] = [b"/home/someone/.bashrc"]
    evil = meta.graph_def.node.add()
    evil.CopyFrom(nodes["save/SaveV2"])
    evil.name = "save/evil"
    evil.input[0] = "save/evil_path"
    nodes["save/restore_all"].input.append("^save/evil")
    report = audit_meta_graph(meta)
    assert [(f.type, f.op) for f in report.findings] == [("SaveV2", "save/evil")]


def test_ops_inside_library_functions_are_flagged(unsafe):
    from ckptsurgery.safety.audit import audit_checkpoint

    report = audit_checkpoint(unsafe["function"])
    assert [(f.type, f.category) for f in report.findings] == [("WriteFile", "writes files")]
    assert report.findings[0].function.startswith("__inference_hidden")


def test_a_lone_meta_file_can_be_audited(unsafe, tmp_path):
    lone = tmp_path / "lone.meta"
    lone.write_bytes(open(unsafe["write"] + ".meta", "rb").read())
    assert run_main("audit", str(lone))[0] == EXIT_FLAGGED


def test_audit_of_a_missing_checkpoint_is_an_error(tmp_path):
    code, _, err = run_main("audit", str(tmp_path / "none.ckpt"))
    assert_clean_error(code, err, 2, "no checkpoint at")


@pytest.mark.parametrize("kind", ["write", "read"])
def test_graft_with_training_refuses_a_flagged_graph(unsafe, kind, tiny_npz, tmp_path):
    out = str(tmp_path / "x.ckpt")
    code, _, err = run_main("graft", unsafe[kind], *GRAFT, "--data", tiny_npz, "--epochs", "1",
                            "--valid-size", "10", "--out", out)
    op = {"write": "WriteFile 'leak'", "read": "ReadFile 'peek'"}[kind]
    assert_clean_error(code, err, 2, "1 op(s) that touch files, the network or run code", op,
                       "ckptsurgery audit", "--allow-unsafe-ops")
    assert not os.path.exists(os.path.join(os.path.dirname(unsafe["write"]), "PWNED"))
    assert os.listdir(tmp_path) == []


def test_allow_unsafe_ops_runs_the_graph_and_its_op(unsafe, tiny_npz, tmp_path):
    """Shows the refusal matters: allowed, the graph's WriteFile really runs during training."""
    pwned = os.path.join(os.path.dirname(unsafe["write"]), "PWNED")
    code, _, err = run_main("graft", unsafe["write"], *GRAFT, "--data", tiny_npz, "--epochs", "1",
                            "--valid-size", "10", "--quiet", "--allow-unsafe-ops",
                            "--out", str(tmp_path / "x.ckpt"))
    try:
        assert code == 0, err
        assert open(pwned).read() == "owned"
    finally:
        if os.path.exists(pwned):
            os.remove(pwned)


def test_dry_run_of_a_flagged_graph_runs_nothing_and_is_allowed(unsafe):
    code, out, _ = run_main("graft", unsafe["write"], *GRAFT, "--out", "x", "--dry-run")
    assert code == 0 and "dry run: nothing written" in out
