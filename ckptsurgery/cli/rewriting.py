"""Options and running shared by the commands that rewrite a checkpoint (rename, strip, cast).

Each of them only differs in its own options and in the plan it makes; output, ``--dry-run``,
``--json``, ``--no-meta``, ``--batch-mb`` and the report are the same, and live here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ..formats.stream import DEFAULT_BATCH_BYTES
from . import CKPT_HELP, MANY_HELP, add_output_options
from .batch import add_batch_options


def add_rewrite_options(p: argparse.ArgumentParser) -> None:
    """Add the checkpoint argument and the output options of a rewriting command."""
    p.add_argument("checkpoint", metavar="CKPT", nargs="+", help=CKPT_HELP + MANY_HELP)
    p.add_argument("--out", metavar="PREFIX", help="output checkpoint prefix (local or a URL)")
    o = p.add_argument_group("output")
    add_output_options(o)
    o.add_argument("--no-meta", action="store_true",
                   help="write no .meta, even when the input has one")
    o.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    o.add_argument("--batch-mb", type=_megabytes, default=DEFAULT_BATCH_BYTES / 2**20, metavar="MB",
                   help="bytes of a tensor read and written at a time; bounds memory "
                        f"(default {DEFAULT_BATCH_BYTES // 2**20})")
    add_batch_options(p, writes=True, preload=(
        "ckptsurgery.migrate.rewrite", "ckptsurgery.formats.writer",
        "ckptsurgery.safety.staging", "ckptsurgery.safety.verify"))


def _megabytes(text: str) -> float:
    """``--batch-mb``: a number of MB, at least 1 (smaller pieces make a rewrite crawl)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"'{text}': give a size in MB of at least 1 (default "
                                         f"{DEFAULT_BATCH_BYTES // 2**20})")
    return value


def run_rewrite(args, make_plan: Callable) -> int:
    """Open the checkpoint, make the plan, print it (``--dry-run``) or carry it out."""
    from ..formats.checkpoint import open_checkpoint
    from ..migrate.rewrite import plan_and_rewrite

    plan, result = plan_and_rewrite(
        open_checkpoint(args.checkpoint), make_plan, None if args.dry_run else args.out,
        force=args.force, with_meta=not args.no_meta, progress=not args.quiet,
        max_batch_bytes=int(args.batch_mb * 2**20))
    if result is None:
        print(json.dumps(plan.as_dict(), indent=2) if args.json else "\n".join(plan.lines()))
        return 0
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0
