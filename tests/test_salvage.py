"""salvage: a .meta with devices pinned, stale collection entries and an op type this
TensorFlow does not register becomes one that plain import_meta_graph accepts and whose
variables restore."""

from __future__ import annotations

import pytest
from conftest import FIXTURE_MLP, read_vars, run_cli
from migrate_helpers import restore_values
from safety_helpers import assert_clean_error, copy_checkpoint

from ckptsurgery.formats.metafile import read_meta_graph, write_meta_graph


@pytest.fixture
def broken(tmp_path) -> str:
    """The MLP fixture with its .meta edited as old TF 1.x graphs are: nodes on /gpu:0, a
    collection naming an op that is gone, and a contrib-only op (with a summary reading it)
    that no TensorFlow today registers."""
    prefix = copy_checkpoint(FIXTURE_MLP, str(tmp_path / "in"))
    meta = read_meta_graph(prefix + ".meta")
    for node in meta.graph_def.node[:20]:
        node.device = "/device:GPU:0"
    op = meta.graph_def.node.add()
    op.name, op.op = "contrib/fancy_metric", "ContribFancyMetric"
    op.input.append("dnn/logits/BiasAdd")
    summary = meta.graph_def.node.add()
    summary.name, summary.op = "summaries/fancy", "Identity"
    summary.input.append("contrib/fancy_metric")
    summary.attr["T"].type = 1
    meta.collection_def["trainops"].node_list.value.append("Adam_gone")
    write_meta_graph(meta, prefix + ".meta")
    return prefix


def _plain_import(prefix: str) -> str | None:
    import tensorflow as tf

    try:
        with tf.Graph().as_default():
            tf.compat.v1.train.import_meta_graph(prefix + ".meta")
    except Exception as e:  # noqa: BLE001 - what plain TF says is the point
        return str(e)
    return None


def test_inspect_names_the_unregistered_op_and_suggests_salvage(broken):
    r = run_cli("inspect", broken)
    assert r.returncode == 0, r.stderr
    assert "unregistered op(s): ContribFancyMetric" in r.stdout
    assert "ckptsurgery salvage CKPT --drop-unregistered" in r.stdout


def test_drop_unregistered_gives_a_meta_plain_tensorflow_imports_and_restores(broken, tmp_path):
    assert "ContribFancyMetric" in (_plain_import(broken) or "")
    out = str(tmp_path / "out" / "model.ckpt")
    r = run_cli("salvage", broken, "--drop-unregistered", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "unregistered op types: ContribFancyMetric (1 node)" in r.stdout
    assert "removed with them: contrib/fancy_metric, summaries/fancy" in r.stdout
    pinned = sum(1 for n in read_meta_graph(broken + ".meta").graph_def.node if n.device)
    assert pinned >= 20 and f"devices cleared on {pinned} node(s)" in r.stdout
    assert _plain_import(out) is None
    meta = read_meta_graph(out + ".meta")
    assert not any(n.device for n in meta.graph_def.node)
    assert "Adam_gone" not in "".join(meta.collection_def["trainops"].node_list.value) \
        if "trainops" in meta.collection_def else True
    source, restored = read_vars(broken), restore_values(out)
    assert sorted(restored) == sorted(source)
    for key, value in source.items():
        assert restored[key].tobytes() == value.tobytes(), key


def test_without_drop_the_report_says_what_still_blocks_the_import(broken, tmp_path):
    out = str(tmp_path / "out" / "model.ckpt")
    r = run_cli("salvage", broken, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "the result still uses ContribFancyMetric: pass --drop-unregistered" in r.stdout
    assert not any(n.device for n in read_meta_graph(out + ".meta").graph_def.node)


def test_an_unregistered_op_a_variable_needs_is_refused(tmp_path):
    prefix = copy_checkpoint(FIXTURE_MLP, str(tmp_path / "in"))
    meta = read_meta_graph(prefix + ".meta")
    init = next(n for n in meta.graph_def.node if n.name == "hidden1/kernel/Initializer/random_uniform")
    init.op = "ContribInitializer"
    write_meta_graph(meta, prefix + ".meta")
    r = run_cli("salvage", prefix, "--drop-unregistered", "--out", str(tmp_path / "o.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "does not register", "TensorFlow version")
    assert not (tmp_path / "o.ckpt.index").exists()
