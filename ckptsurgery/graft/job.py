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

__all__ = ["GraftJob", "GraftResult", "run_graft"]


@dataclass
class GraftJob:
    """Everything ``run_graft`` needs: source, graft spec, output, data and training settings."""

    checkpoint: str
    spec: GraftSpec
    out: str | None  # None: train and report, write no checkpoint (comparisons of settings)
    data: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    valid_size: int = 5000
    classes: list[int] | None = None  # keep only these labels, remapped to 0..k-1
    per_class: int | None = None  # keep this many training images per class
    logdir: str | None = None  # TensorBoard events: the grafted graph, loss and accuracy
    graph: str | None = None  # a picture of the graft (.dot, .svg, .png), dry run or not
    use_ema: bool = False  # restore each weight from its ExponentialMovingAverage shadow
    distill: Distillation | None = None  # soft targets from a teacher model
    strict: bool = True
    force: bool = False
    dry_run: bool = False
    allow_unsafe_ops: bool = False  # run a graph that audit flags (files, network, code)
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
    model: ModelExport | None = None  # --export

    def as_dict(self) -> dict:
        """The result for ``--json``: ``plan``, and ``restore``, ``training``, ``output`` when
        they happened."""
        out: dict = {"plan": self.plan.as_dict()}
        if self.restore is not None:
            out["restore"] = self.restore.as_dict()
        if self.data is not None:
            out["data"] = self.data
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
    from .distill import teacher_logits

    source = open_checkpoint(job.checkpoint)
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
    log(str(grafted.plan))
    result = GraftResult(grafted.plan)
    if job.graph:
        written = write_picture(graft_picture(grafted), job.graph, force=job.force)
        log(f"picture of the graft: {written}")
    if job.dry_run:
        log("dry run: nothing written")
        return result
    data = ops = None
    if training:
        data, result.data = _load(job, grafted.inputs)
        log(f"data: {result.data['train_rows']:,} training, {result.data['valid_rows']:,} "
            f"validation rows from {result.data['source']}"
            + (f"; classes {result.data['label_map']}" if result.data["label_map"] else ""))
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
            soft = teacher_logits(job.distill, data.x_train)
            width = grafted.output.shape[-1]
            if soft.shape[1] != width:
                raise UserError(f"--distill-from: the teacher gives {soft.shape[1]} logits, the "
                                f"student {width}; distil from a model with the same classes")
            log(f"distillation: soft targets of {job.distill.teacher} at temperature "
                f"{job.distill.temperature:g}, alpha {job.distill.alpha:g}")
    with tf.compat.v1.Session(graph=grafted.graph) as sess:
        sess.run(tf.compat.v1.variables_initializer(
            grafted.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)))
        try:
            report = restore(sess, grafted.restore_vars, source, strict=job.strict,
                             sources=_ema_sources(source) if job.use_ema else None)
        except RestoreError:
            # Every mismatch between the graph's saver and the data, not only the first.
            log("\n".join(diff_against_meta(source, source.meta_graph, source.files.meta or "")
                          .lines()))
            raise
        log(str(report))
        result.restore = report
        events = EventLog(job.logdir, grafted.graph) if job.logdir else None
        if ops is not None:
            def on_epoch(e):
                log(f"epoch {e.epoch}/{job.train.epochs}: valid accuracy {e.valid_accuracy:.4f}, "
                    f"train loss {e.train_loss:.4f} ({e.seconds:.1f}s)")
                if events:
                    events.epoch(e)

            history = fit(sess, ops, data, job.train, on_epoch=on_epoch, teacher_logits=soft,
                          log=log)
            log(f"best epoch {history.best_epoch}: valid accuracy "
                f"{history.best_valid_accuracy:.4f}"
                + (f", test accuracy {history.test_accuracy:.4f}"
                   if history.test_accuracy is not None else ""))
            if events and history.test_accuracy is not None:
                events.scalars(job.train.epochs, test_accuracy=history.test_accuracy)
            result.training = history
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


def _load(job: GraftJob, inputs):
    """The job's data, shaped to the ``inputs`` placeholder, classes selected and split; with a
    JSON-ready description of it (source, rows, class names, label map)."""
    from ..train.data import load_dataset, select_classes, split

    dataset = load_dataset(job.data, input_shape=inputs.shape.as_list()
                           if inputs.shape.rank is not None else None, input_name=inputs.name)
    if job.classes:
        dataset = select_classes(dataset, job.classes)
    data = split(dataset, job.valid_size, shuffle=dataset.ordered_by_class, seed=job.train.seed,
                 per_class=job.per_class)
    return data, {
        "source": dataset.source, "train_rows": len(data.y_train),
        "valid_rows": len(data.y_valid),
        "test_rows": None if data.y_test is None else len(data.y_test),
        "class_names": dataset.class_names,
        "label_map": {str(k): v for k, v in dataset.label_map.items()}
        if dataset.label_map else None,
    }


def _ema_sources(source) -> dict[str, str]:
    """``{weight key: its moving average's key}`` of a checkpoint (``--use-ema``)."""
    from ..errors import UserError
    from ..graphdef.roles import classify

    roles = classify(list(source.variables), source.meta_graph)
    sources = {r.primary: k for k, r in roles.items() if r.kind == "ema" and r.primary}
    if not sources:
        raise UserError(f"--use-ema: '{source.prefix}' has no ExponentialMovingAverage shadows")
    return sources
