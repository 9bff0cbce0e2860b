"""The saver subgraph of a ``MetaGraphDef``, read and rebuilt at the protobuf level.

A ``.meta`` restores its checkpoint through the nodes its ``SaverDef`` names: ``RestoreV2`` (or,
before TF 0.12, ``RestoreSlice``) ops whose string constants list checkpoint keys, and one
``Assign`` per variable. TensorFlow built them in many shapes over the years: one ``RestoreV2``
per variable (TF 1.0-1.2) or one for all, a sharded saver with ``MergeV2Checkpoints`` (Estimators),
``ReadVariableOp``/``AssignVariableOp`` for resource variables, partitioned variables saved as
slices of one key. :func:`saved_variables` reads any of these into one list of
:class:`SavedVariable` (which key restores which variable node); :func:`replace_saver` removes the
old subgraph and builds the one TF 1.x builds today (V2, unsharded, a single ``RestoreV2``) for a
given list, with ``Cast`` ops where the checkpoint stores another dtype than the variable has.
Nothing here imports the graph, so graphs this TensorFlow cannot import are handled too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UserError
from .metagraph import analysis, free_name, frozen, node_index, node_map, op_name
from .walk import reachable

__all__ = [
    "VARIABLE_OPS",
    "UnsupportedSaverError",
    "SavedVariable",
    "saver_scope",
    "saver_nodes",
    "saved_variables",
    "remove_saver",
    "replace_saver",
    "add_saver",
    "trace_variable",
    "saver_tensors",
]

#: Op types that hold a variable's value (ref variables, resource handles).
VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp", "AutoReloadVariable"})

_RESOURCE_OPS = frozenset({"VarHandleOp"})
# Ops between a variable and the save op; Cast is how a rebuilt saver stores another dtype.
_PASS_THROUGH = frozenset({"Identity", "ReadVariableOp", "Snapshot", "RefIdentity", "Cast"})
_SAVE_OPS = {"SaveV2": 3, "SaveSlices": 3, "Save": 2}  # op -> index of the first tensor input
_STRING = 7  # DataType.DT_STRING


class UnsupportedSaverError(UserError):
    """The ``.meta``'s saver saves something this tool cannot rebuild (not a variable)."""


@dataclass(frozen=True)
class SavedVariable:
    """One tensor the saver writes and restores: checkpoint ``key`` (and ``slice_spec`` for a
    part of a partitioned variable) to variable op ``node``.

    ``dtype`` is the variable's ``DataType`` enum; ``stored_dtype`` the dtype in the checkpoint
    when it differs (after a cast), else None. ``resource`` is True for ``VarHandleOp``.
    """

    key: str
    slice_spec: str
    node: str
    dtype: int
    resource: bool
    stored_dtype: int | None = None


def saver_scope(meta) -> str | None:
    """The name scope of the ``.meta``'s saver (``save``, ``save_1``...), or None without one."""
    if not meta.HasField("saver_def") or not meta.saver_def.restore_op_name:
        return None
    name = op_name(meta.saver_def.restore_op_name)
    return name.rpartition("/")[0] or None


@analysis
def saver_nodes(meta) -> set[str]:
    """The names of the nodes that make up the saver: every node inside its scope that no node
    outside it uses (sharded savers leave unused reads in the scope; they go too), directly or
    through other nodes of the scope."""
    members = _scope_members(meta)
    if not members:
        return members
    prefix = saver_scope(meta) + "/"
    used = [op_name(ref)
            for name, node in zip(node_index(meta).names, meta.graph_def.node, strict=True)
            if not name.startswith(prefix)
            for ref in node.input if prefix in ref]  # a cheap test first: most refs fail it
    nodes = node_map(meta)
    outside = reachable(used, lambda name: (op_name(ref) for ref in nodes[name].input),
                        enter=lambda name: name in members)
    return members - outside


@analysis
def _scope_members(meta) -> set[str]:
    """The names of the nodes inside the saver's name scope."""
    scope = saver_scope(meta)
    if scope is None:
        return set()
    prefix = scope + "/"
    return {name for name in node_index(meta).names if name.startswith(prefix)}


@analysis
def saved_variables(meta) -> list[SavedVariable]:
    """Which checkpoint key restores which variable node, read from the ``.meta``'s saver.

    Without a saver (or one without save ops), the global variables' ``VariableDef`` s are used:
    the key is the variable's name, or its partition's full name.

    Raises:
        UnsupportedSaverError: the saver saves a tensor that is not a variable (a lookup table's
            export, for one), which a rebuilt saver could not restore.
    """
    nodes = node_map(meta)
    # The save ops of the scope: no node outside a saver reads them, so the walk of
    # saver_nodes (every input of the graph) is not needed to find them.
    index = node_index(meta)
    members = _scope_members(meta)
    saves = [nodes[index.names[i]] for i in index.of_type(*_SAVE_OPS)
             if index.names[i] in members]
    if not saves:
        return _from_variable_defs(meta, nodes)
    out: list[SavedVariable] = []
    for save in sorted(saves, key=lambda n: (len(n.name), n.name)):  # SaveV2, SaveV2_1, ...
        inputs = [i for i in save.input if not i.startswith("^")]
        first = _SAVE_OPS[save.op]
        keys = _const_strings(nodes, inputs[1])
        slices = _const_strings(nodes, inputs[2]) if first == 3 else [""] * len(keys)
        stored = list(save.attr["dtypes" if save.op == "SaveV2" else "T"].list.type)
        stored += [None] * (len(keys) - len(stored))
        for key, spec, ref, dtype in zip(keys, slices, inputs[first:], stored, strict=False):
            name = trace_variable(nodes, ref)
            if name is None:
                src = nodes.get(op_name(ref))
                raise UnsupportedSaverError(
                    f"the .meta's saver saves '{key}' from '{ref}' (op "
                    f"{src.op if src is not None else 'missing'}), which is not a variable; "
                    "its restore cannot be rebuilt. Pass --no-meta to write the checkpoint "
                    "without a .meta"
                )
            var_dtype = nodes[name].attr["dtype"].type
            out.append(SavedVariable(key, _spec_of(spec), name, var_dtype,
                                     index.ops[index.position[name]] in _RESOURCE_OPS,
                                     dtype if dtype not in (None, var_dtype) else None))
    return out


def remove_saver(meta) -> set[str]:
    """Remove, in place, the nodes of ``meta``'s saver (its ``SaverDef`` stays).

    Returns:
        The names of the removed nodes.
    """
    old = saver_nodes(meta)
    if old:
        kept = [n for n in meta.graph_def.node if n.name not in old]
        del meta.graph_def.node[:]
        meta.graph_def.node.extend(kept)
    return old


def replace_saver(meta, saved: list[SavedVariable]) -> str:
    """Replace, in place, the saver subgraph of ``meta`` by a new one over ``saved``.

    The new saver keeps the old one's scope (``save`` when there was none) and its
    ``max_to_keep``/``keep_checkpoint_every_n_hours``; it writes V2 checkpoints, unsharded.

    Returns:
        The scope of the new saver.
    """
    scope = saver_scope(meta)
    remove_saver(meta)
    return add_saver(meta, saved, scope)


def add_saver(meta, saved: list[SavedVariable], scope: str | None,
              names: Iterable[str] | None = None) -> str:
    """Add, in place, a saver over ``saved`` to ``meta``, which has none (its nodes are gone:
    :func:`remove_saver`), in ``scope`` unless that is None or still has nodes; see
    :func:`replace_saver`. ``names`` are the graph's node names when the caller knows them
    (else they are read from the nodes).

    Returns:
        The scope of the new saver.
    """
    if names is None:
        names = [n.name for n in meta.graph_def.node]
    if scope is None or any(name.startswith(scope + "/") for name in names):
        scope = free_name("save", {name.split("/", 1)[0] for name in names})
    _SaverBuilder(meta.graph_def, scope).build(saved)
    sd = meta.saver_def
    keep_n = sd.max_to_keep if meta.HasField("saver_def") else 5
    hours = sd.keep_checkpoint_every_n_hours if meta.HasField("saver_def") else 10000.0
    sd.Clear()
    sd.filename_tensor_name = f"{scope}/Const:0"
    sd.save_tensor_name = f"{scope}/control_dependency:0"
    sd.restore_op_name = f"{scope}/restore_all"
    sd.max_to_keep = keep_n
    sd.keep_checkpoint_every_n_hours = hours
    sd.sharded = False
    sd.version = type(sd).V2
    return scope


class _SaverBuilder:
    """Appends the nodes of a V2 saver to a ``GraphDef``, as ``tf.compat.v1.train.Saver``
    lays them out (names, attrs and colocation)."""

    def __init__(self, graph_def, scope: str):
        self.graph_def = graph_def
        self.scope = scope
        self._kinds: dict[tuple, object] = {}  # (op, attrs) -> a node with them, copied
        from google.protobuf.message_factory import GetMessageClass

        self._node_class = GetMessageClass(graph_def.DESCRIPTOR.fields_by_name["node"].message_type)

    def build(self, saved: list[SavedVariable]) -> None:
        s = self.scope
        self._const(f"{s}/Const", [b"model"], scalar=True)
        save_inputs = []
        for i, v in enumerate(saved):
            tensor = v.node
            if v.resource:
                tensor = self._add(f"{s}/Read_{i}/ReadVariableOp", "ReadVariableOp", [v.node],
                                   dtype=v.dtype, colocate=v.node)
            if v.stored_dtype not in (None, v.dtype):
                tensor = self._add(f"{s}/cast_for_save_{i}", "Cast", [tensor], SrcT=v.dtype,
                                   DstT=v.stored_dtype, Truncate=False)
            save_inputs.append(tensor)
        stored = [v.stored_dtype or v.dtype for v in saved]
        names = [v.key.encode() for v in saved]
        slices = [v.slice_spec.encode() for v in saved]
        for op in ("SaveV2", "RestoreV2"):
            self._const(f"{s}/{op}/tensor_names", names)
            self._const(f"{s}/{op}/shape_and_slices", slices)
        self._add(f"{s}/SaveV2", "SaveV2",
                  [f"{s}/Const", f"{s}/SaveV2/tensor_names", f"{s}/SaveV2/shape_and_slices",
                   *save_inputs], dtypes=stored)
        self._add(f"{s}/control_dependency", "Identity", [f"{s}/Const", f"^{s}/SaveV2"],
                  T=_STRING, colocate=f"{s}/Const")
        self._add(f"{s}/RestoreV2", "RestoreV2",
                  [f"{s}/Const", f"{s}/RestoreV2/tensor_names", f"{s}/RestoreV2/shape_and_slices"],
                  dtypes=stored)
        assigns = []
        for i, v in enumerate(saved):
            suffix = f"_{i}" if i else ""
            value = f"{s}/RestoreV2:{i}" if i else f"{s}/RestoreV2"
            if v.stored_dtype not in (None, v.dtype):
                value = self._add(f"{s}/cast_for_restore_{i}", "Cast", [value],
                                  SrcT=v.stored_dtype, DstT=v.dtype, Truncate=False)
            if v.resource:
                assigns.append(self._add(f"{s}/AssignVariableOp{suffix}", "AssignVariableOp",
                                         [v.node, value], dtype=v.dtype))
            else:
                assigns.append(self._add(f"{s}/Assign{suffix}", "Assign", [v.node, value],
                                         T=v.dtype, colocate=v.node, use_locking=True,
                                         validate_shape=True))
        self._add(f"{s}/restore_all", "NoOp", [f"^{a}" for a in assigns])

    def _add(self, name: str, op: str, inputs: list[str], colocate: str | None = None,
             **attrs) -> str:
        kind = (op, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
        template = self._kinds.get(kind)
        if template is None:  # made once per kind: copying it is faster than setting attrs
            template = self._kinds[kind] = self._node_class(op=op)
            for key, value in attrs.items():
                attr = template.attr[key]
                if isinstance(value, bool):
                    attr.b = value
                elif isinstance(value, list):
                    attr.list.type.extend(value)
                else:
                    attr.type = value
        node = self.graph_def.node.add()
        node.CopyFrom(template)
        node.name = name
        node.input.extend(inputs)
        if colocate:
            node.attr["_class"].list.s.append(f"loc:@{colocate}".encode())
        return name

    def _const(self, name: str, values: list[bytes], scalar: bool = False) -> None:
        node = self.graph_def.node.add()
        node.name = name
        node.op = "Const"
        node.attr["dtype"].type = _STRING
        tensor = node.attr["value"].tensor
        tensor.dtype = _STRING
        if scalar:
            tensor.string_val.append(values[0])
        else:
            tensor.tensor_shape.dim.add().size = len(values)
            tensor.string_val.extend(values)


def trace_variable(nodes, ref: str) -> str | None:
    """The name of the variable op that tensor ``ref`` reads, through identities and reads, or
    None. ``nodes`` is the graph's :func:`~ckptsurgery.graphdef.metagraph.node_map`, whose index
    gives the op types without reading the nodes."""
    name = op_name(ref)
    position, ops = nodes.index.position, nodes.index.ops
    for _ in range(16):
        i = position.get(name)
        if i is None:
            return None
        op = ops[i]
        if op in VARIABLE_OPS:
            return name
        if op not in _PASS_THROUGH:
            return None
        for ref in nodes[name].input:
            if ref[:1] != "^":  # the first data input
                name = op_name(ref) if ":" in ref else ref
                break
        else:
            return None
    return None


def _const_strings(nodes: dict, ref: str) -> list[str]:
    node = nodes[op_name(ref)]
    while node.op == "Identity":
        node = nodes[op_name(node.input[0])]
    if node.op != "Const":
        raise UnsupportedSaverError(
            f"the .meta's saver takes its tensor names from '{node.name}' (op {node.op}), not a "
            "constant; pass --no-meta to write the checkpoint without a .meta"
        )
    tensor = node.attr["value"].tensor
    values = list(tensor.string_val)
    count = 1
    for dim in tensor.tensor_shape.dim:
        count *= dim.size
    if len(values) == 1 and count > 1:  # a constant of one repeated value stores it once
        values *= count
    return [v.decode() for v in values]


def _spec_of(spec: str) -> str:
    """A slice spec that covers the whole tensor (``"10 0,10"``) is the same as no spec."""
    parts = spec.split()
    if len(parts) < 2:
        return spec
    dims, extents = parts[:-1], parts[-1].split(":")
    if len(dims) == len(extents) and all(
            e in ("-", f"0,{d}") for d, e in zip(dims, extents, strict=True)):
        return ""
    return spec


def _from_variable_defs(meta, nodes: dict) -> list[SavedVariable]:
    from ..formats.protos import message_class

    col = meta.collection_def["variables"] if "variables" in meta.collection_def else None
    if col is None or not col.HasField("bytes_list"):
        return []
    out = []
    for raw in col.bytes_list.value:
        vdef = message_class("tensorflow.VariableDef").FromString(raw)
        name = op_name(vdef.variable_name)
        node = nodes.get(name)
        if node is None or node.op not in VARIABLE_OPS:
            continue
        info = vdef.save_slice_info_def
        key, spec = name, ""
        if info.full_name:
            key = info.full_name
            extents = ":".join(f"{o},{n}" for o, n in zip(info.var_offset, info.var_shape,
                                                          strict=True))
            spec = _spec_of(" ".join(str(d) for d in info.full_shape) + " " + extents)
        out.append(SavedVariable(key, spec, name, node.attr["dtype"].type,
                                 node.op in _RESOURCE_OPS))
    return out


def saver_tensors(meta) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """``(checkpoint key, dtype name, full shape or None)`` of each tensor the graph's saver
    saves and restores (:func:`saved_variables`), once per key."""
    from ..formats.dtypes import DTYPE_NAMES

    with frozen(meta):
        try:
            saved = saved_variables(meta)
        except UnsupportedSaverError:  # it saves something else than variables: not checkable
            return []
        nodes = node_map(meta)
    out = {}
    for v in saved:
        enum = v.stored_dtype or v.dtype
        enum = enum - 100 if enum > 100 else enum  # reference types
        dtype = DTYPE_NAMES.get(enum, (f"<dtype {enum}>", 0))[0]
        out.setdefault(v.key, (v.key, dtype, _full_shape(v.slice_spec)
                               or _variable_shape(nodes.get(v.node))))
    return list(out.values())


def _full_shape(spec: str) -> tuple[int, ...] | None:
    """The full shape a ``"784 300 0,392:0,300"`` shape-and-slice spec gives, if any."""
    parts = spec.split()
    try:
        return tuple(int(p) for p in parts[:-1]) if len(parts) >= 2 else None
    except ValueError:
        return None


def _variable_shape(node) -> tuple[int, ...] | None:
    if node is None or "shape" not in node.attr:
        return None
    shape = node.attr["shape"].shape
    if shape.unknown_rank or any(d.size < 0 for d in shape.dim):
        return None
    return tuple(int(d.size) for d in shape.dim)
