"""The library pieces under `graft`: dense layers, lookups, scope selection, prune, cut, restore."""

from __future__ import annotations

import glob
import os
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import CORPUS, corpus_entries

from ckptsurgery.errors import NotFoundError, RestoreError, SelectionError
from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graph.importer import import_meta_graph
from ckptsurgery.graph.layers import DenseSpec, dense, parse_dense
from ckptsurgery.graph.models import build_mlp
from ckptsurgery.graph.restore import restore
from ckptsurgery.graphdef.edit import cut, prune
from ckptsurgery.graphdef.select import CkptSurgeryWarning, resolve_tensor, select_variables

tf1 = tf.compat.v1


@pytest.fixture
def meta(mlp_ckpt):
    return open_checkpoint(mlp_ckpt).meta_graph


def test_dense_layers_are_named_like_tf_layers_dense():
    g = tf.Graph()
    mlp = build_mlp(g)
    names = {op.name for op in g.get_operations()}
    assert {"dnn/hidden1/MatMul", "dnn/hidden1/BiasAdd", "dnn/hidden1/Relu",
            "dnn/logits/MatMul", "dnn/logits/BiasAdd"} <= names
    assert "dnn/logits/Relu" not in names
    assert [v.op.name for v in g.get_collection("trainable_variables")][:2] == [
        "hidden1/kernel", "hidden1/bias"]
    assert g.get_operation_by_name("hidden1/kernel").type == "VariableV2"
    assert "hidden1/kernel/Initializer/random_uniform" in names
    assert "hidden1/bias/Initializer/zeros" in names
    assert mlp.logits.name == "dnn/logits/BiasAdd:0"


def test_dense_refuses_existing_layer_name():
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf1.float32, (None, 4))
    dense(x, DenseSpec("a", 3))
    with pytest.raises(Exception, match="already has variables 'a/...'"):
        dense(x, DenseSpec("a", 3))


def test_parse_dense():
    assert parse_dense("hidden4:20:relu") == DenseSpec("hidden4", 20, "relu")
    assert parse_dense("logits:10") == DenseSpec("logits", 10, "linear")
    with pytest.raises(Exception, match="unknown activation 'rleu'"):
        parse_dense("h:3:rleu")


def test_resolve_by_collection_tensor_and_op(meta):
    assert resolve_tensor(meta, "hiddens3") == "dnn/hidden3/Relu:0"
    assert resolve_tensor(meta, "dnn/hidden3/Relu:0") == "dnn/hidden3/Relu:0"
    assert resolve_tensor(meta, "dnn/hidden3/Relu") == "dnn/hidden3/Relu:0"


def test_resolve_miss_names_nearest_collection(meta):
    with pytest.raises(NotFoundError, match="did you mean collection 'hiddens3'"):
        resolve_tensor(meta, "hidden3")


@pytest.mark.parametrize("entry", [e for e in corpus_entries()
                                   if glob.glob(os.path.join(CORPUS, e, "*.meta"))])
def test_a_miss_names_layer_outputs_of_the_graph_even_without_useful_collections(entry):
    """Real graphs whose only collection is train_op still get names to try, and each named
    op exists in the graph."""
    from ckptsurgery.graphdef.metagraph import node_map

    meta = open_checkpoint(glob.glob(os.path.join(CORPUS, entry, "*.meta"))[0]).meta_graph
    with pytest.raises(NotFoundError) as e:
        resolve_tensor(meta, "dense_layer")
    named = re.findall(r"'([^']+)'", str(e.value).split(";", 1)[1])
    assert named, str(e.value)
    nodes = node_map(meta)
    assert all(n in nodes for n in named if " " not in n), str(e.value)


def test_scope_selection_matches_get_collection_semantics():
    g = tf.Graph()
    build_mlp(g)
    for regex in ("hidden[123]", "hidden[34]|logits", "logits"):
        expected = [v.op.name for v in g.get_collection("trainable_variables", scope=regex)]
        got = [v.op.name for v in select_variables(g, regex, "trainable_variables")]
        assert got == expected and got
    assert [v.op.name for v in select_variables(g, "hidden[34]|logits")] == [
        "hidden3/kernel", "hidden3/bias", "hidden4/kernel", "hidden4/bias",
        "logits/kernel", "logits/bias"]


def test_scope_matching_nothing_is_an_error():
    g = tf.Graph()
    build_mlp(g)
    with pytest.raises(SelectionError, match="matches no variable.*hidden1, hidden2"):
        select_variables(g, "hiden[12]")


def test_partial_scope_match_warns():
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf1.float32, (None, 4))
    dense(x, DenseSpec("hidden10", 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        select_variables(g, "hidden1")
    assert any(issubclass(w.category, CkptSurgeryWarning) and "hidden10/kernel" in str(w.message)
               for w in caught)


def test_prune_keeps_only_what_outputs_need(meta):
    pruned, info = prune(meta, ["dnn/hidden3/Relu:0", "X:0", "y:0"])
    names = {n.name for n in pruned.graph_def.node}
    assert "hidden3/kernel" in names and "hidden3/kernel/Assign" in names
    assert not any(n.startswith(("hidden4", "dnn/hidden4", "train/", "save/")) for n in names)
    assert info.removed_variables == ["hidden4/bias", "hidden4/kernel", "hidden5/bias",
                                      "hidden5/kernel", "logits/bias", "logits/kernel"]
    assert set(pruned.collection_def) == {"inputs", "labels", "hiddens1", "hiddens2",
                                          "hiddens3", "variables", "trainable_variables"}
    assert len(meta.graph_def.node) > len(pruned.graph_def.node)  # input untouched


def test_cut_stops_gradients_below(meta):
    edited, sg = cut(meta, "dnn/hidden2/Relu:0")
    g = tf.Graph()
    import_meta_graph(edited, g)
    with g.as_default():
        loss = tf1.reduce_sum(g.get_tensor_by_name("dnn/logits/BiasAdd:0"))
        variables = {v.op.name: v for v in g.get_collection("trainable_variables")}
        grads = tf1.gradients(loss, [variables["hidden2/kernel"], variables["hidden3/kernel"]])
    assert sg == "dnn/hidden2/Relu/stop_gradient:0"
    assert grads[0] is None and grads[1] is not None
    consumers = [op.name for op in g.get_tensor_by_name("dnn/hidden2/Relu:0").consumers()]
    assert consumers == ["dnn/hidden2/Relu/stop_gradient"]


def test_restore_reports_missing_unexpected_and_mismatched(mlp_ckpt):
    src = open_checkpoint(mlp_ckpt)
    g = tf.Graph()
    with g.as_default():
        a = tf1.get_variable("hidden1/kernel", [784, 300], use_resource=False)
        b = tf1.get_variable("hidden2/kernel", [300, 51], use_resource=False)
        c = tf1.get_variable("nothere", [2], use_resource=False)
    with tf1.Session(graph=g) as sess:
        sess.run(tf1.variables_initializer([a, b, c]))
        with pytest.raises(RestoreError) as err:
            restore(sess, [a, b, c], src)
        assert "hidden2/kernel: checkpoint [300, 50] float32, graph [300, 51] float32" in str(err.value)
        assert "missing from checkpoint (1): nothere" in str(err.value)
        report = restore(sess, [a, b, c], src, strict=False)
        assert report.matched == ["hidden1/kernel"]
        assert report.missing == ["nothere"]
        assert "hidden5/kernel" in report.unexpected
        np.testing.assert_array_equal(sess.run(a), src.read("hidden1/kernel"))
