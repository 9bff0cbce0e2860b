"""``ckptsurgery salvage``: a copy of a checkpoint whose ``.meta`` today's TensorFlow imports."""

from __future__ import annotations

import argparse

from .rewriting import add_rewrite_options, run_rewrite

HELP = ("make a .meta that today's TensorFlow imports: devices cleared, stale collection "
        "entries dropped, unregistered ops removed (--drop-unregistered)")

EXAMPLES = """\
examples:
  # a TF 1.x graph pinned to /gpu:0 whose TFLearn collections name ops that are gone
  ckptsurgery salvage old/model.ckpt --out fixed/model.ckpt

  # a graph with tf.contrib or TPU ops this TensorFlow no longer registers
  ckptsurgery salvage old/model.ckpt --drop-unregistered --out fixed/model.ckpt

The tensors are copied as they are. --drop-unregistered removes each unregistered op with
everything that reads it (summaries, contrib-only training ops, TPU replication), and refuses
when a variable or the saver would go with them. 'ckptsurgery inspect' names the unregistered
ops.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("salvage", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rewrite_options(p)
    p.add_argument("--drop-unregistered", action="store_true",
                   help="remove the ops this TensorFlow does not register, and what depends on "
                        "them")
    return p


def run(args) -> int:
    from ..migrate.rewrite import plan_salvage

    return run_rewrite(args, lambda checkpoint: plan_salvage(
        checkpoint, drop_unregistered=args.drop_unregistered))
