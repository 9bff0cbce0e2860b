"""Reading and writing ``MetaGraphDef`` protobufs, and decoding their collections.

Everything here works on the serialised graph, never on a live ``tf.Graph``, so it also works on
graphs this TensorFlow cannot import (the graph_def_editor approach). Collections whose kind we do
not know are kept as they are.
"""

from __future__ import annotations

import os

from .errors import CheckpointCorruptError, CheckpointNotFoundError

__all__ = [
    "VARIABLE_COLLECTIONS",
    "read_meta_graph",
    "write_meta_graph",
    "op_name",
    "node_map",
    "collection_items",
    "variable_defs",
    "placeholders",
    "tf_version",
    "unregistered_ops",
]

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


def read_meta_graph(path: str):
    """Parse a ``.meta`` file into a ``MetaGraphDef``.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointCorruptError: the file is not a serialised ``MetaGraphDef``.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"no meta-graph file '{path}'") from e
    meta = meta_graph_pb2.MetaGraphDef()
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
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import control_flow_pb2, queue_runner_pb2, saver_pb2

    kinds = {key: variable_pb2.VariableDef for key in VARIABLE_COLLECTIONS}
    kinds.update(cond_context=control_flow_pb2.CondContextDef,
                 while_context=control_flow_pb2.WhileContextDef, savers=saver_pb2.SaverDef,
                 queue_runners=queue_runner_pb2.QueueRunnerDef)
    for key, proto in kinds.items():
        if key in meta.collection_def and meta.collection_def[key].HasField("bytes_list"):
            for raw in meta.collection_def[key].bytes_list.value:
                try:
                    proto.FromString(raw)
                except (DecodeError, RuntimeError, ValueError) as e:
                    raise CheckpointCorruptError(
                        f"'{path}' is damaged: an entry of its '{key}' collection is not a "
                        f"{proto.__name__} ({e}); copy the checkpoint again from its source"
                    ) from e


def write_meta_graph(meta, path: str) -> None:
    """Write ``meta`` to ``path`` (the caller takes care of atomicity)."""
    with open(path, "wb") as f:
        f.write(meta.SerializeToString())
        f.flush()
        os.fsync(f.fileno())


def op_name(ref: str) -> str:
    """The op name of a node or tensor reference: ``^a``, ``a:0`` and ``a`` all give ``a``."""
    ref = ref.lstrip("^")
    head, sep, tail = ref.rpartition(":")
    return head if sep and tail.isdigit() else ref


def node_map(meta) -> dict:
    """The graph's nodes by name."""
    return {n.name: n for n in meta.graph_def.node}


def _variable_def_type():
    from tensorflow.core.framework import variable_pb2

    return variable_pb2.VariableDef


def collection_items(meta, key: str) -> list[str]:
    """What collection ``key`` holds, as names: tensor/op names for node lists, variable op
    names for variable collections, values as strings for other lists."""
    col = meta.collection_def[key]
    kind = col.WhichOneof("kind")
    if kind == "node_list":
        return list(col.node_list.value)
    if kind == "bytes_list":
        if key in VARIABLE_COLLECTIONS:
            vdef = _variable_def_type()
            return [op_name(vdef.FromString(b).variable_name) for b in col.bytes_list.value]
        return [f"<{len(b)} bytes>" for b in col.bytes_list.value]
    if kind in ("int64_list", "float_list", "any_list"):
        return [str(v) for v in getattr(col, kind).value]
    return []


def variable_defs(meta) -> dict:
    """Every variable the meta-graph declares, ``{variable op name: VariableDef}``."""
    vdef = _variable_def_type()
    out = {}
    for key in VARIABLE_COLLECTIONS:
        if key in meta.collection_def and meta.collection_def[key].HasField("bytes_list"):
            for b in meta.collection_def[key].bytes_list.value:
                v = vdef.FromString(b)
                out.setdefault(op_name(v.variable_name), v)
    return out


def placeholders(meta) -> dict[str, str]:
    """The graph's placeholders, ``{name: dtype name}`` (``float32``, ``int64``...)."""
    from tensorflow.python.framework import dtypes

    return {
        n.name: dtypes.as_dtype(n.attr["dtype"].type).name
        for n in meta.graph_def.node
        if n.op == "Placeholder"
    }


def tf_version(meta) -> str | None:
    """The TensorFlow version that wrote the graph, when it says (graphs before 1.0 do not)."""
    return meta.meta_info_def.tensorflow_version or None


def unregistered_ops(meta) -> list[str]:
    """Op types used by the graph that this TensorFlow does not register."""
    from tensorflow.python.framework import op_def_registry

    used = {n.op for n in meta.graph_def.node}
    used |= {n.op for f in meta.graph_def.library.function for n in f.node_def}
    defined = {f.signature.name for f in meta.graph_def.library.function}
    return sorted(op for op in used - defined if op_def_registry.get(op) is None)


def import_meta_graph(meta, graph):
    """Import ``meta`` into ``graph`` (the caller's, never the default one by accident).

    Devices are cleared and stale collection entries dropped first; a graph whose saver is gone
    keeps a ``SaverDef`` so that the import builds no saver of its own.

    Raises:
        GraphImportError: the graph uses ops this TensorFlow does not register (named, with the
            version that wrote the graph), or TensorFlow rejects it for another reason.
    """
    import tensorflow as tf

    from .edit import drop_stale_collection_entries
    from .errors import GraphImportError

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
            tf.compat.v1.train.import_meta_graph(clean, clear_devices=True)
        except (ValueError, KeyError, TypeError, tf.errors.OpError) as e:
            raise GraphImportError(
                f"TensorFlow {tf.__version__} cannot import the graph (written by TensorFlow "
                f"{tf_version(meta) or 'unknown'}): {str(e).splitlines()[0]}"
            ) from e
    return graph
