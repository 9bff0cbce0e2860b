"""The optimizers of BERT, ALBERT, T5 and Adam's sparse path keep optimizer state like any other:
``inspect`` says so, ``strip --optimizer-slots`` drops it, every weight stays bit-identical and
plain TensorFlow restores the result into its own ``.meta``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import ROOT, read_vars, run_cli
from migrate_helpers import restore_values

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.roles import classify
from ckptsurgery.graphdef.slots import classify_by_name
from ckptsurgery.migrate.rewrite import strip_checkpoint

BERT = os.path.join(ROOT, "fixtures", "bert_classifier", "model.ckpt")
SPARSE = os.path.join(ROOT, "fixtures", "sparse", "model.ckpt")
GPT2 = os.path.join(ROOT, "fixtures", "gpt2", "model.ckpt")
ALBERT = os.path.join(ROOT, "fixtures", "albert_pretraining", "model.ckpt")
ELECTRA = os.path.join(ROOT, "fixtures", "electra_pretraining", "model.ckpt")


def test_bert_adam_m_and_adam_v_are_slots_of_their_weight():
    keys = list(open_checkpoint(BERT).variables)
    roles = classify(keys, open_checkpoint(BERT).meta_graph)
    moments = [k for k in keys if k.endswith(("/adam_m", "/adam_v"))]
    assert len(moments) == 82  # 41 weights of a 2-layer BERT with a classifier head, two each
    for k in moments:
        role = roles[k]
        assert (role.kind, role.optimizer, role.primary) == ("slot", "AdamWeightDecay",
                                                              k.rsplit("/", 1)[0]), k
        # plain assign ops write them, and no weight's norm is taken: not LAMB
        assert role.source == "graph"
    weights = [k for k, r in roles.items() if r.kind == "model"]
    assert len(weights) == 41 and "output_weights" in weights
    assert roles["global_step"].kind == "step"


def test_inspect_names_the_bert_optimizer():
    r = run_cli("inspect", BERT, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["optimizers"]["AdamWeightDecay"]["slots"] == 82
    assert data["optimizers"]["AdamWeightDecay"]["slot_names"] == ["adam_m", "adam_v"]
    assert data["totals"]["by_kind"]["model"]["count"] == 41




def test_albert_lamb_moments_are_named_lamb_when_the_meta_shows_it(tmp_path):
    """ALBERT's LAMBOptimizer writes the same adam_m/adam_v as BERT's AdamWeightDecayOptimizer:
    its .meta tells them apart (the trust ratio takes the weight's norm); without one, the
    names cannot, and inspect says both."""
    import shutil

    r = run_cli("inspect", ALBERT, "--json")
    assert r.returncode == 0, r.stderr
    optimizers = json.loads(r.stdout)["optimizers"]
    assert list(optimizers) == ["LAMB"] and optimizers["LAMB"]["slots"] == 64
    assert optimizers["LAMB"]["slot_names"] == ["adam_m", "adam_v"]
    keys = list(open_checkpoint(ALBERT).variables)
    roles = classify(keys, open_checkpoint(ALBERT).meta_graph)
    # LayerNorm and biases are left out of LAMB's layer adaptation; theirs are LAMB's too
    role = roles["bert/embeddings/LayerNorm/beta/adam_v"]
    assert (role.kind, role.optimizer, role.primary, role.source) == (
        "slot", "LAMB", "bert/embeddings/LayerNorm/beta", "graph")
    bare = tmp_path / "model.ckpt"
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(ALBERT + suffix, str(bare) + suffix)
    r = run_cli("inspect", str(bare))
    assert "optimizer    AdamWeightDecay or LAMB: 64 slot(s) (adam_m, adam_v)" in r.stdout
    r = run_cli("convert", str(bare), "--to", "hf", "--dry-run", "--out", str(tmp_path / "h"),
                "--config", ALBERT.replace("model.ckpt", "albert_config.json"))
    assert ("left out: optimizer slot adam_m (AdamWeightDecay or LAMB) of "
            "bert/pooler/dense/kernel") in r.stdout


def test_lamb_and_adafactor_slots_by_name():
    names = ["bert/pooler/dense/kernel", "bert/pooler/dense/kernel/lamb_m",
             "bert/pooler/dense/kernel/lamb_v", "encoder/block_000/layer_000/SelfAttention/q",
             "encoder/block_000/layer_000/SelfAttention/q_slot_vr",
             "encoder/block_000/layer_000/SelfAttention/q_slot_vc",
             "shared/embedding", "shared/embedding_slot_v", "orphan/lamb_m", "other_slot_vr"]
    roles = classify_by_name(names)
    assert roles["bert/pooler/dense/kernel/lamb_m"].optimizer == "LAMB"
    assert roles["bert/pooler/dense/kernel/lamb_v"].primary == "bert/pooler/dense/kernel"
    q = "encoder/block_000/layer_000/SelfAttention/q"
    assert [(roles[q + s].kind, roles[q + s].optimizer, roles[q + s].primary, roles[q + s].slot)
            for s in ("_slot_vr", "_slot_vc")] == [("slot", "Adafactor", q, "slot_vr"),
                                                   ("slot", "Adafactor", q, "slot_vc")]
    assert roles["shared/embedding_slot_v"].primary == "shared/embedding"
    # no weight of that name in the checkpoint: not a slot
    assert roles["orphan/lamb_m"].kind == "model" and roles["other_slot_vr"].kind == "model"


@pytest.mark.parametrize("source", [BERT, ELECTRA], ids=["bert", "electra"])
def test_strip_drops_every_moment_and_restores_in_plain_tf(tmp_path, source):
    """BERT's and ELECTRA's (both networks') AdamWeightDecay moments."""
    before = read_vars(source)
    result = strip_checkpoint(source, str(tmp_path / "s" / "model.ckpt"), optimizer_slots=True,
                              progress=False)
    after = read_vars(result.prefix)
    assert not [k for k in after if k.endswith(("adam_m", "adam_v"))]
    assert set(after) == {k for k in before if not k.endswith(("adam_m", "adam_v"))}
    for k, value in after.items():
        assert value.tobytes() == before[k].tobytes(), k
    assert os.path.getsize(result.prefix + ".data-00000-of-00001") < 0.4 * os.path.getsize(
        source + ".data-00000-of-00001")
    restored = restore_values(result.prefix)
    assert set(restored) == set(after)
    for k, value in after.items():
        assert np.array_equal(restored[k], value), k


def test_sparse_adam_slots_are_read_from_the_scatter_updates():
    """A POS tagger's embedding: Adam built inside ``variable_scope("model")`` names the slots
    ``model/model/embed/Adam`` (no weight of that name: the name rule cannot pair them) and the
    sparse gradient writes them with ``ScatterAdd``, not ``ApplyAdam``."""
    keys = list(open_checkpoint(SPARSE).variables)
    roles = classify(keys, open_checkpoint(SPARSE).meta_graph)
    for slot in ("Adam", "Adam_1"):
        role = roles[f"model/model/embed/{slot}"]
        assert (role.kind, role.optimizer, role.primary, role.slot, role.source) == (
            "slot", "Adam", "model/embed", slot, "graph")
        assert roles[f"model/model/w/{slot}"].primary == "model/w"  # the ApplyAdam path
    assert classify_by_name(keys)["model/model/embed/Adam"].kind == "model"


def test_strip_sparse_adam_slots_restores_in_plain_tf(tmp_path):
    before = read_vars(SPARSE)
    result = strip_checkpoint(SPARSE, str(tmp_path / "s" / "model.ckpt"), optimizer_slots=True,
                              progress=False)
    after = read_vars(result.prefix)
    assert set(after) == {"model/embed", "model/w"}
    restored = restore_values(result.prefix)
    for k in after:
        assert after[k].tobytes() == before[k].tobytes(), k
        assert np.array_equal(restored[k], before[k]), k


def test_gpt2_position_embedding_slots_come_from_the_sparse_path():
    keys = list(open_checkpoint(GPT2).variables)
    roles = classify(keys, open_checkpoint(GPT2).meta_graph)
    assert {k for k, r in roles.items() if r.kind == "model"} == {
        k for k in keys if not k.endswith(("/Adam", "/Adam_1", "_power"))}
    assert roles["model/wpe/Adam"].primary == "model/wpe"
    assert roles["model/wpe/Adam"].source == "graph"


def test_inspect_says_where_graph_and_names_disagree(tmp_path):
    """A slot of ``w`` made inside ``variable_scope("layer")`` is named ``layer/w/Momentum``,
    which by name is a slot of the weight ``layer/w``: the graph's role is used and ``inspect``
    shows both."""
    import tensorflow as tf

    from ckptsurgery.graph.export import export_checkpoint

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        w = tf1.get_variable("w", (3,), use_resource=False)
        with tf1.variable_scope("layer"):
            other = tf1.get_variable("w", (3,), use_resource=False)
            loss = tf.reduce_sum(w * other)
            train_op = tf1.train.MomentumOptimizer(0.1, 0.9).minimize(loss, var_list=[w])
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(train_op)
            prefix = export_checkpoint(sess, graph, str(tmp_path / "m" / "model.ckpt")).prefix
    role = classify(list(open_checkpoint(prefix).variables),
                    open_checkpoint(prefix).meta_graph)["layer/w/Momentum"]
    assert (role.kind, role.primary, role.source) == ("slot", "w", "graph")
    assert role.by_name == "slot Momentum (Momentum) of layer/w"
    r = run_cli("inspect", prefix)
    assert r.returncode == 0, r.stderr
    assert ("disagree     the graph and the names give 1 variable(s) different roles "
            "(the graph's is used):") in r.stdout
    assert ("layer/w/Momentum: graph says slot Momentum (Momentum) of w; name says slot "
            "Momentum (Momentum) of layer/w") in r.stdout
    data = json.loads(run_cli("inspect", prefix, "--json").stdout)
    entry = next(v for v in data["variables"] if v["name"] == "layer/w/Momentum")
    assert entry["role_by_name"] == "slot Momentum (Momentum) of layer/w"


def test_diff_weights_only_compares_a_bert_with_its_stripped_copy(tmp_path):
    slim = strip_checkpoint(BERT, str(tmp_path / "s" / "model.ckpt"), optimizer_slots=True,
                            progress=False).prefix
    r = run_cli("diff", BERT, slim, "--json")
    assert len(json.loads(r.stdout)["removed"]) == 82
    r = run_cli("diff", BERT, slim, "--weights-only", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert (data["removed"], data["added"], data["changed"]) == ([], [], [])
    assert len(data["identical"]) == 41  # the weights, bit for bit; global_step left out


def test_without_the_meta_the_names_decide(tmp_path):
    """Most released fine-tunes come without a .meta: adam_m/adam_v go by name alone."""
    import shutil

    folder = tmp_path / "nometa"
    folder.mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(BERT + suffix, folder / ("model.ckpt" + suffix))
    src = str(folder / "model.ckpt")
    result = strip_checkpoint(src, str(tmp_path / "s" / "model.ckpt"), optimizer_slots=True,
                              progress=False)
    after = read_vars(result.prefix)
    before = read_vars(BERT)
    assert sorted(after) == sorted(k for k in before if not k.endswith(("adam_m", "adam_v")))
    assert all(after[k].tobytes() == before[k].tobytes() for k in after)
