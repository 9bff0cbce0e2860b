"""Helpers for the tests of inspect, diff, rename, strip, cast and convert.

They use plain TensorFlow only, never ckptsurgery, so that the tests check the library against
what TensorFlow itself reads and restores.
"""

from __future__ import annotations

import json
import os

from conftest import CORPUS, corpus_entries


def corpus_prefix(entry: str) -> str:
    """The checkpoint prefix of a corpus folder, from its record.json."""
    with open(os.path.join(CORPUS, entry, "record.json")) as f:
        return os.path.join(CORPUS, entry, json.load(f)["prefix"])


def readable_entries() -> list[str]:
    """Corpus folders whose record says TensorFlow's reader opens them."""
    out = []
    for entry in corpus_entries():
        with open(os.path.join(CORPUS, entry, "record.json")) as f:
            if json.load(f).get("reader_ok"):
                out.append(entry)
    return out


def entries_with_meta() -> list[str]:
    return [e for e in readable_entries() if os.path.isfile(corpus_prefix(e) + ".meta")]


def write_checkpoint(prefix: str, tensors: dict) -> str:
    """Write ``{key: array}`` as a V2 checkpoint with TensorFlow's own SaveV2 op."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                      shape_and_slices=[""] * len(tensors), tensors=list(tensors.values()))
    return prefix


def restore_values(prefix: str) -> dict:
    """Import ``prefix.meta`` with plain ``import_meta_graph`` in a fresh graph, restore
    ``prefix`` with the saver it builds, and return the value of every global variable it
    restored by its checkpoint key (a partitioned variable's parts put together under the
    key they are saved as). Variables the saver leaves alone (some graphs declare more than they
    save) are left out."""
    import numpy as np
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta", clear_devices=True)
        saver.restore(sess, prefix)
        variables = tf.compat.v1.global_variables()
        initialized = sess.run([tf.compat.v1.is_variable_initialized(v) for v in variables])
        variables = [v for v, done in zip(variables, initialized, strict=True) if done]
        values = sess.run(variables)  # one run for all: a run per variable costs seconds
        out = {}
        for v, value in zip(variables, values, strict=True):
            info = v._save_slice_info  # noqa: SLF001 - the only way to a partition's key
            if info is None:
                out[v.op.name] = value
                continue
            whole = out.setdefault(info.full_name, np.zeros(info.full_shape,
                                                            v.dtype.base_dtype.as_numpy_dtype))
            whole[tuple(slice(o, o + n)
                        for o, n in zip(info.var_offset, value.shape, strict=True))] = value
        return out

