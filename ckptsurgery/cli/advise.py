"""``ckptsurgery advise``: which transfer strategy fits your data, and the graft command."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP

HELP = "say which transfer strategy fits your data (size x similarity) and print the graft command"

EXAMPLES = """\
examples:
  ckptsurgery advise base/my_model.ckpt --data my_digits.npz --similar
  ckptsurgery advise cnn/model.ckpt --data flowers/ --dissimilar --at pool2/MaxPool

small (<= 1,000 images) and similar: feature-extract; small and dissimilar: fine-tune-top:2
(and augment); large and similar: fine-tune-top:1; large and dissimilar: fine-tune-all.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("advise", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--data", required=True, metavar="DATA",
                   help="your training data (as graft --data takes it)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--similar", action="store_true",
                      help="your images look like the ones the model learnt from")
    kind.add_argument("--dissimilar", action="store_true", help="they do not")
    p.add_argument("--at", metavar="REF", help="where to graft (default: the first graft point)")
    p.add_argument("--out", metavar="PREFIX", help="output prefix for the suggested command")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    from ..formats.checkpoint import open_checkpoint
    from ..graft.advice import advise

    advice = advise(open_checkpoint(args.checkpoint), args.data, similar=args.similar,
                    at=args.at, out=args.out)
    print(json.dumps(advice.as_dict(), indent=2) if args.json else "\n".join(advice.lines()))
    return 0
