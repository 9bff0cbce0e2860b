"""Editing serialised graphs: prune to what some outputs need, cut gradients, drop stale entries.

Each function takes a ``MetaGraphDef`` and returns a new one plus a record of what changed; the
input is never modified. Working on the protobuf keeps collections we do not understand and frees
the names of pruned nodes, so new layers may take the old names (``hidden4``, ``logits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import NotFoundError
from .metagraph import VARIABLE_COLLECTIONS, node_map, op_name, variable_defs
from .select import reachable

__all__ = ["PruneInfo", "ancestors", "prune", "cut", "uncut", "drop_stale_collection_entries"]


@dataclass
class PruneInfo:
    """What :func:`prune` removed: op names, variable names, and emptied collections."""

    removed_ops: list[str] = field(default_factory=list)
    removed_variables: list[str] = field(default_factory=list)
    removed_collections: list[str] = field(default_factory=list)


def ancestors(meta, refs: list[str]) -> set[str]:
    """The op names that the tensors or ops ``refs`` depend on, themselves included, plus the
    initialisers of every variable among them.

    Raises:
        NotFoundError: a ref names no op of the graph.
    """
    nodes = node_map(meta)
    vdefs = variable_defs(meta)
    starts = [op_name(r) for r in refs]
    for name in starts:
        if name not in nodes:
            raise NotFoundError(f"no op '{name}' in the graph")

    def inputs(name: str):
        yield from (op_name(i) for i in nodes[name].input)
        vdef = vdefs.get(name)
        if vdef is not None:
            yield from (op_name(n) for n in (vdef.initializer_name, vdef.snapshot_name,
                                             vdef.initial_value_name) if n)

    return reachable(starts, inputs, enter=lambda name: name in nodes)


def prune(meta, keep: list[str]):
    """Keep only the nodes that the tensors or ops in ``keep`` depend on.

    The variables those nodes read stay with their initialisers. Collections keep the entries
    whose nodes remain; the saver's nodes go (a new saver is made at export), its ``SaverDef``
    stays so that importing the result does not build another.

    Returns:
        ``(new_meta, PruneInfo)``.
    """
    vdefs = variable_defs(meta)
    kept = ancestors(meta, keep)
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
    nodes = node_map(meta)
    src = op_name(tensor)
    if src not in nodes:
        raise NotFoundError(f"cannot cut after '{tensor}': no such op in the graph")
    index = int(tensor.rpartition(":")[2]) if ":" in tensor else 0
    aliases = {f"{src}:{index}"} | ({src} if index == 0 else set())
    sg_name = _unique(f"{src}/stop_gradient", nodes)
    new = type(meta)()
    new.CopyFrom(meta)
    for node in new.graph_def.node:
        for i, inp in enumerate(node.input):
            if inp in aliases:
                node.input[i] = sg_name
    sg = new.graph_def.node.add()
    sg.name = sg_name
    sg.op = "StopGradient"
    sg.input.append(f"{src}:{index}" if index else src)
    dtype = _output_dtype(nodes[src], index)
    if dtype is not None:
        sg.attr["T"].type = dtype
    return new, f"{sg_name}:0"


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


def drop_stale_collection_entries(meta) -> list[str]:
    """Remove, in place, collection entries that name nodes the graph no longer has.

    Old graphs (TFLearn's, for one) save collections naming ops that are not in the graph, which
    makes ``import_meta_graph`` fail; pruning creates such entries too. Collections of kinds we
    do not know are kept as they are.

    Returns:
        The keys of collections that became empty and were removed.
    """
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import control_flow_pb2, queue_runner_pb2

    names = {n.name for n in meta.graph_def.node}
    emptied = []
    for key in list(meta.collection_def):
        col = meta.collection_def[key]
        kind = col.WhichOneof("kind")
        if kind == "node_list":
            keep = [v for v in col.node_list.value if op_name(v) in names]
            del col.node_list.value[:]
            col.node_list.value.extend(keep)
            empty = not keep
        elif kind == "bytes_list" and key in VARIABLE_COLLECTIONS:
            keep = [b for b in col.bytes_list.value
                    if op_name(variable_pb2.VariableDef.FromString(b).variable_name) in names]
            del col.bytes_list.value[:]
            col.bytes_list.value.extend(keep)
            empty = not keep
        elif kind == "bytes_list" and key in ("cond_context", "while_context"):
            proto = (control_flow_pb2.CondContextDef if key == "cond_context"
                     else control_flow_pb2.WhileContextDef)
            keep = [b for b in col.bytes_list.value
                    if op_name(_context_anchor(proto.FromString(b))) in names]
            del col.bytes_list.value[:]
            col.bytes_list.value.extend(keep)
            empty = not keep
        elif kind == "bytes_list" and key == "queue_runners":
            keep = [b for b in col.bytes_list.value
                    if _queue_runner_ops(queue_runner_pb2.QueueRunnerDef.FromString(b)) <= names]
            del col.bytes_list.value[:]
            col.bytes_list.value.extend(keep)
            empty = not keep
        elif kind == "bytes_list" and key == "savers":
            empty = True
        else:
            empty = False
        if empty:
            del meta.collection_def[key]
            emptied.append(key)
    return emptied


def _queue_runner_ops(runner) -> set[str]:
    """The op names a ``QueueRunnerDef`` needs: its queue, enqueue, close and cancel ops."""
    refs = [runner.queue_name, runner.close_op_name, runner.cancel_op_name,
            *runner.enqueue_op_name]
    return {op_name(r) for r in refs if r}


def _context_anchor(ctx) -> str:
    return getattr(ctx, "pivot_name", "") or getattr(ctx, "pivot_for_pred_name", "")


def _unique(name: str, nodes) -> str:
    candidate, i = name, 1
    while candidate in nodes:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def _output_dtype(node, index: int):
    """The dtype enum of output ``index`` of ``node``, from its attrs (``T`` or ``dtype``)."""
    for key in ("T", "dtype"):
        if key in node.attr and node.attr[key].type:
            return node.attr[key].type
    return None
