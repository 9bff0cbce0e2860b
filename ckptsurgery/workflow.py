"""The graft workflow end to end: open, plan, restore, train, export, with a result summary.

This is what ``ckptsurgery graft`` runs and what each step of ``ckptsurgery demo`` runs, so the
CLI stays a thin layer and the demo is made of the same calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .graft import GraftSpec
from .train import TrainConfig

__all__ = ["GraftJob", "run_graft"]


@dataclass
class GraftJob:
    """Everything ``run_graft`` needs: source, graft spec, output, data and training settings."""

    checkpoint: str
    spec: GraftSpec
    out: str
    data: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    valid_size: int = 5000
    strict: bool = True
    force: bool = False
    dry_run: bool = False
    allow_unsafe_ops: bool = False  # run a graph that audit flags (files, network, code)


def run_graft(job: GraftJob, log: Callable[[str], None] = print) -> dict:
    """Run a graft job and return a JSON-ready summary (plan, restore report, history, output).

    Raises:
        UserError: any bad input, before anything is written (the output is checked first).
    """
    import tensorflow as tf

    from .checkpoint import open_checkpoint
    from .data import load_dataset, split
    from .export import export_checkpoint
    from .graft import build
    from .output import check_output_prefix
    from .restore import restore
    from .train import add_training_ops, fit

    source = open_checkpoint(job.checkpoint)
    if not job.dry_run:
        from .audit import check_graph_safe

        # The session below runs imported ops (initialisers, the model): refuse unsafe graphs.
        check_graph_safe(source, allow_unsafe=job.allow_unsafe_ops)
        check_output_prefix(job.out, inputs=source.files.paths, force=job.force)
    data = split(load_dataset(job.data), job.valid_size) if job.data and not job.dry_run else None
    grafted = build(source, job.spec, require_labels=data is not None)
    log(str(grafted.plan))
    result = {"plan": grafted.plan.as_dict()}
    if job.dry_run:
        log("dry run: nothing written")
        return result
    ops = None
    if data is not None:
        ops = add_training_ops(grafted.inputs, grafted.labels, grafted.output,
                               grafted.train_vars, job.train, feed_point=grafted.feed_point)
    with tf.compat.v1.Session(graph=grafted.graph) as sess:
        sess.run(tf.compat.v1.variables_initializer(
            grafted.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)))
        report = restore(sess, grafted.restore_vars, source, strict=job.strict)
        log(str(report))
        result["restore"] = report.as_dict()
        if ops is not None:
            history = fit(sess, ops, data, job.train, on_epoch=lambda e: log(
                f"epoch {e.epoch}/{job.train.epochs}: valid accuracy {e.valid_accuracy:.4f} "
                f"({e.seconds:.1f}s)"))
            log(f"best epoch {history.best_epoch}: valid accuracy "
                f"{history.best_valid_accuracy:.4f}"
                + (f", test accuracy {history.test_accuracy:.4f}"
                   if history.test_accuracy is not None else ""))
            result["training"] = history.as_dict()
        exported = export_checkpoint(sess, grafted.graph, job.out,
                                     inputs=source.files.paths, force=job.force)
    log(f"wrote {exported.prefix} ({exported.n_variables} variables)")
    result["output"] = {"prefix": exported.prefix, "files": exported.files,
                        "n_variables": exported.n_variables}
    return result
