"""``ckptsurgery inspect``: what a checkpoint holds, and what its .meta holds."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP, MANY_HELP
from .batch import add_batch_options

HELP = "list a checkpoint's format, variables, optimizer slots, and its .meta's contents"

EXAMPLES = """\
examples:
  ckptsurgery inspect base/my_model.ckpt
  ckptsurgery inspect runs/estimator/ --json | jq '.variables[] | select(.role == "model")'
  ckptsurgery inspect uncased_L-12_H-768_A-12/bert_model.ckpt --config my_bert_config.json

The checkpoint and its .meta are read without TensorFlow (a V1 single-file checkpoint is read
through it). --check-import also tries importing the .meta with this TensorFlow in a fresh
graph, explains a failure instead of raising it, and lists the graph's graft points.

The model family (bert, gpt2; else generic) is read from names and shapes: layers, widths,
vocabulary, the head and the transformers architecture it makes; what shapes cannot tell
(attention heads, activation) from the config the release ships beside the checkpoint
(bert_config.json, hparams.json) or --config FILE.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", nargs="+", help=CKPT_HELP + MANY_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check-import", action="store_true",
                   help="also try importing the .meta with TensorFlow and list graft points "
                        "(loads TensorFlow: seconds)")
    p.add_argument("--model", metavar="FILE.py:FUNC",
                   help="the graph from this TF1 model function (or package.module:FUNC) "
                        "instead of the .meta, for checkpoints saved without one; implies "
                        "--check-import")
    p.add_argument("--config", metavar="FILE",
                   help="the model family's config file, when it is not beside the checkpoint")
    add_batch_options(p, writes=False)
    return p


def run(args) -> int:
    from ..migrate.inspection import inspect_checkpoint

    result = inspect_checkpoint(args.checkpoint, check_import=args.check_import,
                                model=args.model, config=args.config)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0
