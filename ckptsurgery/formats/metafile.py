"""The ``.meta`` file: parsing and writing a ``MetaGraphDef``, and what its collections hold.

This is the file format only (protobuf bytes in, protobuf message out); what the graph *means*
lives in :mod:`ckptsurgery.graphdef`. :func:`collection_proto` is the one table of which
collections hold serialised protos of which kind; everything that decodes, cleans, renames or
describes a collection asks it.
"""

from __future__ import annotations

from ..errors import CheckpointCorruptError, CheckpointNotFoundError
from . import storage

__all__ = ["VARIABLE_COLLECTIONS", "CONTEXT_COLLECTIONS", "collection_proto", "read_meta_graph",
           "write_meta_graph", "write_meta_bytes"]

#: Collections whose ``bytes_list`` holds serialised ``VariableDef`` protos.
VARIABLE_COLLECTIONS = (
    "variables",
    "trainable_variables",
    "local_variables",
    "model_variables",
    "moving_average_variables",
    "global_step",
    "metric_variables",
)

#: Collections whose ``bytes_list`` holds control-flow contexts (``CondContextDef`` /
#: ``WhileContextDef``).
CONTEXT_COLLECTIONS = ("cond_context", "while_context")


def collection_proto(key: str):
    """The protobuf class that each entry of ``bytes_list`` collection ``key`` is, or None when
    the collection holds bytes of a kind TensorFlow does not define (kept as they are)."""
    from .protos import message_class

    if key in VARIABLE_COLLECTIONS:
        return message_class("tensorflow.VariableDef")
    name = {
        "cond_context": "tensorflow.CondContextDef",
        "while_context": "tensorflow.WhileContextDef",
        "savers": "tensorflow.SaverDef",
        "queue_runners": "tensorflow.QueueRunnerDef",
    }.get(key)
    return message_class(name) if name else None


def read_meta_graph(path: str):
    """Parse a ``.meta`` file into a ``MetaGraphDef`` (the TensorFlow-free class of
    :mod:`~ckptsurgery.formats.protos`; TensorFlow is not imported).

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointCorruptError: the file is not a serialised ``MetaGraphDef``.
    """
    from google.protobuf.message import DecodeError

    from .protos import message_class

    try:
        with storage.open_read(path) as f:
            data = f.read()
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"no meta-graph file '{path}'") from e
    meta = message_class("tensorflow.MetaGraphDef")()
    try:
        meta.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise CheckpointCorruptError(
            f"'{path}' is not a MetaGraphDef (truncated or not a .meta file): {e}"
        ) from e
    if not meta.graph_def.node and data:
        raise CheckpointCorruptError(
            f"'{path}' parses as a MetaGraphDef with no graph nodes; it is not a usable .meta file"
        )
    _check_proto_collections(meta, path)
    return meta


def _check_proto_collections(meta, path: str) -> None:
    """Parse, once, the collections that hold serialised protos (as importing the graph would),
    so that a damaged entry is a CheckpointCorruptError here, not a DecodeError anywhere later."""
    from google.protobuf.message import DecodeError

    for key, col in meta.collection_def.items():
        proto = collection_proto(key)
        if proto is None or not col.HasField("bytes_list"):
            continue
        for raw in col.bytes_list.value:
            try:
                proto.FromString(raw)
            except (DecodeError, RuntimeError, ValueError) as e:
                raise CheckpointCorruptError(
                    f"'{path}' is damaged: an entry of its '{key}' collection is not a "
                    f"{proto.__name__} ({e}); copy the checkpoint again from its source"
                ) from e


def write_meta_graph(meta, path: str) -> None:
    """Write ``meta`` to ``path``, flushed to disk (the caller takes care of atomicity)."""
    write_meta_bytes(meta.SerializeToString(), path)


def write_meta_bytes(data: bytes, path: str) -> None:
    """Write a serialised ``MetaGraphDef`` to ``path``, flushed to disk."""
    storage.write_bytes(path, data)
