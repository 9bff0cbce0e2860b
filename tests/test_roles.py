"""Roles from the graph: optimizer slots and state, steps and moving averages are read from the
ops that update each variable, so optimizers under a name scope and slots named after nested
scopes are recognised; without a .meta, names still work for the classic ones. Moving
averages: ``ckptsurgery ema`` and ``graft --use-ema`` put the shadows into the weights."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import read_vars, run_cli
from migrate_helpers import restore_values

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.roles import classify
from ckptsurgery.graphdef.slots import classify_by_name
from ckptsurgery.migrate.rewrite import rename_checkpoint, strip_checkpoint

MODEL = {"layer/w", "layer/b", "global_step"}


def _train_and_export(prefix: str, optimizer: str, *, scope: str, name_scope: str,
                      ema: bool = False) -> str:
    """A two-variable model trained one step by ``optimizer`` run under ``name_scope``."""
    import tensorflow as tf

    from ckptsurgery.graph.export import export_checkpoint

    tf1 = tf.compat.v1
    graph = tf.Graph()
    graph.seed = 1
    with graph.as_default():
        x = tf1.placeholder(tf.float32, (None, 3), name="x")
        with tf1.variable_scope(scope, use_resource=False):
            w = tf1.get_variable("w", (3, 2))
            b = tf1.get_variable("b", (2,), initializer=tf1.zeros_initializer())
        out = tf1.identity(tf1.nn.relu(tf1.matmul(x, w) + b), name="out")
        loss = tf1.reduce_sum(tf1.square(out))
        step = tf1.train.get_or_create_global_step()
        with tf1.name_scope(name_scope):
            opt = {"rmsprop": tf1.train.RMSPropOptimizer(0.01),
                   "adam": tf1.train.AdamOptimizer(0.01),
                   "momentum": tf1.train.MomentumOptimizer(0.01, 0.9)}[optimizer]
            train_op = opt.minimize(loss, global_step=step)
            if ema:
                averages = tf1.train.ExponentialMovingAverage(0.9)
                with tf1.control_dependencies([train_op]):
                    train_op = averages.apply([w, b])
    with tf1.Session(graph=graph) as sess:
        # The weights first: a moving average's initializer reads its weight.
        sess.run(tf1.variables_initializer([w, b]))
        sess.run(tf1.variables_initializer([v for v in tf1.global_variables()
                                            if v not in (w, b)]))
        sess.run(train_op, {x: np.ones((4, 3), np.float32)})
        return export_checkpoint(sess, graph, prefix).prefix


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_an_optimizer_under_a_name_scope_is_recognised_from_the_graph(tmp_path, optimizer):
    """TF 1.x named the slots of an optimizer run under ``name_scope("optimizer")``
    ``optimizer/layer/w/RMSProp``; today's TF does not, so the test renames them so (graph and
    checkpoint together, with ckptsurgery's rename)."""
    made = _train_and_export(str(tmp_path / "m" / "model.ckpt"), optimizer, scope="layer",
                             name_scope="optimizer")
    prefix = rename_checkpoint(made, [(r"^(layer/\w+/(RMSProp|Adam)\w*)$", r"optimizer/\1")],
                               str(tmp_path / "old" / "model.ckpt"), progress=False).prefix
    keys = list(open_checkpoint(prefix).variables)
    roles = classify(keys, open_checkpoint(prefix).meta_graph)
    slots = {k: r for k, r in roles.items() if r.kind == "slot"}
    assert all(k.startswith("optimizer/") for k in slots), keys  # names no name rule knows
    assert sorted(r.primary for r in slots.values()) == ["layer/b", "layer/b", "layer/w",
                                                         "layer/w"]
    assert all(r.source == "graph" for r in slots.values())
    assert all(classify_by_name(keys)[k].kind == "model" for k in slots), "names alone miss them"
    out = strip_checkpoint(prefix, str(tmp_path / "s" / "model.ckpt"), optimizer_slots=True,
                           progress=False)
    assert set(read_vars(out.prefix)) == MODEL


def test_slots_named_after_nested_scopes_are_recognised(tmp_path):
    """Slots named after the scope they ran in (``model/model/cell/w/Adam_1``), renamed so as
    TF 1.x did."""
    made = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "adam",
                             scope="model/cell", name_scope="model")
    prefix = rename_checkpoint(made, [(r"^(model/cell/\w+/Adam\w*)$", r"model/\1")],
                               str(tmp_path / "old" / "model.ckpt"), progress=False).prefix
    keys = list(open_checkpoint(prefix).variables)
    roles = classify(keys, open_checkpoint(prefix).meta_graph)
    assert {k for k, r in roles.items() if r.kind == "model"} | {
        k for k, r in roles.items() if r.kind == "step"} == {"model/cell/w", "model/cell/b",
                                                             "global_step"}
    assert {r.kind for k, r in roles.items() if "Adam" in k or "power" in k} <= {"slot",
                                                                               "optimizer"}
    r = run_cli("inspect", prefix)
    assert r.returncode == 0, r.stderr
    assert "Adam: 4 slot(s)" in r.stdout
    assert "roles        read from the graph's ops" in r.stdout


def test_without_the_meta_the_classic_names_still_work(tmp_path):
    prefix = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "adam", scope="layer",
                               name_scope="train")
    os.remove(prefix + ".meta")
    roles = classify(list(open_checkpoint(prefix).variables))
    assert {k for k, r in roles.items() if r.kind == "slot"} == {
        "layer/w/Adam", "layer/w/Adam_1", "layer/b/Adam", "layer/b/Adam_1"}
    powers = [k for k in roles if k.endswith(("beta1_power", "beta2_power"))]
    assert len(powers) == 2 and all(roles[k].kind == "optimizer" for k in powers)
    assert roles["global_step"].kind == "step"
    assert all(r.source == "name" for r in roles.values())


def test_moving_averages_are_named_with_their_weights(tmp_path):
    prefix = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "momentum", scope="layer",
                               name_scope="train", ema=True)
    roles = classify(list(open_checkpoint(prefix).variables), open_checkpoint(prefix).meta_graph)
    emas = {k: r.primary for k, r in roles.items() if r.kind == "ema"}
    assert emas == {"layer/w/ExponentialMovingAverage": "layer/w",
                    "layer/b/ExponentialMovingAverage": "layer/b"}
    assert {r.slot for r in roles.values() if r.kind == "slot"} == {"Momentum"}


def test_ema_writes_the_shadows_as_the_weights_and_plain_tensorflow_restores_them(tmp_path):
    prefix = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "momentum", scope="layer",
                               name_scope="train", ema=True)
    source = read_vars(prefix)
    out = str(tmp_path / "e" / "model.ckpt")
    r = run_cli("ema", prefix, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "layer/w takes the value of layer/w/ExponentialMovingAverage" in r.stdout
    restored = restore_values(out)
    assert not any("ExponentialMovingAverage" in k for k in restored)
    for weight in ("layer/w", "layer/b"):
        shadow = source[weight + "/ExponentialMovingAverage"]
        assert restored[weight].tobytes() == shadow.tobytes(), weight
        assert restored[weight].tobytes() != source[weight].tobytes()


def test_graft_use_ema_restores_the_shadows_into_the_weights(tmp_path):
    prefix = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "momentum", scope="layer",
                               name_scope="train", ema=True)
    out = str(tmp_path / "g" / "model.ckpt")
    r = run_cli("graft", prefix, "--at", "out", "--inputs", "x", "--dense", "head:2",
                "--use-ema", "--out", out)
    assert r.returncode == 0, r.stderr
    source, grafted = read_vars(prefix), read_vars(out)
    assert grafted["layer/w"].tobytes() == source["layer/w/ExponentialMovingAverage"].tobytes()


def test_ema_without_shadows_is_a_clean_error(tmp_path):
    from safety_helpers import assert_clean_error

    prefix = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "adam", scope="layer",
                               name_scope="train")
    r = run_cli("ema", prefix, "--out", str(tmp_path / "e" / "model.ckpt"))
    assert_clean_error(r.returncode, r.stderr, 2, "no ExponentialMovingAverage shadows")


def test_convert_use_ema_writes_the_shadows_under_the_weights_names(tmp_path):
    prefix = _train_and_export(str(tmp_path / "m" / "model.ckpt"), "momentum", scope="layer",
                               name_scope="train", ema=True)
    out = str(tmp_path / "w.npz")
    r = run_cli("convert", prefix, "--to", "npz", "--use-ema", "--out", out)
    assert r.returncode == 0, r.stderr
    source = read_vars(prefix)
    with np.load(out) as arrays:
        assert sorted(arrays.files) == ["layer/b", "layer/w"]
        for weight in ("layer/w", "layer/b"):
            assert arrays[weight].tobytes() == source[weight + "/ExponentialMovingAverage"].tobytes()


def test_keras_style_optimizer_state_is_recognised_by_name():
    roles = classify(["dense_1/kernel", "training/Adam/Variable", "training/Adam/Variable_7",
                      "training/SGD/iterations", "training_1/RMSprop/Variable_2"])
    assert roles["dense_1/kernel"].kind == "model"
    assert {k: (r.kind, r.optimizer) for k, r in roles.items() if k != "dense_1/kernel"} == {
        "training/Adam/Variable": ("optimizer", "Adam"),
        "training/Adam/Variable_7": ("optimizer", "Adam"),
        "training/SGD/iterations": ("optimizer", "SGD"),
        "training_1/RMSprop/Variable_2": ("optimizer", "RMSprop")}
