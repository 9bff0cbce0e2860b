"""``ckptsurgery graph``: a picture of a checkpoint's graph as its layers."""

from __future__ import annotations

import argparse

from . import CKPT_HELP

HELP = ("draw a checkpoint's graph as its layers (each weight-reading op with its bias, norm and "
        "activation; data edges with their shapes)")

EXAMPLES = """\
examples:
  ckptsurgery graph base/my_model.ckpt --out model.svg
  ckptsurgery graph base/my_model.ckpt --around hiddens3 --depth 1 --out around.dot

  # the picture of a graft, colouring reused, frozen, trained, new and pruned layers
  ckptsurgery graft base/my_model.ckpt --at hiddens3 --dense logits:10 --dry-run \\
      --graph graft.svg --out x

.dot needs nothing; .svg and .png need Graphviz's 'dot' program.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..graphdef.picture import FORMATS

    p = sub.add_parser("graph", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--out", required=True, metavar="FILE",
                   help=f"the picture ({', '.join(FORMATS)})")
    p.add_argument("--around", metavar="REF", help="only the layers near this tensor or op")
    p.add_argument("--depth", type=int, default=2, metavar="N",
                   help="with --around: how many layers away (default 2)")
    p.add_argument("--force", action="store_true", help="replace an existing picture")
    return p


def run(args) -> int:
    from ..errors import UserError
    from ..formats.checkpoint import open_checkpoint
    from ..graphdef.picture import layer_graph, to_dot, write_picture

    if args.depth < 0:
        raise UserError(f"--depth {args.depth}: give 0 or more")
    checkpoint = open_checkpoint(args.checkpoint)
    meta = checkpoint.meta_graph
    if meta is None:
        raise UserError(f"checkpoint '{checkpoint.prefix}' has no .meta file; a picture needs "
                        "the graph")
    layers = layer_graph(meta, around=args.around, depth=args.depth)
    written = write_picture(to_dot(layers, title=checkpoint.prefix), args.out, force=args.force)
    n_layers = sum(role not in ("input", "mode") for role in layers.roles.values())
    print(f"wrote {written} ({n_layers} layers, {len(layers.edges)} edges)")
    return 0
