"""A model with several inputs grafts from one .npz: a BERT made by Google's own code.

The fixture ``fixtures/bert_classifier`` is a tiny BERT built with ``bert-tensorflow``'s
``modeling.py`` and ``run_classifier.create_model`` (three int32 inputs ``input_ids``,
``input_mask``, ``segment_ids``; labels ``labels``). A graft on its pooled output must find the
three inputs by itself, feed each its array, keep them placeholders in the export, and leave the
frozen encoder computing exactly what the source graph computes, padding masked.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import ROOT
from safety_helpers import assert_clean_error, run_main

BERT = os.path.join(ROOT, "fixtures", "bert_classifier", "model.ckpt")
SEQ = 8


def _tokens(n: int, seed: int) -> dict[str, np.ndarray]:
    """Token rows of random lengths, zero-padded, with their mask (as BERT's input pipeline
    makes them) and a label readable from the first word."""
    rng = np.random.RandomState(seed)
    lengths = rng.randint(3, SEQ + 1, n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.randint(5, 32, (n, SEQ)).astype(np.int32) * mask
    segments = np.zeros((n, SEQ), np.int32)
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
            "labels": (ids[:, 1] > 18).astype(np.int64)}


@pytest.fixture(scope="module")
def grafted(tmp_path_factory):
    """The graft on the pooled output, encoder frozen by a cut; (data, output prefix, stdout)."""
    folder = tmp_path_factory.mktemp("bert")
    data = folder / "tokens.npz"
    np.savez(data, **_tokens(120, 0))
    out = folder / "out" / "model.ckpt"
    code, stdout, err = run_main("graft", BERT, "--at", "pooled_output", "--dense", "cls:2",
                                 "--cut-after", "pooled_output", "--data", str(data),
                                 "--epochs", "2", "--out", str(out))
    assert code == 0, err
    return data, str(out), stdout


def test_the_three_inputs_are_found_and_each_fed_its_array(grafted):
    _, _, stdout = grafted
    assert "inputs:  input_ids:0, input_mask:0, segment_ids:0   labels: labels:0" in stdout
    assert ("arrays fed: input_ids -> input_ids:0, input_mask -> input_mask:0, "
            "segment_ids -> segment_ids:0") in stdout
    assert "data: 96 training, 24 validation rows" in stdout  # a fifth of a small set
    assert "feeds:" not in stdout  # no mask of zeros, no --feed needed
    assert "epoch 2/2: valid accuracy" in stdout


def _run(prefix: str, fetch: str, rows: dict[str, np.ndarray], times: int = 1):
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf.Graph().as_default() as g, tf1.Session() as sess:
        tf1.train.import_meta_graph(prefix + ".meta").restore(sess, prefix)
        kinds = {n: g.get_operation_by_name(n).type for n in rows}
        feed = {g.get_tensor_by_name(f"{n}:0"): a for n, a in rows.items()}
        out = [sess.run(g.get_tensor_by_name(fetch), feed) for _ in range(times)]
    return out, kinds


def test_the_export_keeps_the_inputs_and_computes_the_frozen_encoder_exactly(grafted):
    """Pooled output of the export against the source graph's, on padded rows: within 1e-6
    (the mask works), and the same input twice gives the same output."""
    _, out, _ = grafted
    rows = {k: v for k, v in _tokens(16, 1).items() if k != "labels"}
    assert (rows["input_mask"] == 0).any(), "padded rows"
    (source,), _ = _run(BERT, "bert/pooler/dense/Tanh:0", rows)
    (first, second), kinds = _run(out, "bert/pooler/dense/Tanh:0", rows, times=2)
    assert kinds == dict.fromkeys(rows, "Placeholder")  # inputs stay inputs
    np.testing.assert_allclose(first, source, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(first, second)
    # and the padding matters: a mask of ones gives another pooled output
    (unmasked,), _ = _run(out, "bert/pooler/dense/Tanh:0",
                          {**rows, "input_mask": np.ones_like(rows["input_mask"])})
    assert np.abs(unmasked - first).max() > 1e-4


def test_the_new_classifier_runs_on_the_three_inputs(grafted):
    _, out, _ = grafted
    rows = {k: v for k, v in _tokens(5, 2).items() if k != "labels"}
    (logits,), _ = _run(out, "cls/BiasAdd:0", rows)
    assert logits.shape == (5, 2) and np.isfinite(logits).all()


def test_an_npz_without_an_array_for_an_input_names_what_is_missing(tmp_path):
    data = {k: v for k, v in _tokens(20, 3).items() if k != "segment_ids"}
    np.savez(tmp_path / "t.npz", **data)
    code, _, err = run_main("graft", BERT, "--at", "pooled_output", "--dense", "cls:2",
                            "--data", str(tmp_path / "t.npz"), "--out", str(tmp_path / "m.ckpt"))
    assert_clean_error(code, err, 2, "it needs one for segment_ids",
                       "the graph's inputs are input_ids, input_mask, segment_ids")
    assert not (tmp_path / "m.ckpt.index").exists()


def test_inputs_can_be_named_and_a_wrong_row_shape_is_one_line(tmp_path):
    data = _tokens(20, 4)
    data["input_mask"] = data["input_mask"][:, :5]
    np.savez(tmp_path / "t.npz", **data)
    code, _, err = run_main("graft", BERT, "--at", "pooled_output", "--dense", "cls:2",
                            "--inputs", "input_ids,input_mask,segment_ids",
                            "--data", str(tmp_path / "t.npz"), "--out", str(tmp_path / "m.ckpt"))
    assert_clean_error(code, err, 2, "array 'input_mask' has rows of shape [5]",
                       "takes [8]")
