"""The ``ckptsurgery`` command: argument parsing, error reporting, and dispatch.

Each subcommand lives in a module of this package with ``add_parser(subparsers)`` (which must not
import TensorFlow, so that ``--help`` is instant) and ``run(args) -> int``. Errors of the
library's :class:`~ckptsurgery.errors.UserError` family become one line on stderr and exit 2;
anything else exits 1 with a one-line message; ``--debug`` shows the traceback instead.
:mod:`.crashguard` runs it all in a child process so that a crash of TensorFlow is one line too.

May import: anything in the package (the CLI is the top layer); nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("graft", "advise", "demo", "verify", "audit", "inspect", "diff", "rename", "strip", "cast",
            "convert", "export", "ema", "salvage", "graph")

PROG = "ckptsurgery"

#: Commands that do no matrix products: numpy's OpenBLAS gets one thread there (its threads
#: spin on a core after each call, 15% of a strip's processor time, taken from a batch's
#: other jobs).
MIGRATION_COMMANDS = ("verify", "audit", "inspect", "diff", "rename", "strip", "cast", "convert",
                      "ema", "salvage")

#: Help of the CKPT argument that every command reading a checkpoint takes.
CKPT_HELP = ("checkpoint prefix, one of its files, or a folder with a 'checkpoint' file; a "
             "local path or a URL (s3://, gs://, http(s)://, memory://)")
#: What CKPT help adds for the commands that take many.
MANY_HELP = ("; several, a folder (searched recursively), a glob or a 'checkpoint' state file "
             "run the command on each")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, only that one's options are built (the
    others are listed by name and help): building one imports what its choices come from."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Surgery on legacy TensorFlow 1.x checkpoints: graft new layers on a trained "
        "model, freeze, train, export; inspect, diff and migrate old checkpoints.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the program's version number and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        if command is not None and name != command:
            sub.add_parser(name, help=module.HELP)
            continue
        p = module.add_parser(sub)
        p.add_argument("--debug", action="store_true",
                       help="show the full traceback of an error")
        p.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's own log lines (hidden otherwise; also "
                       "CKPTSURGERY_TF_LOGS=1) and the details short errors leave out")
        p.set_defaults(_run=module.run)
    return parser


def add_output_options(group) -> None:
    """Add ``--force``, ``--json`` and ``--quiet``, which every command that writes shares."""
    group.add_argument("--force", action="store_true", help="replace an existing output")
    group.add_argument("--json", action="store_true", help="print the result as one JSON object")
    group.add_argument("--quiet", action="store_true",
                       help="no progress bar (graft: print only the epochs and the result)")


def add_data_options(group, *, data_required: bool = False) -> None:
    """The options that choose training rows, shared by ``graft`` and ``advise`` (whose
    printed command must train on exactly the rows it sized the advice on)."""
    group.add_argument("--data", metavar="DATA", required=data_required,
                       help="an .npz with x_train, y_train (x_test, y_test), a folder of images "
                            "in one sub-folder per class (train/<class>/*.png, optional "
                            "test/<class>/), MNIST IDX files, or 'keras'; images are shaped to "
                            "the input placeholder")
    group.add_argument("--seed", type=int, default=42,
                       help="seed of the validation and --per-class draws, the new layers' "
                            "weights and the batches (default 42)")
    group.add_argument("--valid-size", type=int, metavar="N",
                       help="validation rows drawn at random by --seed, stratified by class, "
                            "never trained on (default: graft 5000, or a fifth of a set under "
                            "10,000 rows; advise a fifth of the "
                            "rows up to 25,000 of them, else 5000)")
    group.add_argument("--classes", metavar="LIST",
                       help="keep only these labels, remapped to 0..k-1 (5-9, or 0,2,4)")
    group.add_argument("--per-class", type=int, metavar="N",
                       help="keep N training images per class (drawn by --seed): small-data "
                            "transfer")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command in MIGRATION_COMMANDS and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    quiet_tensorflow()
    warnings.showwarning = _show_warning
    try:
        code = int(dispatch(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
        return code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`ckptsurgery inspect X | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if args.debug:
            raise
        from ..errors import exit_status

        code, line = exit_status(e)
        print(f"{PROG}: {line}", file=sys.stderr)
        return code


def dispatch(args) -> int:
    """Run the parsed command: once, or for a batch of checkpoints (:mod:`.batch`) when a
    command that takes several is given several, a folder of them, or ``--out-dir``."""
    if not getattr(args, "_batch", False):
        return args._run(args)
    from . import batch

    if batch.is_batch(args):
        return batch.run_batch(args)
    args.checkpoint = args.checkpoint[0]
    batch.check_single(args)
    return args._run(args)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's log lines off stderr, where our one-line errors go (what the C++
    start-up prints before reading ``TF_CPP_MIN_LOG_LEVEL`` is filtered by
    :mod:`.crashguard`). oneDNN stays as TensorFlow sets it, on for x86: its matrix products
    train the demo's full network about a fifth faster, with results repeatable run to run
    (docs/demo.md: two full runs, bit-identical checkpoints); ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment turns it off.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # The remote file systems log their retries and fallbacks; their final error is ours.
    for name in ("fsspec", "s3fs", "gcsfs", "aiobotocore", "botocore", "google"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    from ..errors import CkptSurgeryWarning

    if issubclass(category, CkptSurgeryWarning):
        print(f"{PROG}: warning: {message}", file=sys.stderr)


class _Version(argparse.Action):
    """``--version``, looked up only when asked (``importlib.metadata`` takes 30 ms)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ckptsurgery")
    except PackageNotFoundError:
        return "unknown"
