"""Benchmark: the migration verbs against ``cp`` and plain TF, on big tensors and on many.

    python bench/strip_bench.py [--dir DIR] [--layers 4] [--width 8192] [--keep]
    python bench/strip_bench.py --many 2000 [--width 64]
    python bench/strip_bench.py --dir DIR --reuse [--many 2000]   # the checkpoint of a --keep run
    python bench/strip_bench.py --repeat 3    # each step 3 times: the median, and every run

Big tensors (default): a checkpoint of ``layers`` float32 ``[width, width]`` kernels plus biases
(4 x 256 MiB = 1 GiB of weights by default) with Adam slots (2 GiB more), one Adam step taken
so the slots are not zeros, and a ``.meta``. Then, each in its own process, measured in this
one run:

* ``cp`` of the data file (the I/O floor of reading 3 GB and writing 3 GB);
* plain TF strip: ``import_meta_graph``, a ``Saver`` over the model's variables restores them
  and saves them (the smaller checkpoint a user would make by hand);
* plain TF cast: ``tf.train.load_checkpoint`` reads every tensor, ``tf.cast`` makes the
  floating ones float16, ``SaveV2`` writes them all;
* ``ckptsurgery inspect``, ``strip --optimizer-slots``, ``cast --dtype float16`` of the whole
  checkpoint (reads 3 GB, writes 1.5 GB), ``convert --to safetensors`` of the model's weights.

Many tensors (``--many N``): ``N`` small dense layers with Adam slots (``6 N + 2`` tensors, a
``.meta`` of tens of MB); ``inspect``, ``verify``, ``strip``, ``cast`` against plain TF's
strip (one run of it: minutes), to show that costs grow linearly with the number of tensors.

Wall time and peak RSS of each child come from ``os.wait4`` (the child's own ``ru_maxrss``);
``sync`` runs (untimed) before each step. ckptsurgery fsyncs its output before renaming it into
place (durability); ``cp`` and plain TF leave their writes in the page cache, so their times
do not include writing to the disk. The ``+sync s`` column adds a ``sync`` right after each
run: every tool's output on disk (ckptsurgery's has nothing left to write).
Process start-up and the TensorFlow import (about 4 s, 550 MB) are included for both Python runs;
the package runs from its bytecode, as an installed one does (``PYTHONDONTWRITEBYTECODE`` is
dropped from the children's environment).
The files stay in the page cache between steps, so the numbers compare the tools' own work
rather than the disk. Never used as a test: wall-clock numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

BUILD = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    prefix, layers, width, stacked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.set_random_seed(0)
        x = tf.compat.v1.placeholder(tf.float32, [None, width], name="x")
        h, outs = x, []
        for i in range(layers):
            with tf.compat.v1.variable_scope(f"layer{i}"):
                k = tf.compat.v1.get_variable("kernel", [width, width],
                                              initializer=tf.compat.v1.glorot_uniform_initializer())
                b = tf.compat.v1.get_variable("bias", [width], initializer=tf.zeros_initializer())
                if stacked == "1":
                    h = tf.nn.relu(tf.matmul(h, k) + b)
                else:
                    outs.append(tf.reduce_mean(tf.nn.relu(tf.matmul(x, k) + b)))
        # stacked: one deep network; side by side: many small layers on the same input
        loss = tf.reduce_mean(tf.square(h)) if stacked == "1" else tf.add_n(outs)
        train = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=g) as s:
            s.run(tf.compat.v1.global_variables_initializer())
            s.run(train, {x: np.random.RandomState(0).randn(8, width).astype(np.float32)})
            saver.save(s, prefix, write_state=False)
""")

PLAIN_TF_CAST = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    src, out = sys.argv[1], sys.argv[2]
    reader = tf.train.load_checkpoint(src)
    names = sorted(reader.get_variable_to_shape_map())
    values = [reader.get_tensor(n) for n in names]
    values = [tf.cast(v, tf.float16) if v.dtype.kind == "f" else tf.constant(v) for v in values]
    tf.raw_ops.SaveV2(prefix=out, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=values)
""")

PLAIN_TF = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    src, out = sys.argv[1], sys.argv[2]
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.train.import_meta_graph(src + ".meta", clear_devices=True)
        model = tf.compat.v1.trainable_variables()
        saver = tf.compat.v1.train.Saver(var_list=model)
        with tf.compat.v1.Session(graph=g) as s:
            saver.restore(s, src)
            saver.save(s, out, write_state=False)
""")


REPEAT = 1  # runs of each step (--repeat); the median wall time is reported


def measure(label: str, argv: list[str], outputs: tuple[str, ...] = (),
            repeat: int | None = None) -> dict:
    """Run ``argv`` ``repeat`` (default ``REPEAT``) times; the median wall time, every wall
    time, the median of wall time plus a ``sync`` right after (the output on disk, as
    ckptsurgery's fsyncs leave it: plain TF and ``cp`` leave theirs in the page cache), and
    the peak RSS ``os.wait4`` reports. ``outputs`` (files or folders) are removed, untimed,
    before each run."""
    walls, durable, rss = [], [], 0.0
    for _ in range(repeat or REPEAT):
        for path in outputs:
            shutil.rmtree(path) if os.path.isdir(path) else (
                os.remove(path) if os.path.exists(path) else None)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package runs from bytecode
        os.sync()  # start each step with no dirty pages of the previous one still being written
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        os.sync()
        durable.append(time.perf_counter() - start)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode != 0:
            sys.exit(f"{label} failed (exit {proc.returncode}):\n{err[-2000:]}")
        rss = max(rss, usage.ru_maxrss / 1024)
    return {"label": label, "wall": sorted(walls)[len(walls) // 2], "walls": walls,
            "durable": sorted(durable)[len(durable) // 2], "rss_mb": rss}


def files_size(prefix: str) -> int:
    folder, base = os.path.dirname(prefix), os.path.basename(prefix)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.startswith(base + ".") and not f.endswith(".meta"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="work folder (default: a new temporary folder)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=None,
                    help="kernel width (default 8192; 64 with --many)")
    ap.add_argument("--many", type=int, metavar="N", help="N small layers instead of big ones")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each step N times and report the median (default 1)")
    ap.add_argument("--reuse", action="store_true",
                    help="use the checkpoint an earlier --keep run left in --dir (no build)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    width = args.width or (64 if args.many else 8192)
    layers = args.many or args.layers
    work = args.dir or tempfile.mkdtemp(prefix="strip_bench-")
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    src = os.path.join(work, "src", "model.ckpt")
    out = lambda name: os.path.join(work, name, "model.ckpt")  # noqa: E731
    ours = lambda *argv: [py, "-m", "ckptsurgery", *argv]  # noqa: E731
    try:
        if args.reuse:  # only the source stays from the earlier run
            build = {"wall": 0.0}
            for name in os.listdir(work):
                path = os.path.join(work, name)
                if name != "src":
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        else:
            print(f"building {layers} x [{width}, {width}] float32 + Adam slots in {work} ...",
                  flush=True)
            build = measure("build", [py, "-c", BUILD, src, str(layers), str(width),
                                      "0" if args.many else "1"], repeat=1)
        data = [os.path.join(os.path.dirname(src), f) for f in os.listdir(os.path.dirname(src))
                if ".data-" in f]
        total = files_size(src)
        meta = os.path.getsize(src + ".meta")
        print(f"built {total / 2**20:,.0f} MiB of data, {meta / 2**20:.1f} MiB .meta in "
              f"{build['wall']:.0f} s", flush=True)
        plain_strip = measure("plain TF strip (import, restore, save)",
                              [py, "-c", PLAIN_TF, src, out("plain")],
                              (os.path.dirname(out("plain")),),
                              repeat=1 if args.many else None)  # minutes each: the reference
        steps = [measure("ckptsurgery inspect", ours("inspect", src))]
        if args.many:
            steps.append(measure("ckptsurgery verify", ours("verify", src)))
        else:
            steps.insert(0, measure("cp data file", ["cp", data[0], os.path.join(work, "c.data")],
                                    (os.path.join(work, "c.data"),)))
        steps += [
            measure("ckptsurgery strip --optimizer-slots",
                    ours("strip", src, "--optimizer-slots", "--quiet", "--out", out("strip")),
                    (os.path.dirname(out("strip")),)),
            measure("ckptsurgery cast --dtype float16",
                    ours("cast", src, "--dtype", "float16", "--quiet", "--out", out("cast")),
                    (os.path.dirname(out("cast")),)),
        ]
        if not args.many:
            plain_cast = measure("plain TF cast (read all, cast, save)",
                                 [py, "-c", PLAIN_TF_CAST, src, out("plaincast")],
                                 (os.path.dirname(out("plaincast")),))
            steps += [measure("ckptsurgery convert --to safetensors",
                              ours("convert", src, "--to", "safetensors", "--quiet", "--out",
                                   os.path.join(work, "model.safetensors")),
                              (os.path.join(work, "model.safetensors"),)), plain_cast]
        print(f"\ncheckpoint: {total / 2**30:.2f} GiB, {layers} layers of [{width}, {width}] + "
              f"Adam slots, .meta {meta / 2**20:.1f} MiB; outputs: strip "
              f"{files_size(out('strip')) / 2**30:.2f} GiB (plain TF "
              f"{files_size(out('plain')) / 2**30:.2f} GiB), cast "
              f"{files_size(out('cast')) / 2**30:.2f} GiB; {os.cpu_count()} CPUs")
        print(f"{'step':<40} {'wall s':>8} {'x TF strip':>11} {'x TF cast':>10} "
              f"{'+sync s':>8} {'peak RSS MB':>12}")
        for r in [plain_strip, *steps]:
            cast_ratio = (f"{r['wall'] / plain_cast['wall']:>10.2f}" if not args.many
                          else f"{'':>10}")
            runs = (" (" + ", ".join(f"{w:.1f}" for w in r["walls"]) + ")"
                    if len(r["walls"]) > 1 else "")
            print(f"{r['label']:<40} {r['wall']:>8.1f} {r['wall'] / plain_strip['wall']:>11.2f} "
                  f"{cast_ratio} {r['durable']:>8.1f} {r['rss_mb']:>12.0f}{runs}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
