"""Benchmark: ``convert --to hf`` and ``strip --optimizer-slots`` of a BERT-base fine-tune
against copying its data shard with ``cp`` and syncing it.

    python bench/hf_bench.py [--dir DIR] [--keep] [--repeat N]

The checkpoint is made here without TensorFlow (the bundle writer): every variable of a
BERT-base ``run_classifier`` fine-tune (12 layers, hidden 768, intermediate 3072, vocabulary
30522, 512 positions, 2 labels) with ``AdamWeightDecayOptimizer``'s ``adam_m`` and ``adam_v``
beside each weight and ``global_step``, random float32 values, and ``bert_config.json`` /
``vocab.txt`` beside it (no ``.meta``: roles come from the names, as for most released
fine-tunes). Each step runs in its own process (``strip_bench.measure``: wall time, wall time
plus a ``sync``, peak RSS from ``os.wait4``); the ratios are of the synced times, measured in
this one run. Never a test: wall-clock numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from strip_bench import measure  # noqa: E402

CONFIG = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
          "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
          "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
          "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02}


def bert_base_shapes(labels: int = 2) -> dict[str, tuple]:
    """The weights of Google's BERT-base with run_classifier's head, by name."""
    h, i = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    shapes = {"bert/embeddings/word_embeddings": (CONFIG["vocab_size"], h),
              "bert/embeddings/token_type_embeddings": (2, h),
              "bert/embeddings/position_embeddings": (512, h),
              "bert/embeddings/LayerNorm/beta": (h,), "bert/embeddings/LayerNorm/gamma": (h,)}
    for n in range(CONFIG["num_hidden_layers"]):
        layer = f"bert/encoder/layer_{n}/"
        for part in ("query", "key", "value"):
            shapes[f"{layer}attention/self/{part}/kernel"] = (h, h)
            shapes[f"{layer}attention/self/{part}/bias"] = (h,)
        shapes.update({f"{layer}attention/output/dense/kernel": (h, h),
                       f"{layer}attention/output/dense/bias": (h,),
                       f"{layer}attention/output/LayerNorm/beta": (h,),
                       f"{layer}attention/output/LayerNorm/gamma": (h,),
                       f"{layer}intermediate/dense/kernel": (h, i),
                       f"{layer}intermediate/dense/bias": (i,),
                       f"{layer}output/dense/kernel": (i, h), f"{layer}output/dense/bias": (h,),
                       f"{layer}output/LayerNorm/beta": (h,),
                       f"{layer}output/LayerNorm/gamma": (h,)})
    shapes.update({"bert/pooler/dense/kernel": (h, h), "bert/pooler/dense/bias": (h,),
                   "output_weights": (labels, h), "output_bias": (labels,)})
    return shapes


def build(prefix: str) -> int:
    """Write the fine-tune at ``prefix``; returns the number of variables."""
    from ckptsurgery.formats.writer import BundleFileWriter

    rng = np.random.default_rng(0)
    piece = 4 * 2**20  # values per piece written

    def values(shape):
        left = int(np.prod(shape))
        while left:
            n = min(piece, left)
            yield rng.standard_normal(n, dtype=np.float32) * 0.02
            left -= n

    names = []
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with BundleFileWriter(prefix) as writer:
        for name, shape in sorted(bert_base_shapes().items()):
            for key in (name, f"{name}/adam_m", f"{name}/adam_v"):
                writer.add_pieces(key, np.float32, shape, values(shape))
                names.append(key)
        writer.add("global_step", np.array(3000, np.int64))
    folder = os.path.dirname(prefix)
    with open(os.path.join(folder, "bert_config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                          + [f"tok{n}" for n in range(CONFIG["vocab_size"] - 5)]) + "\n")
    return len(names) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each step N times and report the median")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="hf_bench-")
    src = os.path.join(work, "src", "model.ckpt-3000")
    py = sys.executable
    try:
        count = build(src)
        data = src + ".data-00000-of-00001"
        print(f"built {count} variables, {os.path.getsize(data) / 2**30:.2f} GiB data shard "
              f"in {work}", flush=True)
        ours = lambda *argv: [py, "-m", "ckptsurgery", *argv]  # noqa: E731
        copy = os.path.join(work, "copy.data")
        steps = [
            measure("cp data shard", ["cp", data, copy], (copy,), repeat=args.repeat),
            measure("ckptsurgery convert --to hf",
                    ours("convert", src, "--to", "hf", "--quiet", "--out",
                         os.path.join(work, "hf")), (os.path.join(work, "hf"),),
                    repeat=args.repeat),
            measure("ckptsurgery strip --optimizer-slots",
                    ours("strip", src, "--optimizer-slots", "--quiet", "--out",
                         os.path.join(work, "strip", "model.ckpt")),
                    (os.path.join(work, "strip"),), repeat=args.repeat),
        ]
        base = steps[0]["durable"]
        print(f"\n{'step':<38} {'wall s':>7} {'+sync s':>8} {'x cp+sync':>10} {'peak RSS MB':>12}")
        for s in steps:
            print(f"{s['label']:<38} {s['wall']:>7.2f} {s['durable']:>8.2f} "
                  f"{s['durable'] / base:>10.2f} {s['rss_mb']:>12.0f}")
        hf = os.path.join(work, "hf", "model.safetensors")
        print(f"\nmodel.safetensors {os.path.getsize(hf) / 2**20:,.0f} MiB; stripped data "
              f"{os.path.getsize(os.path.join(work, 'strip', 'model.ckpt.data-00000-of-00001')) / 2**20:,.0f} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
