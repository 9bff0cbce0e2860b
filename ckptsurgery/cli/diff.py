"""``ckptsurgery diff``: which variables two checkpoints share, and which of them moved."""

from __future__ import annotations

import argparse
import json

from .rewriting import CKPT_HELP

HELP = "compare two checkpoints variable by variable (added, removed, reshaped, changed, identical)"

EXAMPLES = """\
examples:
  # prove that fine-tuning left the frozen layers alone
  ckptsurgery diff base/model.ckpt tuned/model.ckpt --only '^hidden[12]/'

  ckptsurgery diff a.ckpt b.ckpt --atol 1e-6 --json

'identical' means bit-identical unless --atol is given; 'changed' gives the largest absolute
difference. The exit status is 0 whatever the differences.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("diff", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help=CKPT_HELP)
    p.add_argument("b", metavar="B", help="the checkpoint to compare A with")
    p.add_argument("--atol", type=float, default=0.0, metavar="X",
                   help="largest absolute difference counted as identical (default 0: bitwise)")
    p.add_argument("--only", metavar="REGEX", help="compare only the variables matching REGEX")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    import re

    from ..checkpoint import open_checkpoint
    from ..diff import diff_checkpoints
    from ..errors import UserError

    if args.atol < 0:
        raise UserError(f"--atol must be >= 0, not {args.atol}")
    try:
        only = re.compile(args.only).search if args.only else None
    except re.error as e:
        raise UserError(f"--only '{args.only}': bad regex: {e}") from e
    a, b = open_checkpoint(args.a), open_checkpoint(args.b)
    result = diff_checkpoints(a, b, atol=args.atol, only=only)
    if args.json:
        print(json.dumps({"a": a.prefix, "b": b.prefix, "atol": args.atol, **result.as_dict()},
                         indent=2))
        return 0
    print(f"A {a.prefix}\nB {b.prefix}")
    print(f"identical {len(result.identical)}, changed {len(result.changed)}, reshaped "
          f"{len(result.reshaped)}, added {len(result.added)}, removed {len(result.removed)}")
    for name, delta in result.changed.items():
        print(f"  changed   {name}  max |A-B| = {delta:.6g}")
    for name in result.reshaped:
        va, vb = a.variables[name], b.variables[name]
        print(f"  reshaped  {name}  {list(va.shape)} {va.dtype} -> {list(vb.shape)} {vb.dtype}")
    for name in result.added:
        print(f"  added     {name}")
    for name in result.removed:
        print(f"  removed   {name}")
    for name in result.identical:
        print(f"  identical {name}")
    return 0
