"""Graft points on every graph that has an input: classifiers, but also BERT (its pooled output
first), GPT-2 (its final layer norm, pooled over the sequence), an embedding model, RNNs and
Estimators; and a dry-run graft at the first one works with the flags inspect gives."""

from __future__ import annotations

import glob
import os

import pytest
from conftest import CORPUS, ROOT
from safety_helpers import run_main

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graph.graftpoints import find_graft_points


def _graphs_with_inputs() -> list[str]:
    metas = sorted(glob.glob(os.path.join(CORPUS, "*", "*.meta"))) + sorted(
        glob.glob(os.path.join(ROOT, "fixtures", "*", "*.meta")))
    return [m[:-len(".meta")] for m in metas
            if any(n.op == "Placeholder" for n in open_checkpoint(m).meta_graph.graph_def.node)]


@pytest.mark.parametrize("prefix", _graphs_with_inputs(),
                         ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_every_graph_with_an_input_has_graft_points_and_the_first_grafts(prefix, tmp_path):
    meta = open_checkpoint(prefix).meta_graph
    points, why = find_graft_points(meta)
    assert points, why
    first = points[0]
    code, out, err = run_main("graft", prefix, "--at", first.at, "--dense", "new_top:2",
                              *first.flags, "--dry-run", "--out", str(tmp_path / "x"))
    assert code == 0, f"--at {first.at} {' '.join(first.flags)}: {err}"
    assert "dry run: nothing written" in out


@pytest.mark.parametrize("fixture, first, flags", [
    ("bert_classifier", "bert/pooler/dense/Tanh:0", []),
    ("gpt2", "model/ln_f/add_1:0", ["--pool", "avg"]),
    ("sparse", "model/embedding_lookup:0", []),
])
def test_transformers_and_embeddings_graft_where_their_families_do(fixture, first, flags):
    meta = open_checkpoint(os.path.join(ROOT, "fixtures", fixture, "model.ckpt")).meta_graph
    points, _ = find_graft_points(meta)
    assert (points[0].at, points[0].flags) == (first, flags)
