"""``ckptsurgery convert``: a checkpoint's weights as npz, Keras HDF5, safetensors or TF2."""

from __future__ import annotations

import argparse
import json

from . import CKPT_HELP, MANY_HELP, add_output_options
from .batch import add_batch_options

HELP = ("write a checkpoint's weights as npz, Keras HDF5, safetensors, a TF2 checkpoint or a "
        "Hugging Face transformers folder")

EXAMPLES = """\
examples:
  ckptsurgery convert model.ckpt --to npz --out weights.npz
  ckptsurgery convert model.ckpt --to keras-h5 --map '^dnn/=' --out weights.h5
  ckptsurgery convert model.ckpt --to safetensors --torch-layout --out model.safetensors
  ckptsurgery convert model.ckpt --to tf2 --out tf2/ckpt
  ckptsurgery convert bert_finetuned/model.ckpt-1000 --to hf --out bert-hf
  ckptsurgery convert gpt2/124M/model.ckpt --to hf --dry-run --out gpt2-hf
  ckptsurgery convert electra_small/electra_small --to hf --head generator --out gen-hf
  ckptsurgery convert runs/ --to safetensors --out-dir st/ --jobs 2

Many checkpoints (several CKPTs, folders, globs, state files) take --out-dir DIR: each output
is DIR/<the input's path relative to its source> plus the format's suffix (.npz, .h5,
.safetensors; none for a tf2 prefix or an hf folder), recorded in DIR's manifest.

Optimizer slots, optimizer state and step counters are left out unless --include-slots.
Names: the checkpoint keys (without TF2's /.ATTRIBUTES/VARIABLE_VALUE), renamed by --map.
keras-h5: one group per layer (the variable's scope, '/' as '_'), datasets kernel:0, bias:0;
load with model.load_weights(path, by_name=True). tf2: every '/'-separated part of a name is an
object attribute (hidden1/kernel restores into tf.train.Checkpoint(hidden1=m), m.kernel a
tf.Variable). safetensors holds all converted tensors in memory while writing.

hf: a folder transformers 5 loads with from_pretrained(DIR): config.json, model.safetensors
(sharded past --max-shard-size, with model.safetensors.index.json), vocab/tokenizer files when
they are beside the checkpoint. The model family (BERT, ALBERT, ELECTRA, GPT-2; inspect names
it) and its heads decide the architecture (--head picks another head the checkpoint holds: an
ELECTRA's generator); its rules (docs/families.md) name and lay out every tensor. Every variable
is written, or left out with a reason (--dry-run prints one line per variable); a variable no
rule maps, a shape the config does not give and a missing config file are errors (exit 2,
nothing written). The config file is the one the release ships beside the checkpoint
(bert_config.json, albert_config.json, hparams.json) or --config FILE.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..migrate.convert import FORMATS

    p = sub.add_parser("convert", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", nargs="+", help=CKPT_HELP + MANY_HELP)
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("--out", metavar="PATH",
                   help="output file (a checkpoint prefix for tf2, a folder for hf)")
    p.add_argument("--include-slots", action="store_true",
                   help="also write optimizer slots, optimizer state and step counters")
    p.add_argument("--only", metavar="REGEX", help="convert only the variables matching REGEX")
    p.add_argument("--map", action="append", default=[], metavar="REGEX=REPLACEMENT",
                   help="rename in the output (as in 'rename'); repeat for more")
    p.add_argument("--torch-layout", action="store_true",
                   help="PyTorch names and layouts: kernels [out, in], weight/bias, '.' separators "
                        "(safetensors, npz)")
    p.add_argument("--use-ema", action="store_true",
                   help="write each weight's ExponentialMovingAverage shadow in its place")
    hf = p.add_argument_group("--to hf")
    hf.add_argument("--config", metavar="FILE",
                    help="the family's config (bert_config.json, albert_config.json, "
                         "hparams.json) when it is not beside the checkpoint; for ELECTRA, whose "
                         "code writes none, the fields a run changed (num_attention_heads)")
    hf.add_argument("--rules", metavar="FILE",
                    help="a family's rules (JSON, docs/families.md): adds a family or overrides "
                         "rules of one")
    hf.add_argument("--head", metavar="NAME",
                    help="which of the checkpoint's heads to write, when it holds more than one "
                         "(an ELECTRA pretraining checkpoint: discriminator, the default, or "
                         "generator; inspect lists them)")
    hf.add_argument("--drop", action="append", default=[], metavar="REGEX",
                    help="leave out the variables matching REGEX (said in the mapping); repeat "
                         "for more")
    hf.add_argument("--dry-run", action="store_true",
                    help="print the mapping, one line per source variable, and write nothing")
    hf.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                    help="largest model.safetensors file before sharding (default 5GB, as "
                         "transformers)")
    add_output_options(p)
    add_batch_options(p, writes=True, preload=("ckptsurgery.migrate.rewrite",))
    p.set_defaults(_output_name=output_name, _check=check)
    return p


def check(args) -> None:
    """The options that do not go together (before a batch starts, once)."""
    from ..errors import UserError
    from ..migrate.hf import parse_size

    if args.to == "hf":
        from ..formats import storage

        remote = next((p for p in (args.out, getattr(args, "out_dir", None))
                       if p and storage.is_url(p)), None)
        if remote:
            raise UserError(f"'{remote}': --to hf writes a local folder; give a local --out or "
                            "--out-dir, then copy it up (gcloud storage cp -r, aws s3 cp "
                            "--recursive)")
        others = [flag for flag, given in (("--include-slots", args.include_slots),
                                           ("--only", args.only), ("--map", args.map),
                                           ("--torch-layout", args.torch_layout),
                                           ("--use-ema", args.use_ema)) if given]
        if others:
            raise UserError(f"{', '.join(others)} do not apply to --to hf: the family's rules "
                            "decide names and layouts (--drop leaves variables out)")
        parse_size(args.max_shard_size)
        return
    hf_only = [flag for flag, given in (("--config", args.config), ("--rules", args.rules),
                                        ("--head", args.head), ("--drop", args.drop),
                                        ("--dry-run", args.dry_run)) if given]
    if hf_only:
        raise UserError(f"{', '.join(hf_only)} apply to --to hf only")


#: What a batch's output adds to the input's relative prefix, by format.
SUFFIXES = {"npz": ".npz", "keras-h5": ".h5", "safetensors": ".safetensors", "tf2": "", "hf": ""}


def output_name(args, relative: str) -> str:
    """The output of the input at ``relative`` under ``--out-dir``: ``run1/model.ckpt-300``
    becomes ``run1/model.ckpt-300.safetensors`` (a prefix for tf2, a folder for hf)."""
    return relative + SUFFIXES[args.to]


def run(args) -> int:
    from ..migrate.convert import convert_checkpoint
    from ..migrate.rewrite import parse_map

    check(args)
    if args.to == "hf":
        return _hf(args)
    result = convert_checkpoint(
        args.checkpoint, args.to, args.out, include_slots=args.include_slots, only=args.only,
        maps=[parse_map(m) for m in args.map], torch_layout=args.torch_layout, force=args.force,
        progress=not args.quiet, use_ema=args.use_ema)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0


def _hf(args) -> int:
    from ..errors import UserError
    from ..migrate.hf import convert_to_hf, parse_size

    result = convert_to_hf(args.checkpoint, args.out, config=args.config, rules=args.rules,
                           drop=args.drop, head=args.head, dry_run=args.dry_run,
                           max_shard_size=parse_size(args.max_shard_size), force=args.force,
                           progress=not args.quiet)
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    problems = getattr(result, "problems", [])
    if problems:  # a dry run lists them above; the first is the error
        raise UserError(problems[0])
    return 0
