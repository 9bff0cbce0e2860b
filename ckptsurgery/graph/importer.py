"""Importing a ``MetaGraphDef`` into a live ``tf.Graph`` that the caller owns.

The one place where a serialised graph becomes a live one: devices are cleared, stale collection
entries dropped, and an import that this TensorFlow cannot do is a :class:`GraphImportError`
naming the unregistered ops and the version that wrote the graph.
"""

from __future__ import annotations

from ..errors import GraphImportError, first_line
from ..formats.protos import to_tensorflow
from ..graphdef.collections import drop_stale_collection_entries
from ..graphdef.metagraph import tf_version, unregistered_ops

__all__ = ["import_meta_graph"]


def import_meta_graph(meta, graph):
    """Import ``meta`` into ``graph`` (the caller's, never the default one by accident).

    Devices are cleared and stale collection entries dropped first; a graph whose saver is gone
    keeps a ``SaverDef`` so that the import builds no saver of its own. ``meta`` is not modified.

    Returns:
        ``graph``.

    Raises:
        GraphImportError: the graph uses ops this TensorFlow does not register (named, with the
            version that wrote the graph), or TensorFlow rejects it for another reason.
    """
    import tensorflow as tf

    missing = unregistered_ops(meta)
    if missing:
        raise GraphImportError(
            f"the graph uses op(s) this TensorFlow {tf.__version__} does not register: "
            f"{', '.join(missing)} (graph written by TensorFlow {tf_version(meta) or 'unknown'}); "
            "commands that do not import the graph (inspect, diff, strip, convert) still work"
        )
    clean = type(meta)()
    clean.CopyFrom(meta)
    drop_stale_collection_entries(clean)
    if not clean.HasField("saver_def"):
        clean.saver_def.filename_tensor_name = "save/Const:0"
        clean.saver_def.save_tensor_name = "save/control_dependency:0"
        clean.saver_def.restore_op_name = "save/restore_all"
    with graph.as_default():
        try:
            tf.compat.v1.train.import_meta_graph(to_tensorflow(clean), clear_devices=True)
        except (ValueError, KeyError, TypeError, tf.errors.OpError) as e:
            raise GraphImportError(
                f"TensorFlow {tf.__version__} cannot import the graph (written by TensorFlow "
                f"{tf_version(meta) or 'unknown'}): {first_line(e)}"
            ) from e
    return graph
