"""``ckptsurgery cast``: store floating-point variables as float16, bfloat16 or float32."""

from __future__ import annotations

import argparse

from .rewriting import add_rewrite_options, run_rewrite

HELP = "store floating-point variables in another dtype (float16, bfloat16, float32, float64)"

EXAMPLES = """\
examples:
  ckptsurgery cast model.ckpt --dtype float16 --out half/model.ckpt
  ckptsurgery cast model.ckpt --dtype bfloat16 --only '^dnn/' --out bf16/model.ckpt

Integer, bool and string variables and step counters are copied as they are. The .meta keeps
its variables' dtypes: its saver casts on restore (and back on save), so the graph computes as
before with the rounded values.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..migrate.rewrite import FLOAT_DTYPES

    p = sub.add_parser("cast", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rewrite_options(p)
    p.add_argument("--dtype", required=True,
                   choices=FLOAT_DTYPES)
    p.add_argument("--only", metavar="REGEX", help="cast only the variables matching REGEX")
    return p


def run(args) -> int:
    from ..migrate.rewrite import plan_cast

    return run_rewrite(args, lambda checkpoint: plan_cast(checkpoint, args.dtype,
                                                          only=args.only))
