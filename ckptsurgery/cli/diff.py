"""``ckptsurgery diff``: which variables two checkpoints share, and which of them moved."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP

HELP = "compare two checkpoints variable by variable (added, removed, reshaped, retyped, changed, identical)"

EXAMPLES = """\
examples:
  # why does this checkpoint not restore into that graph? every mismatch, not the first
  ckptsurgery diff old/model.ckpt --against new/model.ckpt.meta

  # prove that fine-tuning left the frozen layers alone
  ckptsurgery diff base/model.ckpt tuned/model.ckpt --only '^hidden[12]/'

  # a fine-tuned BERT against its stripped copy: every weight bit-identical
  ckptsurgery diff tuned/model.ckpt slim/model.ckpt --weights-only

  ckptsurgery diff a.ckpt b.ckpt --atol 1e-6 --json

'identical' means bit-identical unless --atol is given; 'changed' gives the largest absolute
difference. The exit status is 0 whatever the differences.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("diff", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help=CKPT_HELP)
    p.add_argument("b", metavar="B", nargs="?", help="the checkpoint to compare A with")
    p.add_argument("--against", metavar="META",
                   help="instead of B: compare A's data with what this .meta's saver (or another "
                        "checkpoint's .meta, or A's own) restores: missing, extra, reshaped, "
                        "retyped and likely renamed variables; exit 1 when they disagree")
    p.add_argument("--atol", type=float, default=0.0, metavar="X",
                   help="largest absolute difference counted as identical (default 0: bitwise)")
    p.add_argument("--only", metavar="REGEX", help="compare only the variables matching REGEX")
    p.add_argument("--weights-only", action="store_true",
                   help="leave out optimizer slots (Adam, adam_m, lamb_m...), optimizer state and "
                        "step counters, in both checkpoints")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    import re

    from ..errors import UserError
    from ..formats.checkpoint import open_checkpoint
    from ..migrate.diff import diff_checkpoints

    if args.atol < 0:
        raise UserError(f"--atol must be >= 0, not {args.atol}")
    try:
        only = re.compile(args.only).search if args.only else None
    except re.error as e:
        raise UserError(f"--only '{args.only}': bad regex: {e}") from e
    if (args.b is None) == (args.against is None):
        raise UserError("give a checkpoint B to compare A with, or --against META (not both)")
    if args.against is not None:
        return _against(open_checkpoint(args.a), args.against, args.json)
    a, b = open_checkpoint(args.a), open_checkpoint(args.b)
    result = diff_checkpoints(a, b, atol=args.atol, only=only,
                              weights_only=args.weights_only)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0


def _against(checkpoint, against: str, as_json: bool) -> int:
    from ..errors import UserError
    from ..formats.checkpoint import open_checkpoint
    from ..formats.metafile import read_meta_graph
    from ..migrate.diff import diff_against_meta

    if against.endswith(".meta"):
        meta, path = read_meta_graph(against), against
    else:
        other = open_checkpoint(against)
        if other.meta_graph is None:
            raise UserError(f"--against '{against}': that checkpoint has no .meta; give a .meta")
        meta, path = other.meta_graph, other.files.meta
    result = diff_against_meta(checkpoint, meta, path)
    print(json.dumps(result.as_dict(), indent=2) if as_json else "\n".join(result.lines()))
    return 0 if result.ok else 1
