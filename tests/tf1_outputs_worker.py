"""A process that runs TF1 graphs the way their authors did and saves what they compute.

    python tests/tf1_outputs_worker.py JOBS.json

Each job is ``{"prefix": ..., "inputs": NPZ, "out": NPZ}``: plain
``tf.compat.v1.train.import_meta_graph`` of the checkpoint's ``.meta``, ``saver.restore``, then
one run feeding every array of ``inputs`` to the tensor its graph collection of the same name
holds, fetching every other single-tensor collection the fixture maker filled (sequence output,
pooled output, logits; an ELECTRA's generator's sequence output). TensorFlow stays out of the test process, which loads torch and
transformers; one process serves every job.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

OUTPUTS = ("sequence_output", "pooled_output", "logits", "start_logits", "end_logits",
           "mlm_logits", "nsp_logits", "generator_sequence_output")


def run(prefix: str, inputs: str, out: str) -> None:
    import numpy as np
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        saver = tf1.train.import_meta_graph(prefix + ".meta", clear_devices=True)
        saver.restore(sess, prefix)
        with np.load(inputs) as f:
            feed = {tf1.get_collection(name)[0]: f[name] for name in f.files}
        fetch = {name: tf1.get_collection(name)[0] for name in OUTPUTS
                 if tf1.get_collection(name)}
        np.savez(out, **sess.run(fetch, feed))


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            run(job["prefix"], job["inputs"], job["out"])
