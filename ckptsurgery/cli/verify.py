"""``ckptsurgery verify``: read every tensor, check checksums and the ``.meta`` against the data."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP, MANY_HELP
from .batch import add_batch_options

HELP = "check that a checkpoint is intact: every tensor reads back, checksums match, .meta fits"

EXAMPLES = """\
examples:
  ckptsurgery verify base/my_model.ckpt
  ckptsurgery verify runs/mnist/ --json

exit status: 0 intact; 2 broken (each problem is listed) or not found.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", nargs="+", help=CKPT_HELP + MANY_HELP)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="accept NaN and Inf values (reported as a problem otherwise)")
    add_batch_options(p, writes=False)
    return p


def run(args) -> int:
    from ..errors import CheckpointCorruptError
    from ..safety.verify import verify_checkpoint

    report = verify_checkpoint(args.checkpoint, allow_nonfinite=args.allow_nonfinite)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    if not report.ok:
        raise CheckpointCorruptError(report.summary())
    return 0
