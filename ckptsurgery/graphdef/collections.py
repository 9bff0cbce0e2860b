"""A ``MetaGraphDef``'s collections: what they hold, and keeping them true to the graph.

Collections name nodes (``node_list``) or hold serialised protos (``bytes_list``: variables,
control-flow contexts, savers, queue runners; the kinds come from
:func:`~ckptsurgery.formats.metafile.collection_proto`). An entry naming a node the graph no
longer has makes ``import_meta_graph`` fail, so every edit that removes nodes ends with
:func:`drop_stale_collection_entries`. Collections of kinds we do not know are kept as they are.
"""

from __future__ import annotations

from ..formats.metafile import CONTEXT_COLLECTIONS, VARIABLE_COLLECTIONS, collection_proto
from .metagraph import analysis, op_name, set_repeated

__all__ = ["collection_items", "collection_kind", "variable_defs", "context_anchors",
           "drop_stale_collection_entries"]


def collection_items(meta, key: str) -> list[str]:
    """What collection ``key`` holds, as names: tensor/op names for node lists, variable op
    names for variable collections, values as strings for other lists."""
    col = meta.collection_def[key]
    kind = col.WhichOneof("kind")
    if kind == "node_list":
        return list(col.node_list.value)
    if kind == "bytes_list":
        if key in VARIABLE_COLLECTIONS:
            vdef = collection_proto(key)
            return [op_name(vdef.FromString(b).variable_name) for b in col.bytes_list.value]
        return [f"<{len(b)} bytes>" for b in col.bytes_list.value]
    if kind in ("int64_list", "float_list", "any_list"):
        return [str(v) for v in getattr(col, kind).value]
    return []


def collection_kind(meta, key: str) -> str:
    """A short description of what collection ``key`` holds (``node list``, ``VariableDef
    list``, ``bytes list`` for protos of a kind we do not know...)."""
    col = meta.collection_def[key]
    kind = col.WhichOneof("kind") or "empty"
    if kind == "bytes_list":
        proto = collection_proto(key)
        return f"{proto.__name__ if proto else 'bytes'} list"
    return kind.replace("_", " ")


@analysis
def variable_defs(meta) -> dict:
    """Every variable the meta-graph declares, ``{variable op name: VariableDef}``."""
    out = {}
    for key in VARIABLE_COLLECTIONS:
        if key in meta.collection_def and meta.collection_def[key].HasField("bytes_list"):
            vdef = collection_proto(key)
            for b in meta.collection_def[key].bytes_list.value:
                v = vdef.FromString(b)
                out.setdefault(op_name(v.variable_name), v)
    return out


def context_anchors(ctx) -> set[str]:
    """The op names a cond/while context looks up when it is imported: if any is gone, the
    context cannot be rebuilt and must go."""
    names = set()
    for f in ("pred_name", "pivot_name", "pivot_for_pred_name", "pivot_for_body_name"):
        value = getattr(ctx, f, "")
        if value:
            names.add(op_name(value))
    for f in ("loop_exit_names", "loop_enter_names"):
        names |= {op_name(v) for v in getattr(ctx, f, [])}
    return names


def drop_stale_collection_entries(meta, names: set[str] | None = None) -> list[str]:
    """Remove, in place, collection entries that name nodes the graph no longer has.

    Old graphs (TFLearn's, for one) save collections naming ops that are not in the graph, which
    makes ``import_meta_graph`` fail; pruning creates such entries too. A cond/while context
    goes when one of its anchors (:func:`context_anchors`) is gone, and otherwise loses the
    values naming removed nodes (a loop's gradient accumulators, say), at every nesting level.
    Saved ``SaverDef``s go (a rewritten graph gets a new saver). Collections of kinds we do not
    know are kept.

    ``names``, the graph's node names, when the caller knows them (else read from the nodes).

    Returns:
        The keys of collections that became empty and were removed.
    """
    if names is None:
        names = {n.name for n in meta.graph_def.node}

    def alive(key: str, parse, raw: bytes) -> bytes | None:
        """The entry as it stays (contexts lose values naming removed nodes), or None."""
        entry = parse(raw)
        if key in VARIABLE_COLLECTIONS:
            return raw if op_name(entry.variable_name) in names else None
        if key in CONTEXT_COLLECTIONS:
            if not context_anchors(entry) <= names:
                return None
            _clean_context_values(entry, names)
            return entry.SerializeToString(deterministic=True)
        return raw if _queue_runner_ops(entry) <= names else None

    emptied = []
    for key in list(meta.collection_def):
        col = meta.collection_def[key]
        kind = col.WhichOneof("kind")
        if kind == "node_list":
            keep = [v for v in col.node_list.value if op_name(v) in names]
            set_repeated(col.node_list.value, keep)
            empty = not keep
        elif kind == "bytes_list" and key == "savers":
            empty = True
        elif kind == "bytes_list" and collection_proto(key) is not None:
            parse = collection_proto(key).FromString
            keep = [b for b in (alive(key, parse, raw) for raw in col.bytes_list.value)
                    if b is not None]
            set_repeated(col.bytes_list.value, keep)
            empty = not keep
        else:
            empty = False
        if empty:
            del meta.collection_def[key]
            emptied.append(key)
    return emptied


def _clean_context_values(ctx, names: set[str]) -> None:
    """Remove, in place, the values of a cond/while context (and of the contexts nested in it)
    that name nodes not in ``names``."""
    values_def = ctx.values_def
    set_repeated(values_def.values, [v for v in values_def.values if op_name(v) in names])
    for k in [k for k, v in values_def.external_values.items()
              if op_name(k) not in names or op_name(v) not in names]:
        del values_def.external_values[k]
    for nested in ctx.nested_contexts:
        inner = nested.cond_ctxt if nested.HasField("cond_ctxt") else nested.while_ctxt
        _clean_context_values(inner, names)


def _queue_runner_ops(runner) -> set[str]:
    """The op names a ``QueueRunnerDef`` needs: its queue, enqueue, close and cancel ops."""
    refs = [runner.queue_name, runner.close_op_name, runner.cancel_op_name,
            *runner.enqueue_op_name]
    return {op_name(r) for r in refs if r}


