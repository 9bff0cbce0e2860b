"""Exporting a graph and its session's variables as a new TF1 checkpoint.

The output is a standard ``.meta`` + ``.index`` + ``.data-00000-of-00001`` + ``checkpoint`` set
that ``tf.compat.v1.train.import_meta_graph`` and ``Saver.restore`` load, and that tf2onnx
converts. It is written atomically through :func:`~ckptsurgery.safety.staging.staged_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..formats import storage
from ..formats.output import check_output_prefix, write_error
from ..safety.staging import staged_checkpoint

__all__ = ["ExportResult", "export_checkpoint"]


@dataclass
class ExportResult:
    """Where the checkpoint went, its files, and how many variables it holds."""

    prefix: str
    files: list[str]
    n_variables: int


def export_checkpoint(session, graph, prefix: str, *, inputs: Iterable[str] = (),
                      force: bool = False,
                      verify: Callable[[str], None] | None = None) -> ExportResult:
    """Save every global variable of ``graph`` from ``session`` and the graph as ``prefix``.

    Args:
        session: holds the values to save.
        graph: the graph to export (its collections go into the ``.meta``).
        prefix: output prefix; its folder is created.
        inputs: input files the output must not overwrite.
        force: replace an existing output.
        verify: an extra check run on the temporary output before it is moved into place,
            after the check every staged checkpoint gets
            (:func:`~ckptsurgery.safety.verify.check_written`).

    Raises:
        OutputError: the output exists (no ``force``), is an input, or cannot be written (no
            space, permission denied...).
        InternalError: what was written does not verify (nothing is moved into place).
    """
    import tensorflow as tf

    prefix = check_output_prefix(prefix, inputs=inputs, force=force)
    with graph.as_default():
        variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        saver = tf.compat.v1.train.Saver(var_list=variables, save_relative_paths=True,
                                         write_version=tf.compat.v1.train.SaverDef.V2)
    with staged_checkpoint(prefix, verify=verify) as staged, \
            storage.local_stand_in(staged) as tmp:
        try:
            saver.save(session, tmp, write_meta_graph=True, write_state=False,
                       strip_default_attrs=True)
        except tf.errors.OpError as e:
            error = write_error(prefix, e)
            if error is None:
                raise
            raise error from e
    folder, base = storage.dirname(prefix), storage.basename(prefix)
    files = sorted(storage.join(folder, n) for n in storage.listdir(folder)
                   if n.startswith(base + ".") and not n.startswith("." + base))
    return ExportResult(prefix, files, len(variables))
