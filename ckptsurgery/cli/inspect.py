"""``ckptsurgery inspect``: what a checkpoint holds, and what its .meta holds."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP

HELP = "list a checkpoint's format, variables, optimizer slots, and its .meta's contents"

EXAMPLES = """\
examples:
  ckptsurgery inspect base/my_model.ckpt
  ckptsurgery inspect runs/estimator/ --json | jq '.variables[] | select(.role == "model")'

The .meta is read as a protobuf; whether this TensorFlow imports it is tried in a fresh graph
(skip with --no-import-check), and a failure is explained, not raised.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-import-check", action="store_true",
                   help="do not try importing the .meta")
    return p


def run(args) -> int:
    from ..migrate.inspection import inspect_checkpoint

    result = inspect_checkpoint(args.checkpoint, check_import=not args.no_import_check)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0
