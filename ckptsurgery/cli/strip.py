"""``ckptsurgery strip``: keep only some variables (drop optimizer slots, a scope...)."""

from __future__ import annotations

import argparse

from .rewriting import add_rewrite_options, run_rewrite

HELP = "keep only some variables; the .meta is rewritten to restore exactly those"

EXAMPLES = """\
examples:
  # a deployment checkpoint: no Adam/Momentum/... slots, no beta1_power
  ckptsurgery strip runs/model.ckpt-2000 --optimizer-slots --out deploy/model.ckpt

  # drop the output layer, keep the rest
  ckptsurgery strip m.ckpt --drop '^logits/' --out features/m.ckpt

  # keep only two scopes
  ckptsurgery strip m.ckpt --keep '^hidden[12]/' --out lower/m.ckpt

REGEXes match anywhere in the name (re.search). With a .meta, dropped variables leave the graph
with what uses them (e.g. the train op), and the saver restores exactly what is kept.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("strip", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rewrite_options(p)
    g = p.add_argument_group("what to drop")
    g.add_argument("--optimizer-slots", action="store_true",
                   help="drop optimizer slots (Adam, Adam_1, Momentum, ...) and optimizer state "
                        "(beta1_power, ...); global_step stays")
    g.add_argument("--drop", action="append", default=[], metavar="REGEX",
                   help="drop the variables matching REGEX; repeat for more")
    g.add_argument("--keep", action="append", default=[], metavar="REGEX",
                   help="keep only the variables matching REGEX (then --drop applies)")
    p.set_defaults(_check=check)
    return p


def check(args) -> None:
    """The options' own errors (before a batch starts, once)."""
    from ..errors import UserError

    if not (args.optimizer_slots or args.drop or args.keep):
        raise UserError("nothing to strip: give --optimizer-slots, --drop REGEX or --keep REGEX")


def run(args) -> int:
    from ..migrate.rewrite import plan_strip

    check(args)
    return run_rewrite(args, lambda checkpoint: plan_strip(
        checkpoint, optimizer_slots=args.optimizer_slots, drop=args.drop, keep=args.keep))
