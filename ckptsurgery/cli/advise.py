"""``ckptsurgery advise``: which transfer strategy fits your data, and the graft command."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP, add_data_options

HELP = "say which transfer strategy fits your data (size x similarity) and print the graft command"

EXAMPLES = """\
examples:
  ckptsurgery advise base/my_model.ckpt --data my_digits.npz --similar
  ckptsurgery advise cnn/model.ckpt --data flowers/ --dissimilar --at pool2/MaxPool
  ckptsurgery advise cnn/model.ckpt --data mnist.npz --classes 5-9 --per-class 100 --dissimilar

The advice is sized on the rows that will train (after --classes, the validation rows and
--per-class), and the command it prints passes those options on, so it runs as printed.

small (<= 1,000 images) and similar: feature-extract; small and dissimilar: fine-tune-top:2
(and augment); large and similar: fine-tune-top:1; large and dissimilar: fine-tune-all.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("advise", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    add_data_options(p.add_argument_group("your data (as graft takes it; passed on in the "
                                          "command)"), data_required=True)
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
    from ..train.data import parse_classes

    advice = advise(open_checkpoint(args.checkpoint), args.data, similar=args.similar,
                    at=args.at, out=args.out,
                    classes=parse_classes(args.classes) if args.classes else None,
                    per_class=args.per_class, valid_size=args.valid_size, seed=args.seed)
    print(json.dumps(advice.as_dict(), indent=2) if args.json else "\n".join(advice.lines()))
    return 0
