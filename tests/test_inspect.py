"""inspect: what a checkpoint and its .meta hold, agreeing with TensorFlow's own listing."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from migrate_helpers import corpus_prefix, readable_entries

from ckptsurgery.errors import CkptSurgeryWarning
from ckptsurgery.graphdef.slots import classify_by_name as classify
from ckptsurgery.migrate.inspection import inspect_checkpoint


@pytest.mark.parametrize("entry", readable_entries())
def test_variables_agree_with_tf_list_variables(shared, entry):
    import tensorflow as tf

    src = corpus_prefix(entry)
    listed = dict(tf.train.list_variables(src))
    dtypes = tf.train.load_checkpoint(src).get_variable_to_dtype_map()
    result = inspect_checkpoint(src, check_import=False).as_dict()
    json.dumps(result)  # the --json form is serialisable as it is
    mine = {v["name"]: v for v in result["variables"]}
    assert set(mine) == set(listed)
    for name, shape in listed.items():
        assert mine[name]["shape"] == list(shape)
        assert mine[name]["dtype"] == dtypes[name].name


def test_adam_slots_and_beta_powers_are_recognised(shared):
    result = inspect_checkpoint(corpus_prefix(
        "irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4"), check_import=False)
    assert result.optimizers == {"Adam": {"slots": 24, "slot_names": ["Adam", "Adam_1"],
                                          "state": ["beta1_power", "beta2_power"]}}
    roles = {v["name"]: v["role"] for v in result.variables}
    assert roles["hidden1/kernel/Adam_1"] == "slot Adam_1 (Adam) of hidden1/kernel"
    assert roles["hidden1/kernel"] == "model"
    assert result.totals["by_kind"]["model"]["count"] == 12
    assert result.global_step is None


def test_estimator_adagrad_ftrl_slots_and_global_step(shared):
    result = inspect_checkpoint(corpus_prefix("taiguangxing__Wide_n_deep__estimator_ckpt-2010"),
                                check_import=False)
    assert result.format == "V2" and result.shards == 2
    assert result.optimizers["Adagrad"]["slots"] == 8
    assert result.optimizers["Ftrl"]["slots"] == 8
    assert result.global_step == {"name": "global_step", "value": 2010, "dtype": "int64"}


def test_partitioned_slot_names_are_recognised():
    roles = classify(["dnn/logits/bias", "dnn/logits/bias/t_0/Adagrad", "w", "w/Momentum",
                      "x/Adam", "beta1_power_1"])
    assert roles["dnn/logits/bias/t_0/Adagrad"].primary == "dnn/logits/bias"
    assert roles["w/Momentum"].optimizer == "Momentum"
    assert roles["x/Adam"].kind == "model"  # no variable 'x': not a slot
    assert roles["beta1_power_1"].kind == "optimizer"


def test_tf2_object_based_checkpoint(shared):
    result = inspect_checkpoint(corpus_prefix("Rabbit-JCY__little_ruan__sharded2"))
    assert result.object_based and result.meta is None and result.shards == 2
    kinds = result.totals["by_kind"]
    assert kinds["slot"]["count"] == 8 and kinds["optimizer"]["count"] == 5
    assert kinds["bookkeeping"]["count"] == 1


def test_v1_checkpoint_and_meta_summary(shared):
    with pytest.warns(CkptSurgeryWarning, match=r"V1 \(single-file\) format.*through TensorFlow"):
        result = inspect_checkpoint(corpus_prefix("AloshkaD__traffic-signs__model_v1"),
                                    check_import=True)
    assert result.format == "V1"
    meta = result.meta
    assert meta.importable and meta.tf_version is None
    assert meta.saver["version"] == "V1" and meta.saver["tensors"] == 10
    assert meta.op_types["Variable"] == 10
    assert {"trainable_variables", "variables"} == set(meta.collections)


def test_meta_inputs_outputs_and_version(shared):
    meta = inspect_checkpoint(corpus_prefix(
        "irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4"), check_import=True).meta
    assert meta.tf_version == "1.8.0" and meta.importable
    assert {p["name"]: p["shape"] for p in meta.placeholders} == {"X": [None, 784], "y": None}
    assert "logits/BiasAdd:0" in meta.likely_outputs
    assert meta.collections["train_op"]["kind"] == "node list"


def test_tflearn_import_failure_is_explained_not_raised(shared):
    meta = inspect_checkpoint(corpus_prefix("daniellazabari__chatbot__tflearn_model"),
                              check_import=True).meta
    assert meta.importable is False
    assert "The name 'Adam' refers to an Operation not in the graph" in meta.import_error
    assert "collection 'trainops'" in meta.import_explanation
    assert "'ckptsurgery salvage CKPT --out NEW'" in meta.import_explanation
    assert meta.stale_collection_entries == {"trainops": ["Adam"]}


def test_cli_inspect_json_and_text(shared):
    src = corpus_prefix("jncharon__wine-classifier__estimator_ckpt-3374")
    proc = run_cli("inspect", src, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["format"] == "V2"
    assert {"name": "global_step", "shape": [], "dtype": "int64", "bytes": 8,
            "role": "step", "role_source": "graph"} in report["variables"]
    assert set(report["variables"][0]) >= {"name", "shape", "dtype", "bytes"}
    proc = run_cli("inspect", src + ".nope")
    assert proc.returncode == 2 and proc.stderr.startswith("ckptsurgery: error: no checkpoint")


@pytest.mark.parametrize("command", [
    ["inspect"], ["diff", "{src}"], ["rename", "--map", "w=v", "--out", "{out}"],
    ["strip", "--drop", "w", "--out", "{out}"], ["cast", "--dtype", "float16", "--out", "{out}"],
    ["convert", "--to", "npz", "--out", "{out}.npz"]])
def test_every_command_fails_in_one_line_on_a_damaged_checkpoint(command, tmp_path, capsys):
    import numpy as np
    from migrate_helpers import write_checkpoint

    from ckptsurgery.cli import main

    src = write_checkpoint(str(tmp_path / "in" / "m"), {"w": np.ones((64, 64), np.float32),
                                                        "b": np.ones(64, np.float32)})
    with open(src + ".data-00000-of-00001", "r+b") as f:
        f.truncate(1000)
    out = str(tmp_path / "out" / "m")
    argv = [command[0], src] + [a.format(src=src, out=out) for a in command[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ckptsurgery: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- outputs of graphs with two networks (GAN, DQN), built here ------------------------------


def _dense(x, scope, units, act=None, reuse=None):
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf1.variable_scope(scope, reuse=reuse):
        w = tf1.get_variable("kernel", [int(x.shape[-1]), units],
                             initializer=tf1.glorot_uniform_initializer())
        b = tf1.get_variable("bias", [units], initializer=tf1.zeros_initializer())
        out = tf1.nn.bias_add(tf1.matmul(x, w), b)
        return act(out) if act else out


def _saved(build, prefix: str) -> str:
    """Build a TF1 graph with ``build(tf, tf1)`` and save it, initialised, at ``prefix``."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        build(tf, tf1)
        saver = tf1.train.Saver()
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            saver.save(s, prefix)
    return prefix


def _gan(tf, tf1):
    z = tf1.placeholder(tf.float32, [None, 4], name="z")
    x = tf1.placeholder(tf.float32, [None, 8], name="x")
    with tf1.variable_scope("generator"):
        fake = _dense(_dense(z, "h", 16, tf.nn.relu), "out", 8, tf.tanh)
    with tf1.variable_scope("discriminator"):
        real_logit = _dense(_dense(x, "h", 16, tf.nn.leaky_relu), "out", 1)
    with tf1.variable_scope("discriminator", reuse=True):
        fake_logit = _dense(_dense(fake, "h", 16, tf.nn.leaky_relu), "out", 1)
    xent = tf.nn.sigmoid_cross_entropy_with_logits
    d_loss = tf.reduce_mean(xent(labels=tf.ones_like(real_logit), logits=real_logit)) + \
        tf.reduce_mean(xent(labels=tf.zeros_like(fake_logit), logits=fake_logit))
    g_loss = tf.reduce_mean(xent(labels=tf.ones_like(fake_logit), logits=fake_logit))
    for loss, scope in ((d_loss, "discriminator"), (g_loss, "generator")):
        tf1.train.AdamOptimizer(1e-3, name=f"{scope[0]}_adam").minimize(
            loss, var_list=tf1.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, scope))


def _dqn(tf, tf1):
    state = tf1.placeholder(tf.float32, [None, 4], name="state")
    action = tf1.placeholder(tf.int32, [None], name="action")
    target = tf1.placeholder(tf.float32, [None], name="target")
    with tf1.variable_scope("online"):
        q = _dense(_dense(state, "h", 16, tf.nn.relu), "q", 2)
    with tf1.variable_scope("target_net"):
        _dense(_dense(state, "h", 16, tf.nn.relu), "q", 2)
    q_taken = tf.reduce_sum(q * tf.one_hot(action, 2), axis=1)
    loss = tf.reduce_mean(tf.square(target - q_taken))
    online = tf1.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, "online/")
    tf1.train.AdamOptimizer(1e-3).minimize(loss, var_list=online)
    tf.group(*[t.assign(o) for o, t in zip(online, tf1.get_collection(
        tf1.GraphKeys.TRAINABLE_VARIABLES, "target_net/"), strict=True)], name="sync_target")


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory):
    """A GAN (generator, discriminator; an Adam per network) and a DQN (online and target
    networks, the online one trained on a squared TD error), saved as TF1 checkpoints."""
    root = tmp_path_factory.mktemp("two_networks")
    return {"gan": _saved(_gan, str(root / "gan" / "m.ckpt")),
            "dqn": _saved(_dqn, str(root / "dqn" / "m.ckpt"))}


def test_optimizer_updates_are_never_outputs(two_networks):
    outputs = inspect_checkpoint(two_networks["gan"]).meta.likely_outputs
    assert outputs == ["discriminator/out/BiasAdd:0", "discriminator_1/out/BiasAdd:0"]
    assert not any("Apply" in o or "adam" in o for o in outputs)


def test_a_dqn_lists_its_online_network_whose_output_feeds_the_loss(two_networks):
    assert inspect_checkpoint(two_networks["dqn"]).meta.likely_outputs == [
        "online/q/BiasAdd:0", "target_net/q/BiasAdd:0"]
