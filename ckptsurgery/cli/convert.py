"""``ckptsurgery convert``: a checkpoint's weights as npz, Keras HDF5, safetensors or TF2."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP, add_output_options

HELP = "write a checkpoint's weights as npz, Keras HDF5, safetensors or a TF2 checkpoint"

EXAMPLES = """\
examples:
  ckptsurgery convert model.ckpt --to npz --out weights.npz
  ckptsurgery convert model.ckpt --to keras-h5 --map '^dnn/=' --out weights.h5
  ckptsurgery convert model.ckpt --to safetensors --torch-layout --out model.safetensors
  ckptsurgery convert model.ckpt --to tf2 --out tf2/ckpt

Optimizer slots, optimizer state and step counters are left out unless --include-slots.
Names: the checkpoint keys (without TF2's /.ATTRIBUTES/VARIABLE_VALUE), renamed by --map.
keras-h5: one group per layer (the variable's scope, '/' as '_'), datasets kernel:0, bias:0;
load with model.load_weights(path, by_name=True). tf2: every '/'-separated part of a name is an
object attribute (hidden1/kernel restores into tf.train.Checkpoint(hidden1=m), m.kernel a
tf.Variable). safetensors holds all converted tensors in memory while writing.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..migrate.convert import FORMATS

    p = sub.add_parser("convert", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output file (a checkpoint prefix for tf2)")
    p.add_argument("--include-slots", action="store_true",
                   help="also write optimizer slots, optimizer state and step counters")
    p.add_argument("--only", metavar="REGEX", help="convert only the variables matching REGEX")
    p.add_argument("--map", action="append", default=[], metavar="REGEX=REPLACEMENT",
                   help="rename in the output (as in 'rename'); repeat for more")
    p.add_argument("--torch-layout", action="store_true",
                   help="PyTorch names and layouts: kernels [out, in], weight/bias, '.' separators "
                        "(safetensors, npz)")
    p.add_argument("--use-ema", action="store_true",
                   help="write each weight's ExponentialMovingAverage shadow in its place")
    add_output_options(p)
    return p


def run(args) -> int:
    from ..migrate.convert import convert_checkpoint
    from ..migrate.rewrite import parse_map

    result = convert_checkpoint(
        args.checkpoint, args.to, args.out, include_slots=args.include_slots, only=args.only,
        maps=[parse_map(m) for m in args.map], torch_layout=args.torch_layout, force=args.force,
        progress=not args.quiet, use_ema=args.use_ema)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0
