"""The graft workflow end to end: open, plan, restore, train, export, with a result summary.

This is what ``ckptsurgery graft`` runs and what each step of ``ckptsurgery demo`` runs, so the
CLI stays a thin layer and the demo is made of the same calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..graph.export import ExportResult
from ..graph.restore import RestoreReport
from ..migrate.export import ModelExport
from ..train.fit import History, TrainConfig
from .build import GraftSpec, Plan
from .distill import Distillation

__all__ = ["DETAILS", "GraftJob", "GraftResult", "run_graft"]

#: How much :func:`run_graft` logs. ``full``: the plan's table, the data, the restore report,
#: each epoch; ``brief`` (the demo's steps): the plan's totals, the epochs on one line;
#: ``quiet`` (``--quiet``): only the epochs and the result.
DETAILS = ("full", "brief", "quiet")


@dataclass
class GraftJob:
    """Everything ``run_graft`` needs: source, graft spec, output, data and training settings."""

    checkpoint: str
    spec: GraftSpec
    out: str | None  # None: train and report, write no checkpoint (comparisons of settings)
    data: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    valid_size: int | None = None  # None: 5,000 rows, or a fifth of a set under 10,000 rows
    classes: list[int] | None = None  # keep only these labels, remapped to 0..k-1
    per_class: int | None = None  # keep this many training images per class
    logdir: str | None = None  # TensorBoard events: the grafted graph, loss and accuracy
    graph: str | None = None  # a picture of the graft (.dot, .svg, .png), dry run or not
    use_ema: bool = False  # restore each weight from its ExponentialMovingAverage shadow
    distill: Distillation | None = None  # soft targets from a teacher model
    labels_only_accuracy: float | None = None  # the same student on the labels alone, if measured
    strict: bool = True
    force: bool = False
    dry_run: bool = False
    allow_unsafe_ops: bool = False  # run a graph that audit flags (files, network, code)
    model: str | None = None  # FILE.py:FUNC or module:FUNC: the graph from code, not the .meta
    name_map: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint, graft) scopes
    detail: str = "full"  # what is logged: see DETAILS
    export: str | None = None  # also write the output as a saved-model, tflite or onnx model


@dataclass
class GraftResult:
    """What :func:`run_graft` did: the plan, and unless it was a dry run the restore report,
    the training history (when there was data) and the written checkpoint."""

    plan: Plan
    restore: RestoreReport | None = None
    training: History | None = None
    output: ExportResult | None = None
    data: dict | None = None
    teacher: dict | None = None
    model: ModelExport | None = None  # --export

    def as_dict(self) -> dict:
        """The result for ``--json``: ``plan``, and ``restore``, ``training``, ``output`` when
        they happened."""
        out: dict = {"plan": self.plan.as_dict()}
        if self.restore is not None:
            out["restore"] = self.restore.as_dict()
        if self.data is not None:
            out["data"] = self.data
        if self.teacher is not None:
            out["teacher"] = self.teacher
        if self.training is not None:
            out["training"] = self.training.as_dict()
        if self.output is not None:
            out["output"] = {"prefix": self.output.prefix, "files": self.output.files,
                             "n_variables": self.output.n_variables}
        if self.model is not None:
            out["export"] = self.model.as_dict()
        return out


def run_graft(job: GraftJob, log: Callable[[str], None] = print) -> GraftResult:
    """Run a graft job, logging the plan, restore report and progress through ``log``.

    Raises:
        UserError: any bad input, before anything is written (the output is checked first).
    """
    import tensorflow as tf

    from ..errors import RestoreError, UserError
    from ..formats.checkpoint import open_checkpoint
    from ..formats.output import check_output_prefix
    from ..graph.export import export_checkpoint
    from ..graph.restore import restore
    from ..graphdef.picture import write_picture
    from ..migrate.diff import diff_against_meta
    from ..train.events import EventLog
    from ..train.fit import add_training_ops, fit
    from .build import build, graft_picture
    source = open_checkpoint(job.checkpoint)
    if job.model:
        from ..graph.modelcode import meta_graph_from_code

        source = source.with_meta_graph(meta_graph_from_code(job.model))
        log(f"graph: built by {job.model} (the checkpoint's .meta, if any, is not used)")
    if not job.dry_run:
        from ..safety.audit import check_graph_safe

        # The session below runs imported ops (initialisers, the model): refuse unsafe graphs.
        check_graph_safe(source, allow_unsafe=job.allow_unsafe_ops)
        if job.out is not None:
            check_output_prefix(job.out, inputs=source.files.paths, force=job.force)
            if job.export:
                from ..formats.output import check_output_path
                from ..migrate.export import export_path

                check_output_path(export_path(job.out, job.export), force=job.force)
        elif job.export:
            raise UserError("--export writes beside the output checkpoint; give --out")
    training = bool(job.data) and not job.dry_run
    grafted = build(source, job.spec, require_labels=training)
    if job.detail not in DETAILS:
        raise ValueError(f"detail {job.detail!r}: one of {DETAILS}")
    full = job.detail == "full"
    if full:
        log(str(grafted.plan))
    elif job.detail == "brief":
        log(grafted.plan.totals())
    result = GraftResult(grafted.plan)
    if job.graph:
        written = write_picture(graft_picture(grafted), job.graph, force=job.force)
        log(f"picture of the graft: {written}")
    if job.dry_run:
        log("dry run: nothing written")
        return result
    data = ops = None
    if training:
        data, result.data = _load(job, grafted.inputs, grafted.labels)
        if full:
            log(f"data: {result.data['train_rows']:,} training, {result.data['valid_rows']:,} "
                f"validation rows from {result.data['source']}"
                + (f"; classes {result.data['label_map']}" if result.data["label_map"] else "")
                + (f"; arrays fed: {result.data['arrays']}" if "arrays" in result.data else ""))
            log("split:   " + _split_line(data))
        if data.mismatch():
            _warn(f"the validation split does not represent training: {data.mismatch()}; "
                  "change --valid-size or --seed")
        ops = add_training_ops(grafted.inputs, grafted.labels, grafted.output,
                               grafted.train_vars, job.train, feed_point=grafted.feed_point,
                               feeds=grafted.feeds, train_feeds=grafted.train_feeds,
                               update_ops=grafted.update_ops,
                               slower=(grafted.slower, job.spec.lr_reused or job.train.lr / 10)
                               if grafted.slower else None,
                               distill=(job.distill.temperature, job.distill.alpha)
                               if job.distill else None)
        soft = None
        if job.distill:
            if isinstance(grafted.inputs, tuple):
                raise UserError("--distill-from takes a teacher with one input; this model has "
                                f"several ({result.data['arrays']})")
            soft, result.teacher = _teacher(job, data, grafted.output.shape[-1], log)
    with tf.compat.v1.Session(graph=grafted.graph) as sess:
        sess.run(tf.compat.v1.variables_initializer(
            grafted.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)))
        try:
            report = restore(sess, grafted.restore_vars, source, strict=job.strict,
                             sources=_sources(job, source, grafted.restore_vars))
        except RestoreError:
            # Every mismatch between the graph's saver and the data, not only the first.
            log("\n".join(diff_against_meta(source, source.meta_graph, source.files.meta or "")
                          .lines()))
            raise
        if full:
            log(str(report))
        result.restore = report
        events = EventLog(job.logdir, grafted.graph) if job.logdir else None
        if ops is not None:
            def on_epoch(e):
                if job.detail != "brief":
                    log(e.line(job.train.epochs))
                if events:
                    events.epoch(e)

            history = fit(sess, ops, data, job.train, on_epoch=on_epoch, teacher_logits=soft,
                          log=log)
            log(history.brief() if job.detail == "brief" else history.result_line())
            if events and history.test_accuracy is not None:
                events.scalars(job.train.epochs, test_accuracy=history.test_accuracy)
            result.training = history
            if history.epochs and all(e.valid_accuracy == 0 for e in history.epochs):
                _warn("validation accuracy was 0 in every epoch: "
                      + (data.mismatch() or "the new top layer's classes may not be the "
                         "labels' (check --dense NAME:UNITS against the labels, --classes), "
                         "or the learning rate is far off"))
        if events:
            events.close()
            log(f"TensorBoard events in {job.logdir} (tensorboard --logdir {job.logdir})")
        if job.out is None:
            return result
        exported = export_checkpoint(sess, grafted.graph, job.out,
                                     inputs=source.files.paths, force=job.force)
    log(f"wrote {exported.prefix} ({exported.n_variables} variables)")
    result.output = exported
    if job.export:
        from ..migrate.export import export_model, export_path

        plan = grafted.plan
        result.model = export_model(
            exported.prefix, job.export, export_path(exported.prefix, job.export),
            inputs=[plan.inputs], outputs=[f"{job.spec.output_collection}={plan.output}"],
            feeds=job.spec.feeds if job.spec.keep_placeholders else None, force=job.force,
            allow_unsafe_ops=job.allow_unsafe_ops)
        for line in result.model.lines():
            log(f"export: {line}")
    return result


def _load(job: GraftJob, inputs, labels):
    """The job's data, shaped to the ``inputs`` placeholder, classes selected and split; with a
    JSON-ready description of it (source, rows, class names, label map)."""
    from ..train.data import load_dataset, select_classes, split

    if isinstance(inputs, tuple):  # several inputs: an .npz array named after each
        dataset = load_dataset(job.data, inputs={
            t.op.name: t.shape.as_list() if t.shape.rank is not None else None for t in inputs},
            labels=labels.op.name if labels is not None else None)
    else:
        dataset = load_dataset(job.data, input_shape=inputs.shape.as_list()
                               if inputs.shape.rank is not None else None,
                               input_name=inputs.name)
    if job.classes:
        dataset = select_classes(dataset, job.classes)
    rows = len(dataset.y_train)
    valid = job.valid_size if job.valid_size is not None else (
        5000 if rows >= 10_000 else max(1, rows // 5))
    data = split(dataset, valid, seed=job.train.seed, per_class=job.per_class)
    return data, {
        "source": dataset.source, "train_rows": len(data.y_train),
        "valid_rows": len(data.y_valid),
        "test_rows": None if data.y_test is None else len(data.y_test),
        "class_names": dataset.class_names,
        "per_class": {str(k): {"train": t, "valid": v} for k, (t, v) in data.per_class().items()},
        "label_map": {str(k): v for k, v in dataset.label_map.items()}
        if dataset.label_map else None,
        **({"arrays": ", ".join(f"{n} -> {n}:0" for n in dataset.x_train.names)}
           if isinstance(inputs, tuple) else {}),
    }


def _sources(job: GraftJob, source, variables) -> dict[str, str] | None:
    """``{graph key: checkpoint key to read}``: ``--map`` renames, then ``--use-ema`` shadows."""
    from ..graph.modelcode import mapped_sources
    from ..graph.restore import checkpoint_key

    sources = mapped_sources([checkpoint_key(v) for v in variables], job.name_map)
    if job.use_ema:
        ema = _ema_sources(source)
        sources = {k: ema.get(sources.get(k, k), sources.get(k, k))
                   for k in {*sources, *ema}}
    return sources or None


def _teacher(job: GraftJob, data, width, log) -> tuple:
    """The teacher's logits for the training rows, and what it is: its tensor, and its
    accuracy on the validation rows against chance (the most common class's share) and the
    labels-only baseline when that was measured; a teacher no better is a warning."""
    import numpy as np

    from ..errors import UserError
    from .distill import teacher_logits

    teacher = teacher_logits(job.distill, data.x_train, data.x_valid)
    soft, valid = teacher.logits
    if soft.shape[1] != width:
        raise UserError(f"--distill-from: the teacher gives {soft.shape[1]} logits, the "
                        f"student {width}; distil from a model with the same classes")
    accuracy = float(np.mean(np.argmax(valid, axis=1) == data.y_valid))
    chance = float(np.bincount(data.y_valid).max() / len(data.y_valid))
    log(f"distillation: soft targets of {job.distill.teacher} ({teacher.output}) at temperature "
        f"{job.distill.temperature:g}, alpha {job.distill.alpha:g}; the teacher's accuracy on "
        f"the {len(data.y_valid):,} validation rows: {accuracy:.4f} (chance {chance:.4f})")
    if accuracy <= chance:
        _warn(f"--distill-from: the teacher ({teacher.output}) is no better than chance on the "
              f"validation rows ({accuracy:.4f}, chance {chance:.4f}): its soft targets teach "
              "nothing; check --teacher-output and that it learnt these classes in this order")
    elif job.labels_only_accuracy is not None and accuracy < job.labels_only_accuracy:
        _warn(f"--distill-from: the teacher ({accuracy:.4f} on the validation rows) is worse "
              f"than the student on the labels alone ({job.labels_only_accuracy:.4f})")
    return soft, {"checkpoint": job.distill.teacher, "output": teacher.output,
                  "valid_accuracy": accuracy, "chance": chance,
                  "labels_only_accuracy": job.labels_only_accuracy}


def _split_line(data) -> str:
    """The split per class, as the log shows it: ``train/valid rows of each class``."""
    return "train/valid rows per class: " + ", ".join(
        f"{k}: {t}/{v}" for k, (t, v) in data.per_class().items())


def _warn(message: str) -> None:
    import warnings

    from ..errors import CkptSurgeryWarning

    warnings.warn(message, CkptSurgeryWarning, stacklevel=3)


def _ema_sources(source) -> dict[str, str]:
    """``{weight key: its moving average's key}`` of a checkpoint (``--use-ema``)."""
    from ..errors import UserError
    from ..graphdef.roles import classify

    roles = classify(list(source.variables), source.meta_graph)
    sources = {r.primary: k for k, r in roles.items() if r.kind == "ema" and r.primary}
    if not sources:
        raise UserError(f"--use-ema: '{source.prefix}' has no ExponentialMovingAverage shadows")
    return sources
