"""``ckptsurgery audit``: list the ops of a graph that read or write files, use the network or run
code."""

from __future__ import annotations

import argparse
import json

from . import MANY_HELP
from .batch import add_batch_options

HELP = "list the ops of a checkpoint's graph that touch files, the network or run code"

#: Exit status when ops are flagged (0: clean; 2: the input itself is wrong).
EXIT_FLAGGED = 3

EXAMPLES = f"""\
examples:
  ckptsurgery audit downloaded/model.ckpt
  ckptsurgery audit downloaded/model.ckpt.meta --json

exit status: 0 nothing flagged; {EXIT_FLAGGED} ops flagged; 2 no checkpoint or unreadable .meta.
Commands that run an imported graph (graft, except --dry-run) refuse flagged graphs unless
given --allow-unsafe-ops.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("audit", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", nargs="+",
                   help="checkpoint prefix, one of its files, a folder, or a lone .meta file"
                        + MANY_HELP)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_batch_options(p, writes=False)
    return p


def run(args) -> int:
    from ..safety.audit import audit_checkpoint

    report = audit_checkpoint(args.checkpoint)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    return 0 if report.ok else EXIT_FLAGGED
