"""``ckptsurgery rename``: rename variables by regex, in the checkpoint and consistently in its .meta."""

from __future__ import annotations

import argparse

from .rewriting import add_rewrite_options, run_rewrite

HELP = "rename variables by regex, in the checkpoint and in its .meta"

EXAMPLES = """\
examples:
  # TF 1.0/1.1 RNN checkpoints for TF >= 1.2 (weights -> kernel, biases -> bias under RNN cells)
  ckptsurgery rename old/model.ckpt --preset rnn-1.2 --out new/model.ckpt

  # move everything out of the 'dnn/' scope, and call weights 'kernel'
  ckptsurgery rename m.ckpt --map '^dnn/=' --map 'weights$=kernel' --out renamed/m.ckpt

  # see what would change
  ckptsurgery rename m.ckpt --map 'biases$=bias' --out x --dry-run

Each --map is REGEX=REPLACEMENT (split at the last '='), applied with Python's re.sub to every
variable name, in order. With a .meta, the variable ops and the ops under their names are
renamed too (inputs, colocation, collections, saver), so the output imports and restores.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..migrate.rewrite import RENAME_PRESETS

    p = sub.add_parser("rename", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rewrite_options(p)
    g = p.add_argument_group("renames (at least one)")
    g.add_argument("--map", action="append", default=[], metavar="REGEX=REPLACEMENT",
                   help="a regex rename; repeat for more")
    g.add_argument("--preset", action="append", default=[], choices=sorted(RENAME_PRESETS),
                   help="a named list of renames: rnn-1.2 = TF 1.2's RNN cell renames")
    p.set_defaults(_check=check)
    return p


def check(args) -> list:
    """The renames the options give (before a batch starts, once).

    Raises:
        UserError: none given, or a --map that does not parse.
    """
    from ..errors import UserError
    from ..migrate.rewrite import RENAME_PRESETS, parse_map

    maps = [m for name in args.preset for m in RENAME_PRESETS[name]]
    maps += [parse_map(m) for m in args.map]
    if not maps:
        raise UserError("nothing to rename: give --map REGEX=REPLACEMENT or --preset rnn-1.2")
    return maps


def run(args) -> int:
    from ..migrate.rewrite import PRESET_WORDS, plan_rename

    maps = check(args)
    what = " or ".join(PRESET_WORDS[name] for name in args.preset) \
        if args.preset and not args.map else None
    return run_rewrite(args, lambda checkpoint: plan_rename(checkpoint, maps, what=what,
                                                            verbose=args.verbose))
