"""``ckptsurgery graft``: reuse a TF1 model's lower layers under new dense layers, train, export."""

from __future__ import annotations

import argparse
import json
import sys

from . import CKPT_HELP, add_data_options, add_output_options

HELP = "put new dense layers on a tensor of a TF1 model, optionally freeze and train, export"

EXAMPLES = """\
examples:
  # keep hidden1..hidden3, replace the rest by a new 20-unit hidden4 and new logits
  ckptsurgery graft base/my_model.ckpt --at hiddens3 \\
      --dense hidden4:20:relu --dense logits:10 --out out/my_new_model.ckpt

  # the same, trained on MNIST with hidden1-2 frozen by a stop_gradient cut
  ckptsurgery graft base/my_model.ckpt --at hiddens3 --dense hidden4:20:relu \\
      --dense logits:10 --cut-after hiddens2 --data mnist.npz --epochs 5 --out out/m.ckpt

  # fine-tune a model frozen with --cut-after: no new layers, cut removed, low learning rate
  ckptsurgery graft out/m.ckpt --at logits --uncut --data mnist.npz --lr 0.0001 --out out/ft.ckpt

  # print the plan (reused, frozen, new, pruned variables) and write nothing
  ckptsurgery graft base/my_model.ckpt --at hiddens3 --dense logits:10 --dry-run --out x

  # a CNN: flatten its last pooling output, freeze conv and batch norm, train on digits 5-9
  ckptsurgery graft cnn/model.ckpt --at pool2/MaxPool --pool flatten --cut-after pool2/MaxPool \
      --dense fc:64:relu --dense logits:5 --data mnist.npz --classes 5-9 --per-class 100 \
      --out out/cnn59.ckpt

  # an RNN whose initial state is a placeholder
  ckptsurgery graft rnn/model.ckpt --at rnn/while/Exit_3 --inputs x --feed init_state=zeros \
      --dense logits:10 --data mnist.npz --out out/rnn.ckpt

Placeholders the graph needs besides inputs and labels get --feed values; a bool training
switch (is_training, phase_train, ...) defaults to false, a scalar keep_prob to 1.0. In the
output they become placeholder_with_default of those values, so serving needs no feeds.
Batch-norm layers run in inference mode (moving statistics kept) unless --bn-train.

REF is a collection key holding one tensor (hiddens3), a tensor name (dnn/hidden3/Relu:0)
or an op name (dnn/hidden3/Relu). REGEX scopes match like get_collection(key, scope=REGEX).
"""


def add_parser(sub) -> argparse.ArgumentParser:
    from ..graft.build import DROPOUT_MODES
    from ..graph.layers import POOLS
    from ..migrate.export import TARGETS
    from ..train.optimizers import OPTIMIZERS

    p = sub.add_parser("graft", help=HELP, description=HELP + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--at", required=True, metavar="REF", help="tensor to put the new layers on")
    p.add_argument("--dense", action="append", default=[], metavar="NAME:UNITS[:ACTIVATION]",
                   help="a new dense layer, bottom first; repeat for more (activation default "
                        "linear; relu, elu, selu, tanh, sigmoid, softmax, leaky_relu); none: "
                        "reuse the model as it is up to --at (to fine-tune it)")
    p.add_argument("--out", required=True, metavar="PREFIX", help="output checkpoint prefix")
    c = p.add_argument_group("a graph from code (checkpoints without a .meta)")
    c.add_argument("--model", metavar="FILE.py:FUNC",
                   help="build the graph by calling this TF1 model function (or "
                        "package.module:FUNC) in a fresh graph instead of reading the .meta: it "
                        "makes its placeholders and variables and returns its output tensor "
                        "(collection 'outputs') or a dict of named endpoints (a collection "
                        "each); the output gets a full .meta")
    c.add_argument("--map", action="append", default=[], metavar="CKPT_SCOPE=GRAPH_SCOPE",
                   help="restore graph variables GRAPH_SCOPE... from the checkpoint's "
                        "CKPT_SCOPE... (like init_from_checkpoint's assignment map); repeatable")
    g = p.add_argument_group("freezing and restoring")
    g.add_argument("--strategy", metavar="NAME",
                   help="what trains, by the data-size x similarity chart: feature-extract "
                        "(all below --at frozen), fine-tune-top[:N] (the top N reused layers "
                        "train, default 1), fine-tune-all (all train, reused ones at --lr-reused)")
    g.add_argument("--train-scope", metavar="REGEX",
                   help="train only the variables in these scopes (e.g. 'hidden[34]|logits')")
    g.add_argument("--cut-after", metavar="REF",
                   help="insert stop_gradient after this tensor: everything below it is frozen")
    g.add_argument("--uncut", action="store_true",
                   help="remove the graph's stop_gradient ops first (fine-tune a model frozen "
                        "with --cut-after)")
    g.add_argument("--restore-scope", metavar="REGEX",
                   help="restore only these variables from CKPT (default: all that are kept)")
    g.add_argument("--use-ema", action="store_true",
                   help="restore each weight from its ExponentialMovingAverage shadow")
    g.add_argument("--lenient", action="store_true",
                   help="restore what matches and report the rest, instead of failing")
    g.add_argument("--keep-dead", action="store_true",
                   help="keep the old layers the graft replaces, instead of pruning them")
    g.add_argument("--inputs", metavar="REF", help="the input placeholder (default: collection "
                   "'inputs', else the only float placeholder)")
    g.add_argument("--labels", metavar="REF", help="the label placeholder (default: collection "
                   "'labels', else the only integer placeholder)")
    g.add_argument("--output-collection", default="logits", metavar="KEY",
                   help="collection for the new top layer's output (default: logits)")
    m = p.add_argument_group("feature maps, switches and batch norm")
    m.add_argument("--pool", choices=POOLS,
                   help="turn a rank-3/4 --at (a feature map) into rows before the new layers: "
                        "flatten (every value), avg or max (global pooling, one per channel)")
    m.add_argument("--feed", action="append", default=[], metavar="NAME=VALUE",
                   help="value of a placeholder the graph needs besides inputs and labels "
                        "(true/false, a number, or zeros shaped like it with the batch size); "
                        "repeat for more")
    m.add_argument("--keep-placeholders", action="store_true",
                   help="keep fed placeholders as placeholders in the output (default: they "
                        "become placeholder_with_default of their value)")
    m.add_argument("--dropout", choices=DROPOUT_MODES, default="train",
                   help="the reused graph's dropout: train (default) keeps it in training steps "
                        "above the cut, off when evaluating, in the export and below the cut; "
                        "off bypasses it everywhere; keep leaves it as the graph has it (on in "
                        "the export too)")
    m.add_argument("--bn-train", action="store_true",
                   help="batch-norm layers that train use batch statistics and update their "
                        "moving averages (default: inference mode, statistics kept)")
    t = p.add_argument_group("training (only with --data; without it the graft is exported "
                             "untrained)")
    add_data_options(t)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=50)
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    t.add_argument("--lr", type=float, default=0.001, help="learning rate (default 0.001)")
    t.add_argument("--lr-reused", type=float, metavar="LR",
                   help="with --strategy fine-tune-all: the reused layers' learning rate "
                        "(default a tenth of --lr)")
    t.add_argument("--augment", metavar="LIST",
                   help="shift, flip, rotate (comma-separated): small random shifts, horizontal "
                        "flips, small rotations of each training batch (image inputs; by --seed)")
    d = p.add_argument_group("distillation (with --data)")
    d.add_argument("--distill-from", metavar="TEACHER",
                   help="learn from this trained checkpoint's soft targets too (it may be CKPT)")
    d.add_argument("--teacher-output", metavar="REF",
                   help="the teacher's logits (default: its inference output)")
    d.add_argument("--temperature", type=float, default=4.0, metavar="T",
                   help="softmax temperature of the soft targets (default 4)")
    d.add_argument("--alpha", type=float, default=0.7, metavar="A",
                   help="weight of the soft targets against the labels, 0 to 1 (default 0.7)")
    t.add_argument("--cache-frozen", action="store_true",
                   help="compute the output of the frozen part (--cut-after) once, train on it")
    o = p.add_argument_group("output")
    add_output_options(o)
    o.add_argument("--allow-unsafe-ops", action="store_true",
                   help="run the graph even if it has ops that touch files, the network or run "
                        "code (see 'ckptsurgery audit'); only for graphs you trust")
    o.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    o.add_argument("--export", choices=TARGETS,
                   help="also write the grafted model as a SavedModel (PREFIX_saved_model/), a "
                        "TFLite (PREFIX.tflite) or an ONNX model (PREFIX.onnx), checked against "
                        "the TF1 session as 'ckptsurgery export' does")
    o.add_argument("--graph", metavar="FILE", help="draw the graft: layers reused, frozen, "
                   "trained, new and pruned, shapes on the edges (.dot; .svg or .png with "
                   "Graphviz); written with --dry-run too")
    o.add_argument("--logdir", metavar="DIR",
                   help="write TensorBoard events there: the grafted graph, and train/loss and "
                        "valid/accuracy per epoch (tensorboard --logdir DIR)")
    return p


def run(args) -> int:
    from ..errors import UserError
    from ..graft.build import GraftSpec
    from ..graft.distill import Distillation
    from ..graft.job import GraftJob, run_graft
    from ..graph.layers import parse_dense
    from ..graph.modelcode import parse_name_map
    from ..graphdef.feeds import parse_feed
    from ..train.augment import parse_augment
    from ..train.data import parse_classes
    from ..train.fit import TrainConfig

    if args.per_class is not None and args.per_class < 1:
        raise UserError(f"--per-class {args.per_class}: give a whole number of at least 1")

    job = GraftJob(
        checkpoint=args.checkpoint,
        spec=GraftSpec(
            at=args.at, layers=[parse_dense(d) for d in args.dense], cut_after=args.cut_after,
            uncut=args.uncut,
            train_scope=args.train_scope, restore_scope=args.restore_scope,
            keep_dead=args.keep_dead, inputs=args.inputs, labels=args.labels,
            output_collection=args.output_collection, seed=args.seed, pool=args.pool,
            feeds=dict(parse_feed(f) for f in args.feed),
            keep_placeholders=args.keep_placeholders, bn_train=args.bn_train,
            strategy=args.strategy, lr_reused=args.lr_reused, dropout=args.dropout,
        ),
        out=args.out, data=args.data,
        train=TrainConfig(optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed,
                          cache_frozen=args.cache_frozen, progress=not args.quiet,
                          augment=parse_augment(args.augment) if args.augment else ()),
        valid_size=args.valid_size, strict=not args.lenient, force=args.force,
        classes=parse_classes(args.classes) if args.classes else None, per_class=args.per_class,
        logdir=args.logdir, graph=args.graph, use_ema=args.use_ema,
        distill=Distillation(args.distill_from, args.teacher_output, args.temperature,
                             args.alpha) if args.distill_from else None,
        dry_run=args.dry_run, allow_unsafe_ops=args.allow_unsafe_ops, export=args.export,
        model=args.model, name_map=parse_name_map(args.map),
        detail="quiet" if args.quiet else "full",
    )
    log = sys.stderr if args.json else sys.stdout
    result = run_graft(job, log=lambda line: print(line, file=log, flush=True))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0
