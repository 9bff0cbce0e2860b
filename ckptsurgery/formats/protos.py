"""TensorFlow's definitions without TensorFlow: its protobuf messages (``MetaGraphDef``, the
bundle protos and what they reference) from descriptors vendored in ``tf_protos.binpb``, and the
names of the ops it registers, vendored in ``tf_ops.txt``.

Importing ``tensorflow.core.protobuf.meta_graph_pb2`` imports all of TensorFlow (seconds,
about 550 MB), so the package carries TensorFlow's own ``FileDescriptorProto``\\ s (Apache 2.0,
see ``tf_protos.NOTICE``) and builds the message classes from them in a private descriptor pool
with the ``protobuf`` package. The pool is private because TensorFlow registers the same file
names in the default pool when it loads. The classes are not TensorFlow's: code that hands a
message to TensorFlow converts it with :func:`to_tensorflow` (serialise, parse).

Regenerate both files from the installed TensorFlow with ``python -m ckptsurgery.formats.protos``.
"""

from __future__ import annotations

import functools
import os

__all__ = ["message_class", "to_tensorflow", "from_tensorflow", "registered_ops", "vendor"]

_BINPB = os.path.join(os.path.dirname(__file__), "tf_protos.binpb")
_OPS = os.path.join(os.path.dirname(__file__), "tf_ops.txt")

#: The TensorFlow modules whose protos (with their dependencies) are vendored.
_SOURCES = (
    "tensorflow.core.protobuf.meta_graph_pb2", "tensorflow.core.protobuf.tensor_bundle_pb2",
    "tensorflow.core.protobuf.control_flow_pb2", "tensorflow.core.protobuf.queue_runner_pb2",
    "tensorflow.core.protobuf.saver_pb2", "tensorflow.core.protobuf.trackable_object_graph_pb2",
    "tensorflow.core.framework.variable_pb2", "tensorflow.core.framework.op_def_pb2",
)


@functools.cache
def _pool():
    from google.protobuf import descriptor_pb2, descriptor_pool

    files = descriptor_pb2.FileDescriptorSet()
    with open(_BINPB, "rb") as f:
        files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return pool


@functools.cache
def message_class(full_name: str):
    """The message class of ``full_name`` (e.g. ``"tensorflow.MetaGraphDef"``)."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def to_tensorflow(message):
    """``message`` as an instance of TensorFlow's own class of that name (imports TensorFlow)."""
    import importlib

    name = message.DESCRIPTOR.full_name
    module = message.DESCRIPTOR.file.name.replace("/", ".").removesuffix(".proto") + "_pb2"
    cls = getattr(importlib.import_module(module), name.rsplit(".", 1)[-1])
    if isinstance(message, cls):
        return message
    return cls.FromString(message.SerializeToString())


def from_tensorflow(message):
    """A TensorFlow-made message (or one of ours) as an instance of this module's class."""
    cls = message_class(message.DESCRIPTOR.full_name)
    if isinstance(message, cls):
        return message
    return cls.FromString(message.SerializeToString())


@functools.cache
def registered_ops() -> frozenset[str]:
    """The op types the vendored TensorFlow registers (its version is the file's first line)."""
    with open(_OPS, encoding="utf-8") as f:
        return frozenset(line.strip() for line in f.readlines()[1:])


def vendor(path: str = _BINPB, ops_path: str = _OPS) -> bytes:
    """Write the descriptors of :data:`_SOURCES` and their dependencies, in dependency order,
    from the installed TensorFlow to ``path``, and its registered op names to ``ops_path``;
    returns the descriptor bytes."""
    import importlib

    import tensorflow as tf
    from google.protobuf import descriptor_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    seen: dict = {}

    def walk(fd) -> None:
        if fd.name not in seen:
            for dep in fd.dependencies:
                walk(dep)
            seen[fd.name] = fd

    for module in _SOURCES:
        walk(importlib.import_module(module).DESCRIPTOR)
    out = descriptor_pb2.FileDescriptorSet()
    for fd in seen.values():
        out.file.add().ParseFromString(fd.serialized_pb)
    data = out.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(data)
    ops = message_class("tensorflow.OpList").FromString(
        c_api.TF_GetBuffer(c_api.TF_GetAllOpList()))
    with open(ops_path, "w", encoding="utf-8") as f:
        f.write(f"# op types registered by TensorFlow {tf.__version__}\n")
        f.writelines(f"{name}\n" for name in sorted(op.name for op in ops.op))
    return data


if __name__ == "__main__":
    print(f"wrote {len(vendor())} bytes to {_BINPB}")
