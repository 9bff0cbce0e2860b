"""Costs grow linearly with the size of the graph: the analyses of one command walk the nodes a
fixed number of times, and the Python calls they make grow in proportion to the nodes. Counted,
not timed, on graphs of N and 2N dense layers trained with Adam, so a quadratic rescan or an
analysis repeated per variable fails here however fast the machine."""

from __future__ import annotations

import sys

import pytest

from ckptsurgery.graphdef.metagraph import frozen
from ckptsurgery.graphdef.metarewrite import rewrite_meta_graph
from ckptsurgery.graphdef.roles import classify
from ckptsurgery.graphdef.saver import saved_variables, saver_tensors
from ckptsurgery.migrate.inspection import summarize_meta


def _layers_meta(n: int):
    """The MetaGraphDef (the package's TF-free class) of ``n`` dense layers trained by Adam."""
    import tensorflow as tf

    from ckptsurgery.formats.protos import message_class

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        h = tf1.placeholder(tf.float32, (None, 4), name="x")
        for i in range(n):
            with tf1.variable_scope(f"layer{i}"):
                w = tf1.get_variable("kernel", (4, 4))
                b = tf1.get_variable("bias", (4,), initializer=tf1.zeros_initializer())
            h = tf.nn.relu(tf1.matmul(h, w) + b)
        loss = tf1.reduce_mean(tf1.square(h))
        tf1.train.AdamOptimizer().minimize(loss)
        saver = tf1.train.Saver()
        exported = saver.export_meta_graph()
    return message_class("tensorflow.MetaGraphDef").FromString(exported.SerializeToString())


class _CountingMeta:
    """``meta`` that counts how often its graph's node list is asked for (once per pass)."""

    def __init__(self, meta):
        self._meta = meta
        self.passes = 0

    def __getattr__(self, name):
        if name == "graph_def":
            return _CountingGraph(self._meta.graph_def, self)
        return getattr(self._meta, name)


class _CountingGraph:
    def __init__(self, graph_def, owner: _CountingMeta):
        self._graph_def = graph_def
        self._owner = owner

    def __getattr__(self, name):
        if name == "node":
            self._owner.passes += 1
        return getattr(self._graph_def, name)


def _inspect_meta(meta) -> None:
    """What ``inspect`` asks of a checkpoint's graph."""
    with frozen(meta):
        classify([v.key for v in saved_variables(meta)], meta)
        summarize_meta(meta, "model.meta")


def _python_calls(fn, *args) -> int:
    """How many Python functions (comprehensions included) ``fn(*args)`` calls."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return calls


@pytest.fixture(scope="module")
def metas():
    return _layers_meta(20), _layers_meta(40)


def test_inspecting_a_meta_walks_its_nodes_a_fixed_number_of_times(metas):
    small, big = (_CountingMeta(m) for m in metas)
    _inspect_meta(small)
    _inspect_meta(big)
    assert small.passes == big.passes
    assert big.passes <= 8


@pytest.mark.parametrize("work", ["inspect", "strip", "cast", "verify"])
def test_python_calls_grow_linearly_with_the_layers(metas, work):
    def run(meta):
        keys = [v.key for v in saved_variables(meta)]
        if work == "inspect":
            _inspect_meta(meta)
        elif work == "strip":
            roles = classify(keys, meta)
            rewrite_meta_graph(meta, {k: None if roles[k].kind in ("slot", "optimizer") else k
                                      for k in keys})
        elif work == "cast":
            classify(keys, meta)
            rewrite_meta_graph(meta, {k: k for k in keys}, stored_dtypes=dict.fromkeys(keys, 19))
        else:
            saver_tensors(meta)

    small, big = (_python_calls(run, m) for m in metas)
    assert big <= 2.2 * small, (small, big)
