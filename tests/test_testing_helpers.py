"""ckptsurgery.testing: the assertions users call from their own tests must pass and fail right."""

from __future__ import annotations

import pytest
import tensorflow as tf

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graft.build import GraftSpec
from ckptsurgery.graft.job import GraftJob, run_graft
from ckptsurgery.graph.importer import import_meta_graph
from ckptsurgery.graph.layers import DenseSpec
from ckptsurgery.graphdef.edit import cut
from ckptsurgery.testing import (
    assert_changed,
    assert_no_gradient,
    assert_restores,
    assert_unchanged,
)


@pytest.fixture(scope="module")
def grafted(tmp_path_factory):
    from conftest import FIXTURE_MLP

    out = str(tmp_path_factory.mktemp("t") / "g.ckpt")
    run_graft(GraftJob(FIXTURE_MLP, GraftSpec("hiddens3", [DenseSpec("logits", 10)]), out),
              log=lambda line: None)
    return out


def test_unchanged_passes_on_kept_layers(mlp_ckpt, grafted):
    assert assert_unchanged(mlp_ckpt, grafted, scope="hidden[123]/") == [
        "hidden1/bias", "hidden1/kernel", "hidden2/bias", "hidden2/kernel",
        "hidden3/bias", "hidden3/kernel"]


def test_unchanged_fails_naming_what_moved(mlp_ckpt, grafted):
    with pytest.raises(AssertionError, match=r"logits/kernel: changed \(max abs diff") as e:
        assert_unchanged(mlp_ckpt, grafted)
    assert "hidden4/kernel: missing from" in str(e.value)


def test_changed_fails_on_identical_variables(mlp_ckpt, grafted):
    with pytest.raises(AssertionError, match="did not change: hidden1/bias"):
        assert_changed(mlp_ckpt, grafted, scope="hidden1/")


def test_scope_matching_nothing_fails(mlp_ckpt, grafted):
    with pytest.raises(AssertionError, match="matches no variable"):
        assert_unchanged(mlp_ckpt, grafted, scope="nothing")


def test_restores_returns_shapes_and_fails_on_missing(grafted, tmp_path):
    assert assert_restores(grafted)["logits/kernel"] == [50, 10]
    with pytest.raises(AssertionError, match="plain TensorFlow cannot load"):
        assert_restores(str(tmp_path / "none.ckpt"))


def test_no_gradient_tells_cut_from_uncut(mlp_ckpt):
    meta = open_checkpoint(mlp_ckpt).meta_graph
    for edited, frozen in ((cut(meta, "dnn/hidden2/Relu:0")[0], True), (meta, False)):
        g = tf.Graph()
        import_meta_graph(edited, g)
        loss = g.get_tensor_by_name("loss/loss:0")
        if frozen:
            assert assert_no_gradient(g, loss, "hidden[12]/") == [
                "hidden1/kernel", "hidden1/bias", "hidden2/kernel", "hidden2/bias"]
        else:
            with pytest.raises(AssertionError, match="gradient reaches: hidden1/kernel"):
                assert_no_gradient(g, loss, "hidden[12]/")
