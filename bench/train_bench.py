"""Benchmark: seconds per epoch of each demo step, ckptsurgery's ``fit`` against the write-up's
feed loop in plain TensorFlow.

    python bench/train_bench.py [--data ../shared/data/mnist.npz] [--epochs 5] [--out DIR]

ckptsurgery: the demo's steps (``run_demo``, what ``ckptsurgery demo STEP`` runs) on full MNIST
(55,000 training, 5,000 validation rows), ``--epochs`` epochs; its report's per-epoch seconds (training plus validation, the
in-graph loop's build not included).

Plain TF: the same models written by hand in ``tf.compat.v1`` as the write-up does, on the same
arrays, the same learning rates and optimizers, and the same batches (``RandomState(seed)``
permutation per epoch, batches of 50): one ``session.run`` with a ``feed_dict`` per batch, then
validation accuracy in chunks of 5,000 rows. The graft steps start from the base checkpoint the
demo wrote (hidden1-3 restored by name), fine-tune from the transfer step the demo chose; the
cache step computes hidden2 once (untimed, as in ckptsurgery) and feeds it.

The table shows the median epoch of each side, their ratio (plain TF / ckptsurgery: above 1 is
faster than plain TF) and the best validation accuracies. One run, both sides in this process,
epoch by epoch (after each of ckptsurgery's epochs, one of plain TF's, run from the demo's
log), so that a change in the machine's load falls on both. Never used as a test: wall-clock
numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from ckptsurgery.graft.demo import (  # noqa: E402
    STEP_NAMES,
    STEPS,
    TRANSFER_STEPS,
    DemoConfig,
    run_demo,
)
from ckptsurgery.train.data import load_dataset, split  # noqa: E402

MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist.npz")
BATCH = 50


def plain_epochs(step, data, base: str, start: str, epochs: int, seed: int):
    """The write-up's loop for one demo step, one epoch at a time: yields (seconds, validation
    accuracy) after each epoch."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    graph.seed = seed
    widths = (300, 50, 50, 50, 50, 10) if step.name == "base" else (300, 50, 50, 20, 10)
    names = ([f"hidden{i}" for i in range(1, len(widths))] + ["logits"])
    with graph.as_default():
        x = tf1.placeholder(tf.float32, (None, 784))
        y = tf1.placeholder(tf.int64, (None,))
        out, layers, hidden2 = x, {}, None
        for name, width in zip(names, widths, strict=True):
            if step.name in ("freeze-stop-gradient", "cache") and name == "hidden3":
                hidden2 = out
                out = tf1.placeholder_with_default(tf1.stop_gradient(out), (None, 50))
                fed_hidden2 = out
            with tf1.variable_scope(name):
                k = tf1.get_variable("kernel", (out.shape[-1], width),
                                     initializer=tf1.glorot_uniform_initializer())
                b = tf1.get_variable("bias", (width,), initializer=tf1.zeros_initializer())
            layers[name] = (k, b)
            out = tf1.matmul(out, k) + b
            if name != "logits":
                out = tf1.nn.relu(out)
        loss = tf1.reduce_mean(tf1.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=out))
        accuracy = tf1.reduce_mean(tf1.cast(tf1.nn.in_top_k(out, y, 1), tf.float32))
        trained = [v for n, kb in layers.items() for v in kb
                   if step.name in ("base", "graft", "fine-tune")
                   or n in ("hidden3", "hidden4", "logits")]
        optimizer = (tf1.train.AdamOptimizer(step.lr) if step.optimizer == "adam"
                     else tf1.train.GradientDescentOptimizer(step.lr))
        train_op = optimizer.minimize(loss, var_list=trained)
        init = tf1.global_variables_initializer()
        restored = {f"{n}/{part}": v for n, kb in layers.items()
                    for part, v in zip(("kernel", "bias"), kb, strict=True)
                    if step.name == "fine-tune" or n in ("hidden1", "hidden2", "hidden3")}
        saver = tf1.train.Saver(restored) if step.name != "base" else None
    x_train, x_valid = data.x_train, data.x_valid
    # Not a `with Session`: that would make it the default session between yields, inside
    # the demo's own.
    sess = tf1.Session(graph=graph)
    try:
        sess.run(init)
        if saver:
            saver.restore(sess, start if step.name == "fine-tune" else base)
        inputs = x
        if step.cache_frozen:
            inputs = fed_hidden2
            x_train, x_valid = (np.concatenate([sess.run(hidden2, {x: a[i:i + 5000]})
                                                for i in range(0, len(a), 5000)])
                                for a in (x_train, x_valid))
        rng = np.random.RandomState(seed)
        for _ in range(epochs):
            t = time.perf_counter()
            order = rng.permutation(len(data.y_train))
            for i in range(0, len(order), BATCH):
                idx = order[i:i + BATCH]
                sess.run([train_op, loss], {inputs: x_train[idx], y: data.y_train[idx]})
            acc = sum(sess.run(accuracy, {inputs: x_valid[i:i + 5000], y: data.y_valid[i:i + 5000]})
                      * len(data.y_valid[i:i + 5000]) for i in range(0, len(x_valid), 5000))
            yield time.perf_counter() - t, acc / len(data.y_valid)
    finally:
        sess.close()

class Alternating:
    """The demo's log, used to run one epoch of the plain loop after each of ckptsurgery's
    epochs (whose time is taken before it logs), so that a stretch in which the machine is
    slower falls on both sides rather than on one step of one."""

    def __init__(self, plain):
        self._make, self._loop = plain, None
        self.seconds: list[float] = []
        self.accuracies: list[float] = []

    def __call__(self, line: str) -> None:
        if not (line.strip().startswith("epoch ") and "valid accuracy" in line):
            return
        if self._loop is None:
            self._loop = self._make()
        seconds, accuracy = next(self._loop)
        self.seconds.append(seconds)
        self.accuracies.append(accuracy)

    def close(self) -> None:
        """Close the plain loop's session here, not whenever the collector finds it (closing a
        session starts a thread, which can deadlock inside another thread's start)."""
        if self._loop is not None:
            self._loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=MNIST)
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs per step (default 5: the median epoch is not the warm-up one)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="folder for the demo's outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    out = os.path.join(args.out or tempfile.mkdtemp(prefix="train_bench-"), "demo")
    config = DemoConfig(out=out, data=args.data, epochs=args.epochs, seed=args.seed,
                        progress=False, force=True)
    data = split(load_dataset(args.data, input_shape=[None, 784]))
    base = os.path.join(out, STEPS[0].checkpoint)
    print(f"{args.epochs} epochs per step on {len(data.y_train):,} training rows, batch {BATCH}; "
          f"{os.cpu_count()} CPUs; each step's epochs by ckptsurgery and plain TF in turn")
    print(f"{'step':22} {'plain TF s/epoch':>17} {'ckptsurgery':>12} {'ratio':>6} "
          f"{'valid acc plain':>16} {'ckptsurgery':>12}")
    entries: dict = {}
    for step in STEPS:
        if step.name == "distill":  # not a step of the write-up: trains on 100 images a digit
            continue
        started = (max(TRANSFER_STEPS, key=lambda n: entries[n]["final_valid_accuracy"])
                   if step.name == "fine-tune" else "base")
        start = os.path.join(out, next(s.checkpoint for s in STEPS if s.name == started))
        plain = Alternating(lambda step=step, start=start: plain_epochs(
            step, data, base, start, args.epochs, args.seed))
        try:
            entry = entries[step.name] = run_demo(config, [step.name], log=plain)["steps"][step.name]
        finally:
            plain.close()
        assert entry.get("started_from", "base") == started and len(plain.seconds) == args.epochs
        ours = statistics.median(entry["seconds"])
        theirs = statistics.median(plain.seconds)
        print(f"{step.name:22} {theirs:17.3f} {ours:12.3f} {theirs / ours:6.2f} "
              f"{max(plain.accuracies):16.4f} {entry['final_valid_accuracy']:12.4f}", flush=True)
    assert [s.name for s in STEPS] == list(STEP_NAMES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
