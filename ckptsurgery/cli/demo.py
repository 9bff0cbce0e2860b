"""``ckptsurgery demo``: the MNIST transfer-learning workflow in one command, with a report."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "run the MNIST transfer-learning workflow (base, graft, freeze, cache, fine-tune), report"

EXAMPLES = """
examples:
  # all steps on the MNIST subset shipped in the package (offline, a minute or two)
  ckptsurgery demo

  # all steps on full MNIST, into a chosen folder
  ckptsurgery demo --data ../shared/data/mnist.npz --out runs/mnist

  # run one step again on an earlier run's folder
  ckptsurgery demo cache --out runs/mnist --force

The folder gets the checkpoints, report.md, report.json and accuracy.png.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    # ckptsurgery.graft.demo imports TensorFlow only when a step runs, so --help stays instant.
    from ..graft.demo import STEP_NAMES, STEPS

    steps = "steps (each needs the outputs of the earlier ones in --out DIR):\n" + "".join(
        f"  {s.name:<21} {s.title}\n  {'':<21} {s.optimizer} lr {s.lr} -> {s.checkpoint}\n"
        for s in STEPS)
    p = sub.add_parser("demo", help=HELP, description=HELP + ".", epilog=steps + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", nargs="?", choices=STEP_NAMES, metavar="STEP",
                   help="run only this step (default: all): " + ", ".join(STEP_NAMES))
    p.add_argument("--data", metavar="PATH", help="an .npz in Keras's mnist.npz layout, a folder "
                   "of MNIST IDX files, or 'keras' (default: the MNIST subset in the package)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: runs/demo-<timestamp>)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per step (default 5)")
    p.add_argument("--seed", type=int, default=42, help="seed of weights and shuffling (default 42)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or step log, only the "
                   "final table")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--logdir", metavar="DIR", help="TensorBoard events of each step in DIR/STEP: "
                   "its graph, train/loss and valid/accuracy per epoch")
    return p


def run(args) -> int:
    import os
    import time

    from ..errors import UserError
    from ..graft.demo import DemoConfig, run_demo
    from ..graft.report import render_table

    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: give at least 1")
    out = args.out or os.path.join("runs", "demo-" + time.strftime("%Y%m%d-%H%M%S"))
    config = DemoConfig(out=out, data=args.data, epochs=args.epochs, seed=args.seed,
                        force=args.force, progress=not args.quiet, logdir=args.logdir)
    stream = sys.stderr if args.json else sys.stdout

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=stream, flush=True)

    report = run_demo(config, [args.step] if args.step else None, log=log)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(file=stream)
        print(render_table(report), file=stream)
        print(f"\nreport: {os.path.join(out, 'report.md')}  plot: "
              f"{os.path.join(out, 'accuracy.png')}", file=stream)
    return 0
