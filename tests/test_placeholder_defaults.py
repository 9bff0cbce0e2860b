"""Placeholder defaults come from what a placeholder feeds, the same in inspect and graft.

A keep probability declared without a name that says so (the 2016 traffic-sign CNN's
``Placeholder_2``, read by ``dropout/add`` and ``dropout/div``) is 1.0; a dropout rate 0.0; the
predicate of a ``cond`` false; a mask or any placeholder with a shape is data, never a switch. No
message, suggestion or flag anywhere proposes a keep probability of 0 or a mask of zeros.
"""

from __future__ import annotations

import glob
import os
import re

import pytest
from conftest import CORPUS, ROOT
from safety_helpers import run_main

from ckptsurgery.errors import UserError
from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.graphdef.feeds import default_feed, resolve_feeds
from ckptsurgery.graphdef.metagraph import placeholders

SIGNS = os.path.join(CORPUS, "AloshkaD__traffic-signs__model_v1", "model.ckpt")
needs_corpus = pytest.mark.skipif(not os.path.isdir(CORPUS), reason="../shared is absent")


def _graph(tmp_path, build):
    """The MetaGraphDef of a small TF1 graph made by ``build(tf1)``."""
    import tensorflow as tf

    from ckptsurgery.formats.protos import from_tensorflow

    with tf.Graph().as_default() as g:
        build(tf.compat.v1)
        return from_tensorflow(tf.compat.v1.train.export_meta_graph(graph=g))


@needs_corpus
def test_the_traffic_sign_cnns_unnamed_keep_probability_is_one(tmp_path):
    meta = open_checkpoint(SIGNS).meta_graph
    feed = default_feed(meta, "Placeholder_2")
    assert (feed.value, feed.origin) == (1.0, "default: a keep probability (read by dropout/add)")
    code, out, err = run_main("graft", SIGNS, "--at", "Relu_3", "--inputs", "Placeholder",
                              "--dense", "logits:5", "--dry-run", "--out", str(tmp_path / "x"))
    assert code == 0, err
    assert "feeds:   Placeholder_2=1.0 (default: a keep probability" in out


def test_a_rate_is_zero_a_cond_predicate_false_a_mask_is_no_switch(tmp_path):
    def build(tf1):
        x = tf1.placeholder(tf1.float32, (None, 4), name="x")
        rate = tf1.placeholder(tf1.float32, (), name="p")
        flag = tf1.placeholder(tf1.bool, (), name="mode")
        tf1.placeholder(tf1.int32, (None, 4), name="input_mask")
        y = tf1.nn.dropout(x, rate=rate)
        tf1.cond(flag, lambda: y * 2.0, lambda: y)

    meta = _graph(tmp_path, build)
    assert default_feed(meta, "p").value == 0.0
    assert default_feed(meta, "mode").value is False
    assert default_feed(meta, "input_mask") is None
    assert default_feed(meta, "x") is None


def test_an_unknown_scalar_gets_no_guessed_value_only_what_reads_it(tmp_path):
    def build(tf1):
        x = tf1.placeholder(tf1.float32, (None, 4), name="x")
        scale = tf1.placeholder(tf1.float32, (), name="scale")
        tf1.multiply(x, scale, name="scaled")

    meta = _graph(tmp_path, build)
    with pytest.raises(UserError) as e:
        resolve_feeds(meta, ["scale"], {})
    assert "scale (float32 [], read by scaled)" in str(e.value)
    assert "--feed scale=" not in str(e.value)


def _graphs() -> list[str]:
    metas = sorted(glob.glob(os.path.join(CORPUS, "*", "*.meta"))) + sorted(
        glob.glob(os.path.join(ROOT, "fixtures", "*", "*.meta")))
    return [m[:-len(".meta")] for m in metas]


@pytest.mark.parametrize("prefix", _graphs(), ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_no_message_or_flag_suggests_a_keep_probability_of_zero_or_a_mask_of_zeros(prefix):
    """Every placeholder of every real graph and fixture, fed nothing: the error's examples and
    inspect's graft-point flags never say keep_prob=0, a rate of 1, or mask=zeros."""
    meta = open_checkpoint(prefix).meta_graph
    texts = []
    try:
        resolve_feeds(meta, list(placeholders(meta)), {})
    except UserError as e:
        texts.append(str(e))
    code, out, err = run_main("inspect", prefix, "--check-import", "--json")
    assert code == 0, err
    texts.append(out)
    for text in texts:
        assert not re.search(r"--feed [\w/]+=0(\.0)?\b", text), text
        assert not re.search(r"mask[\w/]*=zeros", text), text
