"""Pictures of the surgery: ``ckptsurgery graph`` and ``graft --graph`` draw layers (name
scopes collapsed) coloured by role, shapes on the edges, the cut in red; DOT always, SVG and
PNG through Graphviz when it is installed, a clear error when it is not."""

from __future__ import annotations

import glob
import os
import re
import shutil

import pytest
from conftest import CORPUS, FIXTURE_CNN, FIXTURE_MLP, ROOT, run_cli
from safety_helpers import assert_clean_error

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.metagraph import node_map, op_name
from ckptsurgery.graphdef.picture import layer_graph, to_dot
from ckptsurgery.graphdef.walk import reachable

GRAFT = ("--at", "hiddens3", "--dense", "hidden4:20:relu", "--dense", "logits:10",
         "--cut-after", "hiddens2")


def _boxes(dot: str) -> dict[str, str]:
    """``{layer: role}`` of a DOT picture (legend entries left out)."""
    return {name: role for name, role in re.findall(r'^  "([^"]+)" \[label="[^"\\]*\\n(\w+)',
                                                    dot, re.M)}


def test_a_graft_picture_colours_each_layer_by_what_the_graft_does(tmp_path):
    picture = tmp_path / "graft.dot"
    r = run_cli("graft", FIXTURE_MLP, *GRAFT, "--dry-run", "--graph", str(picture),
                "--out", str(tmp_path / "never.ckpt"))
    assert r.returncode == 0, r.stderr
    dot = picture.read_text()
    assert _boxes(dot) == {"X": "input", "hidden1": "frozen", "hidden2": "frozen",
                           "hidden3": "trained", "hidden4": "new", "logits": "new",
                           "hidden5": "pruned"}  # the labels feed no layer: not drawn
    assert '"hidden2" -> "hidden3" [label="[?, 50] stop_gradient", color="#cc0000"' in dot
    assert '"X" -> "hidden1" [label="[?, 784]"]' in dot
    n_ops = len(open_checkpoint(FIXTURE_MLP).meta_graph.graph_def.node)
    assert n_ops > 150 and len(_boxes(dot)) <= 12, "hundreds of ops read as a dozen boxes"
    assert not (tmp_path / "never.ckpt.index").exists()


def test_graph_draws_a_checkpoint_and_the_layers_around_a_tensor(tmp_path):
    r = run_cli("graph", FIXTURE_CNN, "--out", str(tmp_path / "cnn.dot"))
    assert r.returncode == 0, r.stderr
    dot = (tmp_path / "cnn.dot").read_text()
    boxes = _boxes(dot)
    # batch norm belongs to the convolution it normalises: one box, its weights counted
    assert boxes == {"x": "input", "is_training": "mode", "keep_prob": "mode", "conv1": "model",
                     "conv2": "model", "fc": "model", "logits": "model"}
    assert '"conv1" [label="conv1\\nmodel, 6 weights + 8 slots"' in dot  # kernel, bias, bn x4; Adam x2
    # the switches select a mode: dashed, no shape; the data path runs fc -> logits
    assert '"is_training" -> "conv1" [label="", style=dashed' in dot
    assert '"fc" -> "logits" [label="[?, 32]"]' in dot
    r = run_cli("graph", FIXTURE_CNN, "--around", "fc/Relu", "--depth", "1", "--out",
                str(tmp_path / "around.dot"))
    assert r.returncode == 0, r.stderr
    # fc's neighbours: conv2 below it (through pool2, the flatten and the dropout), logits above
    assert set(_boxes((tmp_path / "around.dot").read_text())) == {"conv2", "fc", "logits"}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
@pytest.mark.parametrize("ext, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG\r\n\x1a\n")])
def test_svg_and_png_are_rendered_by_graphviz(tmp_path, ext, magic):
    out = tmp_path / f"graft{ext}"
    r = run_cli("graft", FIXTURE_MLP, *GRAFT, "--dry-run", "--graph", str(out), "--out",
                str(tmp_path / "x.ckpt"))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(magic)


def test_without_graphviz_svg_is_a_clear_error_and_dot_still_works(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' on it
    r = run_cli("graph", FIXTURE_MLP, "--out", str(tmp_path / "m.svg"))
    assert_clean_error(r.returncode, r.stderr, 2, "Graphviz's 'dot' program", "install graphviz",
                       ".dot file")
    assert not (tmp_path / "m.svg").exists()
    assert run_cli("graph", FIXTURE_MLP, "--out", str(tmp_path / "m.dot")).returncode == 0


def test_a_picture_needs_a_known_extension_and_force_to_replace(tmp_path):
    r = run_cli("graph", FIXTURE_MLP, "--out", str(tmp_path / "m.gif"))
    assert_clean_error(r.returncode, r.stderr, 2, "m.gif", ".dot, .svg, .png")
    (tmp_path / "m.dot").write_text("old")
    r = run_cli("graph", FIXTURE_MLP, "--out", str(tmp_path / "m.dot"))
    assert_clean_error(r.returncode, r.stderr, 2, "exists", "--force")
    assert (tmp_path / "m.dot").read_text() == "old"


def _real_graphs() -> list[str]:
    """Every graph of ../shared/corpus and of the fixtures that has an input placeholder."""
    metas = sorted(glob.glob(os.path.join(CORPUS, "*", "*.meta"))) + sorted(
        glob.glob(os.path.join(ROOT, "fixtures", "*", "*.meta")))
    return [m[:-len(".meta")] for m in metas
            if any(n.op == "Placeholder" for n in open_checkpoint(m).meta_graph.graph_def.node)]


@pytest.fixture(scope="module", params=_real_graphs(), ids=lambda p: os.path.basename(
    os.path.dirname(p)))
def drawn(request):
    """A real graph and its picture."""
    meta = open_checkpoint(request.param).meta_graph
    return meta, layer_graph(meta)


def test_every_real_graph_with_an_input_is_one_connected_picture(drawn):
    _, layers = drawn
    weighted = [k for k, v in layers.roles.items() if v == "model"]
    assert len(weighted) >= 2, layers.roles
    touched = {a for a, _ in layers.edges} | {b for _, b in layers.edges}
    assert set(layers.roles) <= touched, f"layers without an edge: {set(layers.roles) - touched}"
    assert any(r == "input" for r in layers.roles.values()), "no input drawn"
    # one whole: every box reachable from any other, edges taken both ways
    links: dict[str, set[str]] = {}
    for a, b in layers.edges:
        links.setdefault(a, set()).add(b)
        links.setdefault(b, set()).add(a)
    start = next(iter(layers.roles))
    assert reachable([start], links.__getitem__) == set(layers.roles)


def test_each_drawn_edge_is_a_data_path_between_its_layers(drawn):
    """Walked in the graph itself: from the ops of the edge's head back over data inputs,
    through ops of no third layer, the tail is reached; a mode edge's tail is a placeholder."""
    meta, layers = drawn
    nodes = node_map(meta)
    owner = {op: layer for layer, ops in layers.ops.items() for op in ops}
    for (src, dst), shape in layers.edges.items():
        def inputs(name):
            return [op_name(i) for i in nodes[name].input if not i.startswith("^")]

        def enter(name, src=src, dst=dst):
            return name in nodes and owner.get(name) in (None, src, dst)

        starts = [i for o in layers.ops[dst] for i in inputs(o) if owner.get(i) != dst]
        seen = reachable(starts, inputs, enter)
        reached = src in seen if src not in layers.ops else any(o in seen for o in layers.ops[src])
        assert reached, f"{src} -> {dst}: no data path in the graph"
        if (src, dst) in layers.modes:
            assert nodes[src].op.startswith("Placeholder") and shape == "", (src, dst, shape)
        else:
            assert shape != "[]", f"{src} -> {dst} carries a scalar"


def test_boxes_count_weights_and_slots_apart():
    meta = open_checkpoint(os.path.join(
        CORPUS, "irischang59__TransferLearning_MNIST__my_best_mnist_model_0_to_4",
        "my_best_mnist_model_0_to_4.meta")).meta_graph if os.path.isdir(CORPUS) else None
    if meta is None:
        pytest.skip("../shared is absent")
    layers = layer_graph(meta)
    assert layers.variables["hidden1"] == ["hidden1/kernel", "hidden1/bias"]
    assert layers.slots["hidden1"] == 4  # Adam and Adam_1 of each
    assert '"hidden1" [label="hidden1\\nmodel, 2 weights + 4 slots"' in to_dot(layers)


def test_unscoped_variables_make_layers_and_a_connected_picture():
    """The 2016 traffic-sign CNN (Variable, Variable_1, ...; ops unscoped): each weight with
    its bias is one layer, and the keep probability is a mode, not the data path."""
    path = os.path.join(CORPUS, "AloshkaD__traffic-signs__model_v1", "model.ckpt")
    if not os.path.isdir(CORPUS):
        pytest.skip("../shared is absent")
    layers = layer_graph(open_checkpoint(path).meta_graph)
    assert layers.variables["Variable_2"] == ["Variable_2", "Variable_7"]
    assert layers.edges[("Variable_2", "Variable_3")] == "[?, 128]"
    assert layers.roles["Placeholder_2"] == "mode"
    assert all(dst != "Variable_4" or src == "Variable_3" for src, dst in layers.edges)


def test_bert_attention_is_drawn_as_three_layers_into_its_output_and_shapes_are_not_data():
    """Query, key and value each feed the attention output (the scores they make together
    belong to none of them); the residual stream is an edge; the token ids reach the first
    attention only through the mask's batch size (a ``Shape``), which is no edge."""
    layers = layer_graph(open_checkpoint(
        os.path.join(ROOT, "fixtures", "bert_classifier", "model.ckpt")).meta_graph)
    scope = "bert/encoder/layer_0/attention"
    into_output = {a for a, b in layers.edges if b == f"{scope}/output/dense"}
    assert {f"{scope}/self/{p}" for p in ("query", "key", "value")} <= into_output
    assert "input_mask" in into_output and "input_ids" not in into_output
    assert (f"{scope}/self/query", f"{scope}/self/key") not in layers.edges
    assert ("bert/encoder/layer_0/output/dense", "bert/encoder/layer_1/attention/output/dense") \
        in layers.edges  # the residual
