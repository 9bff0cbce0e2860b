"""Pictures of the surgery: ``ckptsurgery graph`` and ``graft --graph`` draw layers (name
scopes collapsed) coloured by role, shapes on the edges, the cut in red; DOT always, SVG and
PNG through Graphviz when it is installed, a clear error when it is not."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import FIXTURE_CNN, FIXTURE_MLP, run_cli
from safety_helpers import assert_clean_error

from ckptsurgery.formats.checkpoint import open_checkpoint

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
    assert _boxes(dot) == {"X": "input", "y": "input", "hidden1": "frozen", "hidden2": "frozen",
                           "hidden3": "trained", "hidden4": "new", "logits": "new",
                           "hidden5": "pruned"}
    assert '"hidden2" -> "hidden3" [label="[?, 50] stop_gradient", color="#cc0000"' in dot
    assert '"X" -> "hidden1" [label="[?, 784]"]' in dot
    n_ops = len(open_checkpoint(FIXTURE_MLP).meta_graph.graph_def.node)
    assert n_ops > 150 and len(_boxes(dot)) <= 12, "hundreds of ops read as a dozen boxes"
    assert not (tmp_path / "never.ckpt.index").exists()


def test_graph_draws_a_checkpoint_and_the_layers_around_a_tensor(tmp_path):
    r = run_cli("graph", FIXTURE_CNN, "--out", str(tmp_path / "cnn.dot"))
    assert r.returncode == 0, r.stderr
    boxes = _boxes((tmp_path / "cnn.dot").read_text())
    assert {"conv1", "bn1", "conv2", "bn2", "fc", "logits"} <= set(boxes)
    assert boxes["x"] == "input" and boxes["conv1"] == "model"
    r = run_cli("graph", FIXTURE_CNN, "--around", "fc/Relu", "--depth", "1", "--out",
                str(tmp_path / "around.dot"))
    assert r.returncode == 0, r.stderr
    # fc's neighbours: bn2 below it (through pool2, the flatten and the dropout), logits above
    assert set(_boxes((tmp_path / "around.dot").read_text())) == {"bn2", "fc", "logits"}


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
