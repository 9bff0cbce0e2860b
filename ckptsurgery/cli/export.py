"""``ckptsurgery export``: a checkpoint as a SavedModel, a TFLite model or an ONNX model."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP, add_output_options

HELP = "export a checkpoint as a TF2 SavedModel, a TFLite model or an ONNX model, checked"

EXAMPLES = """\
examples:
  ckptsurgery export cnn/model.ckpt --to saved-model --out cnn_saved_model
  ckptsurgery export cnn/model.ckpt --to tflite --out cnn.tflite --quantize float16
  ckptsurgery export rnn/model.ckpt --inputs x --feed init_state=zeros --to onnx --out rnn.onnx
  ckptsurgery export mlp/my_model.ckpt --outputs probs=dnn/logits/BiasAdd --to saved-model \\
      --out mlp_saved_model --check-data batch.npz

The signature 'serving_default' takes only the real inputs: training switches are baked in as
false, keep probabilities as 1.0, other placeholders as their --feed value; every dropout is
off and the batch dimension is dynamic. Before it is moved into place, the export is loaded by
its own runtime (tf.saved_model.load, tf.lite.Interpreter, onnxruntime), run on 100 random rows
(or the arrays of --check-data) and compared with the TF1 session; a difference above --atol
writes nothing.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..graph.runtimes import QUANTIZE
    from ..migrate.export import DEFAULT_ATOL, TARGETS

    p = sub.add_parser("export", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--to", required=True, choices=TARGETS)
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output: a folder for saved-model, a file for tflite and onnx")
    p.add_argument("--inputs", metavar="REF[,REF...]",
                   help="the input placeholders (default: collection 'inputs', else the only "
                        "float placeholder the output needs)")
    p.add_argument("--outputs", metavar="[KEY=]REF[,...]",
                   help="the output tensors, KEY naming them in the signature (default: the "
                        "first inference output 'inspect' shows, keyed by its scope)")
    p.add_argument("--feed", action="append", default=[], metavar="NAME=VALUE",
                   help="value baked in for a placeholder that is not an input (true/false, a "
                        "number, or zeros shaped like it); repeat for more")
    p.add_argument("--quantize", choices=QUANTIZE,
                   help="tflite: dynamic-range (int8 weights) or float16 weights")
    p.add_argument("--check-data", metavar="FILE.npz",
                   help="check on these arrays (named after the inputs) instead of random ones")
    p.add_argument("--atol", type=float, metavar="X",
                   help="largest difference from the TF1 session allowed (default "
                        + ", ".join(f"{t} {a:g}" for t, a in DEFAULT_ATOL.items())
                        + "; with --quantize 5%% of the largest output)")
    p.add_argument("--allow-unsafe-ops", action="store_true",
                   help="run a graph that 'ckptsurgery audit' flags; only for graphs you trust")
    add_output_options(p)
    return p


def run(args) -> int:
    from ..graphdef.feeds import parse_feed
    from ..migrate.export import export_model

    result = export_model(
        args.checkpoint, args.to, args.out,
        inputs=_names(args.inputs), outputs=_names(args.outputs),
        feeds=dict(parse_feed(f) for f in args.feed), quantize=args.quantize,
        check_data=args.check_data, atol=args.atol, force=args.force,
        allow_unsafe_ops=args.allow_unsafe_ops)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None
