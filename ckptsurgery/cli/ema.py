"""``ckptsurgery ema``: the weights of a checkpoint replaced by their moving averages."""

from __future__ import annotations

import argparse

from .rewriting import add_rewrite_options, run_rewrite

HELP = ("write the checkpoint with each weight replaced by its ExponentialMovingAverage shadow "
        "(shadows dropped, .meta consistent): what to serve or graft")

EXAMPLES = """\
examples:
  ckptsurgery ema runs/model.ckpt-20000 --out serve/model.ckpt
  ckptsurgery ema runs/model.ckpt-20000 --dry-run --out x     # which weight takes which shadow

The shadows are found from the graph's moving-average updates (or, without a .meta, by the
name TensorFlow gives them: <weight>/ExponentialMovingAverage). 'graft --use-ema' restores the
shadows into the weights without writing this intermediate checkpoint.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ema", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rewrite_options(p)
    return p


def run(args) -> int:
    from ..migrate.rewrite import plan_ema

    return run_rewrite(args, plan_ema)
