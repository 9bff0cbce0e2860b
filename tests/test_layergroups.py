"""Layers as the graph computes them (graphdef.layergroups), and strategies that train exactly
the variables their plan lists, on the fixtures and on the real checkpoints of the corpus."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from conftest import (
    CORPUS,
    FIXTURE_CNN,
    FIXTURE_MIXED,
    FIXTURE_MLP,
    FIXTURE_RNN,
    ROOT,
    corpus_entries,
    read_vars,
    run_cli,
)

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.layergroups import layer_groups, layers_below, output_layers

TRAFFIC = os.path.join(CORPUS, "AloshkaD__traffic-signs__model_v1", "model.ckpt")
BN_MLP = os.path.join(CORPUS, "DerflaNehc__MNIST_NN_P2__model", "model.ckpt")
STRATEGIES = ("feature-extract", "fine-tune-top:1", "fine-tune-top:2", "fine-tune-all")


def _meta(prefix):
    if not os.path.exists(prefix + ".meta"):
        pytest.skip("../shared/corpus is not beside the checkout")
    return open_checkpoint(prefix).meta_graph


def test_unscoped_variables_make_one_layer_per_weight_with_its_bias():
    layers = layer_groups(_meta(TRAFFIC))
    assert [(layer.name, layer.kind, layer.variables) for layer in layers] == [
        ("Variable", "Conv2D", ("Variable", "Variable_5")),
        ("Variable_1", "Conv2D", ("Variable_1", "Variable_6")),
        ("Variable_2", "MatMul", ("Variable_2", "Variable_7")),
        ("Variable_3", "MatMul", ("Variable_3", "Variable_8")),
        ("Variable_4", "MatMul", ("Variable_4", "Variable_9")),
    ]
    assert "Conv2D" in layers[0].ops and "Variable_5/read" in layers[0].ops


def test_batch_norm_belongs_to_the_layer_it_normalises():
    layers = layer_groups(_meta(BN_MLP))
    assert [layer.name for layer in layers] == ["hidden1", "hidden2", "hidden3", "hidden4",
                                                "hidden5", "output"]
    assert layers[4].weights == ("hidden5/kernel",)
    assert layers[4].variables == ("hidden5/kernel", "hidden5/bias",
                                   *(f"batch_normalization_4/{v}" for v in
                                     ("gamma", "beta", "moving_mean", "moving_variance")))


def test_fixture_layers_scoped_partitioned_and_in_a_loop():
    assert [layer.name for layer in layer_groups(open_checkpoint(FIXTURE_MLP).meta_graph)] == [
        "hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "logits"]
    mixed = layer_groups(open_checkpoint(FIXTURE_MIXED).meta_graph)
    assert ("part", ("part/w/part_0", "part/w/part_1")) in [(la.name, la.weights) for la in mixed]
    rnn = layer_groups(open_checkpoint(FIXTURE_RNN).meta_graph)
    assert [layer.name for layer in rnn] == ["rnn/gru/gates", "rnn/gru/candidate", "logits"]
    cnn = layer_groups(open_checkpoint(FIXTURE_CNN).meta_graph)
    assert cnn[0].variables[:3] == ("conv1/kernel", "conv1/bias", "bn1/gamma")


def _fixture_meta(name: str):
    return open_checkpoint(os.path.join(ROOT, "fixtures", name, "model.ckpt")).meta_graph


def test_gpt2_conv1d_weights_reshaped_before_their_matmul_are_layers():
    """GPT-2's ``conv1d`` reshapes its ``[1, in, out]`` weight before the ``MatMul``: each
    is still a layer, each reading the one before it, and the embeddings keep their names
    (``model/wte``, not the scope ``model`` that every layer shares)."""
    layers = layer_groups(_fixture_meta("gpt2"))
    blocks = [f"model/h{i}/{part}" for i in range(2)
              for part in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")]
    assert [layer.name for layer in layers] == ["model/wte", "model/wpe", *blocks]
    assert [layer.weights for layer in layers[2:]] == [(f"{b}/w",) for b in blocks]
    assert [layer.inputs_from for layer in layers[3:]] == [(b,) for b in blocks[:-1]]
    assert layers[2].inputs_from == ("model/wte", "model/wpe")


def test_attention_reads_query_key_and_value_and_no_layer_owns_an_optimizer_update():
    """BERT's attention output reads its query, key and value layers (where they meet, the
    scores and context, is no layer's), so none of them is taken for a model output; and
    the ``AdamWeightDecay`` update of a bias (plain ``Sub``/``Mul`` ops, not ``Apply*``) is
    not counted among its layer's ops."""
    meta = _fixture_meta("bert_classifier")
    layers = {layer.name: layer for layer in layer_groups(meta)}
    scope = "bert/encoder/layer_0/attention"
    assert layers[f"{scope}/output/dense"].inputs_from == tuple(
        f"{scope}/self/{p}" for p in ("key", "query", "value"))
    assert [layer.name for layer in output_layers(meta)] == ["output_weights"]
    readers: dict[str, set[str]] = {}
    for node in meta.graph_def.node:
        for ref in node.input:
            readers.setdefault(ref.lstrip("^").split(":")[0], set()).add(node.op)
    updates = {op for layer in layers.values() for op in layer.ops
               if readers.get(op) == {"AssignVariableOp"}}
    assert not updates, f"optimizer updates counted as layer ops: {sorted(updates)[:5]}"


def test_layers_below_are_nearest_first_and_stop_at_fed_inputs():
    meta = open_checkpoint(FIXTURE_MLP).meta_graph
    assert [la.name for la in layers_below(meta, "dnn/hidden3/Relu:0")] == ["hidden3", "hidden2",
                                                                         "hidden1"]
    assert [la.name for la in layers_below(meta, "dnn/hidden3/Relu:0", ["dnn/hidden1/Relu:0"])] == [
        "hidden3", "hidden2"]


# -- what the plan says trains, trains ------------------------------------------------------


def _graft_and_compare(prefix: str, strategy: str, tmp_path) -> None:
    """Graft on the first graft point with ``strategy``, train one short epoch on random rows
    shaped to the input, and compare the plan's trained variables with those whose bytes
    changed (optimizer slots aside; a partitioned variable's pieces are saved under one key)."""
    import tensorflow as tf

    from ckptsurgery.graph.graftpoints import find_graft_points
    from ckptsurgery.graph.importer import import_meta_graph
    from ckptsurgery.graphdef.roles import classify

    source = open_checkpoint(prefix)
    point = find_graft_points(source.meta_graph)[0][0]
    args = [prefix, "--at", point.at, *point.flags, "--dense", "new_logits:3",
            "--strategy", strategy]
    out = str(tmp_path / "out.ckpt")
    dry = run_cli("graft", *args, "--dry-run", "--json", "--out", out)
    if "reuses 1 layer(s)" in dry.stderr:
        pytest.skip("the model has one layer below its graft point")
    assert dry.returncode == 0, dry.stderr
    graph = tf.Graph()
    import_meta_graph(source.meta_graph, graph)
    shape = graph.get_tensor_by_name(json.loads(dry.stdout)["plan"]["inputs"]).shape.as_list()
    batch = shape[0] or 8  # some graphs fix the batch size
    rng = np.random.RandomState(0)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.rand(3 * batch, *[d or 2 for d in shape[1:]]).astype(np.float32),
             y_train=np.arange(3 * batch) % 3)
    r = run_cli("graft", *args, "--data", str(data), "--epochs", "1", "--valid-size",
                str(batch), "--batch-size", str(batch), "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    trained = {re.sub(r"/part_\d+$", "", row["name"]) for row in plan["trained"]}
    new = {row["name"] for row in plan["new"]}
    before, after = read_vars(prefix), read_vars(out)
    roles = classify(list(before), source.meta_graph)
    changed = {k for k in before if roles[k].kind == "model" and k in after
               and before[k].tobytes() != after[k].tobytes()}
    assert new <= set(after)
    assert trained == changed | new, (sorted(trained - changed - new), sorted(changed - trained))
    if strategy != "feature-extract":
        assert trained - new, "the strategy trains reused layers"


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("prefix", [FIXTURE_MLP, FIXTURE_CNN], ids=["mlp", "cnn"])
def test_fixture_strategies_train_exactly_what_the_plan_lists(prefix, strategy, tmp_path):
    _graft_and_compare(prefix, strategy, tmp_path)


def _importable_corpus() -> list[str]:
    found = []
    for entry in corpus_entries():
        metas = [f for f in os.listdir(os.path.join(CORPUS, entry)) if f.endswith(".meta")]
        found += [os.path.join(CORPUS, entry, m[:-5]) for m in metas]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("prefix", _importable_corpus(), ids=lambda p: p.split(os.sep)[-2])
def test_corpus_strategies_train_exactly_what_the_plan_lists(prefix, strategy, tmp_path):
    """Every real checkpoint whose graph has a graft point and an input (all with a .meta)."""
    _graft_and_compare(prefix, strategy, tmp_path)


def test_unscoped_cnn_fine_tune_top_trains_its_reused_layers(tmp_path):
    """The issue's case, fast: fine-tune-top:2 on the traffic-sign CNN moves both layers."""
    _meta(TRAFFIC)
    _graft_and_compare(TRAFFIC, "fine-tune-top:2", tmp_path)


def test_estimator_queue_placeholders_are_not_label_candidates(tmp_path):
    """The wine Estimator's integer placeholders only feed its input queue: a graft on its
    feature layer gets a new labels placeholder instead of an error listing them."""
    prefix = os.path.join(CORPUS, "jncharon__wine-classifier__estimator_ckpt-3374",
                          "model.ckpt-3374")
    _meta(prefix)
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "d.npz", x_train=rng.rand(30, 11).astype(np.float32),
             y_train=np.arange(30) % 3)
    r = run_cli("graft", prefix, "--at", "dnn/hiddenlayer_2/Relu:0", "--inputs",
                "dnn/input_from_feature_columns/input_layer/concat", "--dense", "n:3", "--data",
                str(tmp_path / "d.npz"), "--valid-size", "6", "--epochs", "1", "--out",
                str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["labels"] == "labels:0"


def test_long_lists_in_errors_name_a_few_and_count_the_rest():
    from ckptsurgery.errors import some

    assert some(["a", "b"]) == "a, b"
    assert some([f"p{i}" for i in range(40)]) == "p0, p1, p2, p3 and 36 more"


def test_an_input_with_a_fixed_batch_size_is_a_clear_error_naming_the_fix(tmp_path):
    """The Chris-Slattery MLP's input is [4000, 2]: any other batch cannot be fed."""
    prefix = os.path.join(CORPUS, "Chris-Slattery__Multilayer-Neural-Network__model", "model.ckpt")
    _meta(prefix)
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "d.npz", x_train=rng.rand(100, 2).astype(np.float32),
             y_train=np.arange(100) % 3)
    r = run_cli("graft", prefix, "--at", "Sigmoid:0", "--dense", "n:3", "--data",
                str(tmp_path / "d.npz"), "--valid-size", "20", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "input 'inputs:0' takes exactly 4000 rows at a time (the graph fixes its batch " \
           "size); pass --batch-size 4000 and rows in multiples of it (now 80 training, 20 " \
           "validation" in r.stderr
