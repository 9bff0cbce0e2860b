"""Reading a ``MetaGraphDef``'s graph without importing it: names, nodes, placeholders, versions.

Everything here works on the serialised graph, never on a live ``tf.Graph``, so it also works on
graphs this TensorFlow cannot import (the graph_def_editor approach). Parsing the file is
:mod:`ckptsurgery.formats.metafile`'s; collections are :mod:`.collections`'.

A command often asks several questions of one graph (roles, the saver, outputs), and each answer
walks all its nodes; on a graph of 100,000s of nodes the walks are the cost, and reading a
protobuf node from Python costs about a microsecond. So the names, op types and devices are read
once into plain lists (:class:`NodeIndex`), which the analyses scan, fetching only the nodes
they need (:func:`node_map`, :func:`nodes_of_type`). Inside ``with frozen(meta):`` the analyses
marked :func:`analysis` are computed once per meta and arguments and shared. The memo lives only
as long as the block, and only for that meta object: edits work on copies, which are never
frozen, or end the memo first (:func:`thaw`), so no edit can read a stale answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Container, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["op_name", "owner_of", "frozen", "thaw", "analysis", "NodeIndex", "node_index", "node_map",
           "nodes_of_type", "placeholders", "placeholder_shape", "tf_version",
           "unregistered_ops", "set_repeated", "shape_text", "free_name", "reroute"]

F = TypeVar("F", bound=Callable)

# id(meta) -> {(analysis, args): result}, for the metas inside a ``frozen`` block.
_MEMO: dict[int, dict] = {}


def op_name(ref: str) -> str:
    """The op name of a node or tensor reference: ``^a``, ``a:0`` and ``a`` all give ``a``."""
    ref = ref.lstrip("^")
    head, sep, tail = ref.rpartition(":")
    return head if sep and tail.isdigit() else ref


def owner_of(variables: Container[str]) -> Callable[[str], str | None]:
    """``owner(name)``: the longest of ``variables`` that ``name`` is or starts with (+ ``/``),
    or None: the variable a node belongs to (``w/read`` is ``w``'s, ``w/Adam/read``
    ``w/Adam``'s)."""
    def owner(name: str) -> str | None:
        while name not in variables:
            cut = name.rfind("/")
            if cut < 0:
                return None
            name = name[:cut]
        return name
    return owner


@contextmanager
def frozen(meta, index: NodeIndex | None = None) -> Iterator:
    """A block in which ``meta`` is not modified, so that each :func:`analysis` of it is
    computed once and its result shared (callers must not modify the results either). Nested
    blocks over the same meta share one memo; ``frozen(None)`` does nothing. ``index``, when
    the caller already knows the graph's :class:`NodeIndex` (a rewrite knows what it removed
    and added), is the block's :func:`node_index` instead of a new pass over the nodes.

    Yields:
        ``meta``.
    """
    if meta is None or id(meta) in _MEMO:
        yield meta
        return
    _MEMO[id(meta)] = {} if index is None else {(node_index.__wrapped__, ()): index}
    try:
        yield meta
    finally:
        _MEMO.pop(id(meta), None)


def thaw(meta) -> None:
    """End the memo of ``meta`` now, inside its :func:`frozen` block, before ``meta`` is
    modified in place: what is computed from then on is computed from the graph as it is.
    The memo's answers (a node index, consumer maps) are freed with it."""
    _MEMO.pop(id(meta), None)


def analysis(fn: F) -> F:
    """Mark ``fn(meta, *args)``, a read-only analysis of a meta-graph, as computed once per
    meta and (hashable) arguments inside a :func:`frozen` block; outside one it runs each time."""
    @functools.wraps(fn)
    def memoized(meta, *args):
        memo = _MEMO.get(id(meta))
        if memo is None:
            return fn(meta, *args)
        key = (fn, args)
        if key not in memo:
            memo[key] = fn(meta, *args)
        return memo[key]
    return memoized


class NodeIndex:
    """A graph's node names, op types and devices as plain lists in ``GraphDef`` order, and each
    name's position. Every protobuf node read from Python costs about a microsecond, so the
    analyses that look at all names or types read these lists, made in one pass, and fetch the
    few nodes they need by position."""

    def __init__(self, graph_def=None, *, lists: tuple[list, list, list] | None = None):
        """Index ``graph_def``'s nodes, or take ``lists``, ``(names, ops, devices)`` known
        otherwise (:meth:`after`)."""
        if lists is None:
            lists = [], [], []
            add_name, add_op, add_device = (part.append for part in lists)
            for node in graph_def.node:
                add_name(node.name)
                add_op(node.op)
                add_device(node.device)
        self.names, self.ops, self.devices = lists
        self.position = dict(zip(self.names, range(len(self.names)), strict=True))

    def after(self, gone: set[str], renames: dict[str, str]) -> NodeIndex:
        """The index of the graph once the nodes named in ``gone`` are removed (the others
        keeping their order) and ``renames`` (``{old: new}``) applied: on a big graph, a
        fraction of a new pass over the nodes."""
        kept = [i for i, name in enumerate(self.names) if name not in gone]
        names = [self.names[i] for i in kept]
        if renames:
            names = [renames.get(name, name) for name in names]
        ops, devices = [self.ops[i] for i in kept], [self.devices[i] for i in kept]
        return NodeIndex(lists=(names, ops, devices))

    def extend(self, added) -> None:
        """Index the nodes ``added``, just appended to the graph; for an index that no memo
        holds yet (:meth:`after`'s, while a rewrite adds a saver)."""
        for node in added:
            self.position[node.name] = len(self.names)
            self.names.append(node.name)
            self.ops.append(node.op)
            self.devices.append(node.device)
        self.__dict__.pop("by_op", None)

    @functools.cached_property
    def by_op(self) -> dict[str, list[int]]:
        """``{op type: positions of its nodes}``, in graph order."""
        out: dict[str, list[int]] = {}
        for i, op in enumerate(self.ops):
            positions = out.get(op)
            if positions is None:
                out[op] = [i]
            else:
                positions.append(i)
        return out

    def of_type(self, *op_types: str) -> list[int]:
        """The positions of the nodes whose op type is one of ``op_types``, in graph order."""
        return sorted(i for t in op_types for i in self.by_op.get(t, ()))


class NodeMap(Mapping):
    """The graph's nodes by name, read-only, looked up through a :class:`NodeIndex`: a view of
    the graph as it was indexed (take a new one after removing nodes)."""

    __slots__ = ("_nodes", "_index")

    def __init__(self, graph_def, index: NodeIndex):
        self._nodes, self._index = graph_def.node, index

    @property
    def index(self) -> NodeIndex:
        return self._index

    def __getitem__(self, name: str):
        return self._nodes[self._index.position[name]]

    def get(self, name: str, default=None):
        i = self._index.position.get(name)
        return default if i is None else self._nodes[i]

    def __contains__(self, name) -> bool:
        return name in self._index.position

    def __iter__(self):
        return iter(self._index.position)

    def __len__(self) -> int:
        return len(self._index.position)

    def values(self):
        return iter(self._nodes)

    def items(self):
        return zip(self._index.names, self._nodes, strict=True)


@analysis
def node_index(meta) -> NodeIndex:
    """The :class:`NodeIndex` of ``meta``'s graph."""
    return NodeIndex(meta.graph_def)


@analysis
def node_map(meta) -> NodeMap:
    """The graph's nodes by name (a read-only mapping)."""
    return NodeMap(meta.graph_def, node_index(meta))


def nodes_of_type(meta, *op_types: str) -> list:
    """The nodes whose op type is one of ``op_types``, in graph order."""
    nodes = meta.graph_def.node
    return [nodes[i] for i in node_index(meta).of_type(*op_types)]


@analysis
def placeholders(meta) -> dict[str, str]:
    """The graph's placeholders, ``{name: dtype name}`` (``float32``, ``int64``...)."""
    from ..formats.dtypes import dtype_name

    return {n.name: dtype_name(n.attr["dtype"].type) for n in nodes_of_type(meta, "Placeholder")}


def placeholder_shape(meta, name: str) -> tuple[int | None, ...] | None:
    """Placeholder ``name``'s declared shape, ``None`` for unknown dimensions; None when the
    rank is unknown too. TensorFlow before 1.2 set the ``shape`` attr only for fully known
    shapes and left it empty otherwise (which later versions read as a scalar): there an empty
    shape is unknown, unless ``_output_shapes`` records the real one."""
    node = node_map(meta)[name]
    shape = None
    if "shape" in node.attr and not node.attr["shape"].shape.unknown_rank:
        shape = tuple(d.size if d.size >= 0 else None for d in node.attr["shape"].shape.dim)
    if shape == () and _before_1_2(meta):
        shape = None
    if shape is None and "_output_shapes" in node.attr and node.attr["_output_shapes"].list.shape:
        first = node.attr["_output_shapes"].list.shape[0]
        if not first.unknown_rank and (first.dim or not _before_1_2(meta)):
            shape = tuple(d.size if d.size >= 0 else None for d in first.dim)
    return shape


def _before_1_2(meta) -> bool:
    version = tf_version(meta)
    if version is None:
        return True
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (1, 2)


def tf_version(meta) -> str | None:
    """The TensorFlow version that wrote the graph, when it says (graphs before 1.0 do not)."""
    return meta.meta_info_def.tensorflow_version or None


def unregistered_ops(meta) -> list[str]:
    """Op types used by the graph that TensorFlow does not register: the running TensorFlow's
    registry when it is loaded, else the op list of the TensorFlow release the package vendors
    (:func:`~ckptsurgery.formats.protos.registered_ops`), so that this needs no import."""
    import sys

    used = set(node_index(meta).by_op)
    used |= {n.op for f in meta.graph_def.library.function for n in f.node_def}
    defined = {f.signature.name for f in meta.graph_def.library.function}
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import op_def_registry

        return sorted(op for op in used - defined if op_def_registry.get(op) is None)
    from ..formats.protos import registered_ops

    return sorted(used - defined - registered_ops())


def set_repeated(field, values) -> None:
    """Set a repeated protobuf field to ``values``, in place."""
    del field[:]
    field.extend(values)


def shape_text(shape) -> str:
    """A shape as people read it: ``[?, 28, 28, 1]``, ``(shape unknown)`` for None."""
    if shape is None:
        return "(shape unknown)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def reroute(graph_def, targets: dict[str, str], skip: set[str] = frozenset()) -> None:
    """Make every reader of a tensor in ``targets`` read its target instead, in place (``op:0``
    is read as plain ``op`` too); the nodes named in ``skip`` are left as they are. The one
    rewiring under bypassing a dropout, baking a value in and cutting a graph."""
    aliases = dict(targets)
    for ref, to in targets.items():
        if ref.endswith(":0"):
            aliases.setdefault(ref[:-2], to)
    for node in graph_def.node:
        if node.name in skip:
            continue
        for i, ref in enumerate(node.input):
            if ref in aliases:
                node.input[i] = aliases[ref]


def free_name(name: str, taken) -> str:
    """``name``, or ``name_1``, ``name_2``... the first not in ``taken``."""
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate
