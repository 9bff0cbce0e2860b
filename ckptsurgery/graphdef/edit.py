"""Editing serialised graphs: prune to what some outputs need, cut and uncut gradients.

Each function takes a ``MetaGraphDef`` and returns a new one plus a record of what changed; the
input is never modified. Working on the protobuf keeps collections we do not understand and frees
the names of pruned nodes, so new layers may take the old names (``hidden4``, ``logits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NotFoundError
from ..formats.metafile import CONTEXT_COLLECTIONS, collection_proto
from .collections import context_anchors, drop_stale_collection_entries, variable_defs
from .metagraph import free_name, node_map, op_name, reroute
from .walk import ancestors

__all__ = ["PruneInfo", "prune", "cut", "uncut", "fed_by_placeholder"]


@dataclass
class PruneInfo:
    """What :func:`prune` removed: op names, variable names, and emptied collections."""

    removed_ops: list[str] = field(default_factory=list)
    removed_variables: list[str] = field(default_factory=list)
    removed_collections: list[str] = field(default_factory=list)


def prune(meta, keep: list[str]):
    """Keep only the nodes that the tensors or ops in ``keep`` depend on.

    The variables those nodes read stay with their initialisers. A TF1 ``cond`` or
    ``while_loop`` that any kept node is part of stays whole (every exit of a loop, say: its
    context is rebuilt from all of them on import, and gradients need it). Collections keep
    the entries whose nodes remain; the saver's nodes go (a new saver is made at export), its
    ``SaverDef`` stays so that importing the result does not build another.

    Returns:
        ``(new_meta, PruneInfo)``.
    """
    vdefs = variable_defs(meta)
    kept = ancestors(meta, keep)
    contexts = [context_anchors(collection_proto(key).FromString(raw))
                for key in CONTEXT_COLLECTIONS if key in meta.collection_def
                for raw in meta.collection_def[key].bytes_list.value]
    grown = True
    while grown:  # a context kept whole may reach into another
        grown = False
        for anchors in contexts:
            if anchors & kept and not anchors <= kept:
                kept |= ancestors(meta, sorted(anchors))
                grown = True
    new = type(meta)()
    new.CopyFrom(meta)
    del new.graph_def.node[:]
    new.graph_def.node.extend(n for n in meta.graph_def.node if n.name in kept)
    info = PruneInfo(
        removed_ops=[n.name for n in meta.graph_def.node if n.name not in kept],
        removed_variables=sorted(v for v in vdefs if v not in kept),
    )
    info.removed_collections = drop_stale_collection_entries(new)
    return new, info


def cut(meta, tensor: str):
    """Insert a ``StopGradient`` after ``tensor`` and rewire all its consumers to it.

    No gradient then reaches anything ``tensor`` depends on. The new node is named
    ``<op>/stop_gradient``.

    Returns:
        ``(new_meta, name of the StopGradient output tensor)``.
    """
    if op_name(tensor) not in node_map(meta):
        raise NotFoundError(f"cannot cut after '{tensor}': no such op in the graph")
    new, sg_name, src, index = _readers_moved(meta, tensor, "stop_gradient")
    nodes = node_map(meta)
    sg = new.graph_def.node.add()
    sg.name = sg_name
    sg.op = "StopGradient"
    sg.input.append(f"{src}:{index}" if index else src)
    dtype = _output_dtype(nodes[src], index)
    if dtype is not None:
        sg.attr["T"].type = dtype
    return new, f"{sg_name}:0"


def fed_by_placeholder(meta, tensor: str, shape: list | None):
    """Make a new ``Placeholder`` (of ``tensor``'s dtype and ``shape``, None for unknown
    dimensions) feed every reader of ``tensor``: an input in the middle of a graph (an
    Estimator's feature layer, whose values came from a queue) becomes a real input. The
    placeholder is named ``<op>/input``.

    Returns:
        ``(new_meta, name of the placeholder's tensor)``.
    """
    if op_name(tensor) not in node_map(meta):
        raise NotFoundError(f"no op '{op_name(tensor)}' in the graph")
    new, name, src, index = _readers_moved(meta, tensor, "input")
    nodes = node_map(meta)
    holder = new.graph_def.node.add()
    holder.name, holder.op = name, "Placeholder"
    holder.attr["dtype"].type = _output_dtype(nodes[src], index) or 1
    if shape is None:
        holder.attr["shape"].shape.unknown_rank = True
    for d in shape or ():
        holder.attr["shape"].shape.dim.add().size = -1 if d is None else d
    return new, f"{name}:0"


def uncut(meta):
    """Remove every ``StopGradient`` node, wiring its consumers to its input: the inverse of
    :func:`cut`.

    What a cut froze trains again; this is how a model frozen with ``--cut-after`` is unfrozen
    for a last round of fine-tuning. Collection entries naming a removed node follow the rewiring.

    Returns:
        ``(new_meta, {removed op name: the tensor its consumers now read})``.
    """
    stops = {n.name: n.input[0] for n in meta.graph_def.node if n.op == "StopGradient" and n.input}

    def through(ref: str) -> str:
        while op_name(ref) in stops:
            ref = stops[op_name(ref)]
        return ref

    new = type(meta)()
    new.CopyFrom(meta)
    del new.graph_def.node[:]
    for node in meta.graph_def.node:
        if node.name in stops:
            continue
        copy = new.graph_def.node.add()
        copy.CopyFrom(node)
        for i, inp in enumerate(copy.input):
            if inp.startswith("^"):
                copy.input[i] = "^" + op_name(through(inp[1:]))
            else:
                copy.input[i] = through(inp)
    for col in new.collection_def.values():
        if col.WhichOneof("kind") == "node_list":
            values = [through(v) for v in col.node_list.value]
            del col.node_list.value[:]
            col.node_list.value.extend(values)
    tensor = {name: through(name) for name in stops}
    return new, {name: t if ":" in t else t + ":0" for name, t in tensor.items()}


def _readers_moved(meta, tensor: str, suffix: str):
    """A copy of ``meta`` whose readers of ``tensor`` read ``<op>/<suffix>`` (a free name; the
    caller adds the node) instead: ``(new_meta, that name, op name, output index)``."""
    src = op_name(tensor)
    index = int(tensor.rpartition(":")[2]) if ":" in tensor else 0
    name = free_name(f"{src}/{suffix}", node_map(meta))
    new = type(meta)()
    new.CopyFrom(meta)
    reroute(new.graph_def, {f"{src}:{index}": name})
    return new, name, src, index


def _output_dtype(node, index: int):
    """The dtype enum of output ``index`` of ``node``: from the op's definition (a fixed type,
    or the attr it names, which a graph saved with ``strip_default_attrs`` may leave to its
    default), else from a ``T`` or ``dtype`` attr."""
    from tensorflow.python.framework import op_def_registry

    op_def = op_def_registry.get(node.op)
    if op_def is not None:
        args = [a for a in op_def.output_arg for _ in range(_arg_count(a, node))]
        if index < len(args):
            arg = args[index]
            if arg.type:
                return arg.type
            if arg.type_attr:
                if arg.type_attr in node.attr:
                    return node.attr[arg.type_attr].type
                default = next((a.default_value.type for a in op_def.attr
                                if a.name == arg.type_attr and a.HasField("default_value")), None)
                if default:
                    return default
    for key in ("T", "dtype"):
        if key in node.attr and node.attr[key].type:
            return node.attr[key].type
    return None


def _arg_count(arg, node) -> int:
    """How many tensors an op's output arg stands for (``number_attr`` lists)."""
    if arg.number_attr and arg.number_attr in node.attr:
        return int(node.attr[arg.number_attr].i)
    return 1
