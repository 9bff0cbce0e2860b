"""Rewriting a ``.meta`` so that it still imports and restores a renamed, stripped or cast checkpoint.

Works on the ``MetaGraphDef`` protobuf only (never imports it), so graphs this TensorFlow cannot
import are rewritten too, and keeps what it does not understand. Three edits, in this order:

* **Dropped variables** go with the nodes they *own* (every node under the variable's name
  scope, such as ``w/read``, ``w/Assign``, ``w/Initializer/...``; a node belongs to the longest
  variable name it starts with, so ``w/Adam/read`` belongs to ``w/Adam``) and with whatever uses
  them, transitively: ``ApplyAdam`` ops, then the train op. A control edge from a node owned by a
  dropped variable is cut instead (``init`` loses ``^w/Adam/Assign`` and lives on).
* **Renamed variables** take their owned nodes along (``weights/read`` becomes ``kernel/read``),
  and so do the optimizer ops that update them (``Adam/update_weights/ApplyAdam``);
  inputs, ``_class`` colocation (``loc:@...``), collections (node lists, ``VariableDef`` fields,
  cond/while contexts) and signatures follow.
* **The saver** is rebuilt over the variables kept (:func:`~ckptsurgery.graphdef.saver.replace_saver`),
  with the new keys and, where the checkpoint now stores another dtype, ``Cast`` ops: the graph's
  variables keep their dtype, so a model cast to float16 on disk still computes in float32.

Collection entries naming nodes that no longer exist, or never did (TFLearn's ``trainops`` names
an op ``Adam`` that is not in its graph, which is why ``import_meta_graph`` fails on it), are
dropped, so the output imports in plain TensorFlow where the input did not.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import SelectionError, UserError, nearest
from ..formats.metafile import CONTEXT_COLLECTIONS, VARIABLE_COLLECTIONS, collection_proto
from .collections import drop_stale_collection_entries
from .metagraph import frozen, node_index, node_map, op_name, owner_of, set_repeated, thaw
from .saver import VARIABLE_OPS, add_saver, saved_variables, saver_nodes, saver_scope, saver_tensors

__all__ = ["MetaRewrite", "rewrite_meta_graph"]

@dataclass
class MetaRewrite:
    """What :func:`rewrite_meta_graph` did: the variables and ops it removed, the ops it
    renamed (``{old: new}``), the collections it emptied, the new saver's scope and what it
    restores."""

    removed_variables: list[str] = field(default_factory=list)
    removed_ops: list[str] = field(default_factory=list)
    renamed_ops: dict[str, str] = field(default_factory=dict)
    removed_collections: list[str] = field(default_factory=list)
    saver_scope: str = ""
    #: What the new saver restores: ``(key, dtype name, shape)``, as
    #: :func:`~ckptsurgery.graphdef.saver.saver_tensors` reads it from the rewritten graph
    #: (None when it cannot be read).
    restored: list[tuple] | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {
            "removed_variables": self.removed_variables,
            "removed_ops": len(self.removed_ops),
            "renamed_ops": len(self.renamed_ops),
            "removed_collections": self.removed_collections,
            "saver_scope": self.saver_scope,
        }


def rewrite_meta_graph(meta, targets: dict[str, str | None], *,
                       rename: Callable[[str], str] | None = None,
                       stored_dtypes: dict[str, int] | None = None, in_place: bool = False):
    """A copy of ``meta`` that restores the checkpoint a rewrite produces.

    Args:
        meta: the input ``MetaGraphDef`` (not modified, unless ``in_place``).
        targets: every checkpoint key of the input to its key in the output, None if dropped.
            Keys the saver restores but ``targets`` does not list are kept as they are.
        rename: applied to the names of variable ops (with their owned nodes); None renames
            nothing. It is the same function that made ``targets``, so graph and checkpoint agree.
        stored_dtypes: ``{output key: DataType enum}`` for keys stored in another dtype than
            their variable's.
        in_place: rewrite ``meta`` itself and return it, when the caller has no further use
            for the input: no second graph is held (on a graph of 100,000s of nodes a copy is
            100s of MB), and any memo of ``meta`` is ended (:func:`thaw`).

    Returns:
        ``(new_meta, MetaRewrite)``.

    Raises:
        UserError: a rename makes two ops share a name, or a kept variable's initializer reads a
            dropped one.
        UnsupportedSaverError: the saver saves something other than variables.
    """
    stored_dtypes = stored_dtypes or {}
    with frozen(meta):
        saved = saved_variables(meta)
        by_node: dict[str, list] = defaultdict(list)
        for v in saved:
            by_node[v.node].append(v)
        dropped = {node for node, vs in by_node.items()
                   if all(v.key in targets and targets[v.key] is None for v in vs)}
        saver = saver_nodes(meta)
        index = node_index(meta)
        variables = {index.names[i] for i in index.of_type(*VARIABLE_OPS)} - saver
        # No node outside the saver reads one of its nodes, so a walk from the dropped
        # variables that enters the saver stays there: what it reaches there goes anyway.
        removed, cut = _dependents_of(meta, dropped, variables)
        removed -= saver
        gone = removed | saver
        new, cut_nodes = _without(meta, gone, cut, in_place)
    had_savers = "savers" in new.collection_def
    info = MetaRewrite(removed_variables=sorted(dropped), removed_ops=sorted(removed))
    for node in cut_nodes:  # control edges from dropped variables
        set_repeated(node.input, [i for i in node.input if op_name(i) not in removed])
    _check_initializers(new, removed)
    _drop_dead_references(new, removed)

    renames = _node_renames(new, rename, variables - dropped) if rename else {}
    if renames:
        _apply_renames(new, renames, targets)
    info.renamed_ops = renames

    kept = []
    for v in saved:
        key = targets.get(v.key, v.key)
        if key is None:
            continue
        stored = stored_dtypes.get(key, v.stored_dtype)
        kept.append(replace(v, key=key, node=renames.get(v.node, v.node),
                            stored_dtype=stored if stored not in (None, v.dtype) else None))
    index = index.after(gone, renames)  # new's nodes, without a pass over them
    start = len(index.names)
    info.saver_scope = add_saver(new, kept, saver_scope(meta), index.names)  # the old one is gone
    index.extend(new.graph_def.node[start:])
    info.removed_collections = [k for k in drop_stale_collection_entries(new, set(index.names))
                                if k != "savers"]
    if had_savers:
        new.collection_def["savers"].bytes_list.value.append(new.saver_def.SerializeToString(deterministic=True))
    with frozen(new, index):
        try:
            info.restored = saver_tensors(new)
        except Exception:  # a graph carried over damaged: the read-back parses and reports it
            info.restored = None
    return new, info


def _dependents_of(meta, dropped: set[str], variables: set[str]) -> tuple[set[str], set[str]]:
    """The nodes that go with the ``dropped`` variable ops: their owned nodes and whatever uses
    them, transitively; and the nodes that stay but lose a control input from an owned node.

    Returns:
        ``(removed, cut)``, op names.
    """
    if not dropped:
        return set(), set()
    owner = owner_of(variables)
    heads = {v.partition("/")[0] for v in dropped}  # a cheap test first: most names fail it
    owned_by_dropped = {name for name in node_index(meta).names
                        if name.partition("/")[0] in heads and owner(name) in dropped}
    removed, cut = set(owned_by_dropped), set()
    while _spread(meta, removed, owned_by_dropped, cut):
        pass
    return removed, cut - removed


def _spread(meta, removed: set[str], owned: set[str], cut: set[str]) -> bool:
    """One pass over the nodes in graph order: add to ``removed`` each node with a data input
    from a removed node or a control input from a removed node not ``owned`` (one from an
    owned node goes into ``cut``). Graph order is creation order, where inputs come first,
    so one pass finds nearly everything, and it makes no reverse map of all edges (the cost
    on a big graph). Returns whether another pass is needed: a node removed in this one is
    read by a node before it (a loop's back edge, an added control input)."""
    index = node_index(meta)
    position = index.position
    behind = []  # inputs from a node further on: (the node reading, the node read)
    for i, (name, node) in enumerate(zip(index.names, meta.graph_def.node, strict=True)):
        if name in removed:
            continue
        for ref in node.input:
            control = ref[:1] == "^"
            src = ref[1:] if control else op_name(ref) if ":" in ref else ref
            if src in removed:
                if control and src in owned:
                    cut.add(name)
                    continue
                removed.add(name)
                break
            if position.get(src, -1) > i:
                behind.append((name, src))
    return any(src in removed and name not in removed for name, src in behind)


def _without(meta, gone: set[str], cut: set[str], in_place: bool):
    """``(meta without the nodes named in gone, its nodes named in cut)``: ``meta`` itself,
    edited after its memo is ended (:func:`~.metagraph.thaw`), or a copy."""
    if not in_place:
        new = _copy_without(meta, gone)
        return new, [node for node in new.graph_def.node if node.name in cut] if cut else []
    index, nodes = node_index(meta), node_map(meta)
    cut_nodes = [nodes[name] for name in cut]  # the same objects while others are removed
    positions = sorted(index.position[name] for name in gone)
    thaw(meta)
    _remove_nodes(meta, gone, positions)
    return meta, cut_nodes


def _copy_without(meta, gone: set[str]):
    """A copy of ``meta`` without the nodes named in ``gone`` (only the kept nodes are copied:
    on a big graph, copying all and deleting is twice the work and memory)."""
    new = type(meta)()
    for desc, value in meta.ListFields():
        if desc.name != "graph_def":
            _copy_field(new, desc, value)
    for desc, value in meta.graph_def.ListFields():
        if desc.name != "node":
            _copy_field(new.graph_def, desc, value)
    new.graph_def.node.extend(n for n in meta.graph_def.node if n.name not in gone)
    return new


def _remove_nodes(meta, gone: set[str], positions: list[int]) -> None:
    """Remove the nodes named in ``gone``, at ``positions`` (sorted), from ``meta``, in place,
    without copying any node: a few runs (a saver is one, at the end) are deleted as slices;
    many are moved to the end by a stable sort (the others keep their order) and deleted
    there."""
    nodes = meta.graph_def.node
    runs: list[list[int]] = []
    for i in positions:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    if len(runs) <= _FEW_RUNS:
        for start, stop in reversed(runs):
            del nodes[start:stop]
        return
    nodes.sort(key=lambda node: node.name in gone)
    del nodes[len(nodes) - len(positions):]


_FEW_RUNS = 64  # each slice deletion moves the nodes after it


def _copy_field(msg, desc, value) -> None:
    if desc.type != desc.TYPE_MESSAGE:
        if _repeated(desc):
            getattr(msg, desc.name).extend(value)
        else:
            setattr(msg, desc.name, value)
    elif _repeated(desc):  # repeated messages and maps
        getattr(msg, desc.name).MergeFrom(value)
    else:
        getattr(msg, desc.name).CopyFrom(value)


def _check_initializers(meta, removed: set[str]) -> None:
    """A kept variable whose initializer was removed (it read a dropped one) cannot import."""
    col = meta.collection_def.get("variables") if "variables" in meta.collection_def else None
    if not removed or col is None or not col.HasField("bytes_list"):
        return
    parse = collection_proto("variables").FromString
    for raw in col.bytes_list.value:
        vdef = parse(raw)
        name = op_name(vdef.variable_name)
        if name in removed:
            continue
        for ref in (vdef.initializer_name, vdef.snapshot_name):
            if ref and op_name(ref) in removed:
                raise UserError(
                    f"variable '{name}' is kept but its initializer '{op_name(ref)}' reads a "
                    f"dropped variable; drop it too (--drop '^{name}$') or keep what it reads"
                )


def _drop_dead_references(meta, removed: set[str]) -> None:
    """Remove references to ``removed`` nodes that are not graph edges: colocation attrs and
    signatures (cond/while contexts are :func:`drop_stale_collection_entries`' to clean)."""
    if not removed:
        return
    for node in meta.graph_def.node:
        _map_class_attr(node, lambda n: None if n in removed else n)
    for name in list(meta.signature_def):
        sig = meta.signature_def[name]
        refs = [t.name for t in list(sig.inputs.values()) + list(sig.outputs.values())]
        if any(op_name(r) in removed for r in refs if r):
            del meta.signature_def[name]


def _node_renames(meta, rename: Callable[[str], str], variables: set[str]) -> dict[str, str]:
    """``{old op name: new op name}`` for renamed variables and the nodes they own.

    Raises:
        UserError: a new name is not a valid op name or is taken by another op.
    """
    new_names = {v: rename(v) for v in variables}
    new_names = {v: n for v, n in new_names.items() if n != v}
    if not new_names:
        return {}
    owner = owner_of(variables)
    renames = {}
    for node in meta.graph_def.node:
        o = owner(node.name)
        if o in new_names:
            renames[node.name] = new_names[o] + node.name[len(o):]
        elif "update_" in node.name:  # an optimizer's update of it: Adam/update_<var>/ApplyAdam
            renamed = _rename_update_scope(node.name, new_names, owner)
            if renamed:
                renames[node.name] = renamed
    valid = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
    taken = {n.name for n in meta.graph_def.node} - set(renames)
    seen: dict[str, str] = {}
    for old, new in renames.items():
        if not valid.match(new):
            raise UserError(f"renaming op '{old}' to '{new}' gives an invalid TensorFlow op name; "
                            "change the --map replacement")
        if new in taken or new in seen:
            other = seen.get(new, new)
            near = nearest(new, taken)
            raise SelectionError(
                f"renaming op '{old}' to '{new}' collides with op '{other}'"
                + (f" (near: {', '.join(near)})" if near else "")
                + "; make the --map patterns more specific"
            )
        seen[new] = old
    return renames


def _rename_update_scope(name: str, new_names: dict[str, str], owner) -> str | None:
    """``name`` with its ``update_<variable>`` scope (how optimizers name the ops that update a
    variable) following the variable's rename, or None."""
    at = name.find("update_")
    while at >= 0:
        if at == 0 or name[at - 1] == "/":
            rest = name[at + len("update_"):]
            variable = owner(rest)
            if variable in new_names:
                return name[:at] + "update_" + new_names[variable] + rest[len(variable):]
        at = name.find("update_", at + 1)
    return None


def _apply_renames(meta, renames: dict[str, str], targets: dict[str, str | None]) -> None:
    """Rename, in place, nodes and every reference to them; partition full names (checkpoint
    keys) follow ``targets``."""
    def ref(r: str) -> str:
        return _rename_ref(r, renames)

    for node in meta.graph_def.node:
        node.name = renames.get(node.name, node.name)
        inputs = [ref(i) for i in node.input]
        set_repeated(node.input, inputs)
        _map_class_attr(node, lambda n: renames.get(n, n))
    for key in list(meta.collection_def):
        col = meta.collection_def[key]
        kind = col.WhichOneof("kind")
        if kind == "node_list":
            values = [ref(v) for v in col.node_list.value]
            set_repeated(col.node_list.value, values)
        elif kind == "bytes_list" and key in VARIABLE_COLLECTIONS:
            values = []
            for raw in col.bytes_list.value:
                vdef = collection_proto("variables").FromString(raw)
                for f in ("variable_name", "initial_value_name", "initializer_name",
                          "snapshot_name"):
                    if getattr(vdef, f):
                        setattr(vdef, f, ref(getattr(vdef, f)))
                full = vdef.save_slice_info_def.full_name
                if full and targets.get(full):
                    vdef.save_slice_info_def.full_name = targets[full]
                values.append(vdef.SerializeToString(deterministic=True))
            set_repeated(col.bytes_list.value, values)
        elif kind == "bytes_list" and key in CONTEXT_COLLECTIONS:
            proto = collection_proto(key)
            values = []
            for raw in col.bytes_list.value:
                ctx = proto.FromString(raw)
                _map_strings(ctx, ref)
                values.append(ctx.SerializeToString(deterministic=True))
            set_repeated(col.bytes_list.value, values)
    for name in meta.signature_def:
        sig = meta.signature_def[name]
        for info in list(sig.inputs.values()) + list(sig.outputs.values()):
            if info.name:
                info.name = ref(info.name)


def _rename_ref(ref: str, renames: dict[str, str]) -> str:
    """``ref`` (``name``, ``^name`` or ``name:k``) with its op name renamed."""
    caret = "^" if ref.startswith("^") else ""
    name = op_name(ref)
    if name not in renames:
        return ref
    rest = ref[len(caret) + len(name):]
    return caret + renames[name] + rest


def _map_class_attr(node, fn: Callable[[str], str | None]) -> None:
    """Apply ``fn`` to the op names in ``node``'s ``_class`` attr; None removes the entry."""
    if "_class" not in node.attr:
        return
    values = []
    for raw in node.attr["_class"].list.s:
        text = raw.decode()
        if text.startswith("loc:@"):
            mapped = fn(text[len("loc:@"):])
            if mapped is None:
                continue
            text = "loc:@" + mapped
        values.append(text.encode())
    if not values:
        del node.attr["_class"]
        return
    set_repeated(node.attr["_class"].list.s, values)


def _map_strings(msg, fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to every string field of a proto, recursively (maps included)."""
    for desc, value in msg.ListFields():
        if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
            items = [(fn(k), fn(v) if isinstance(v, str) else v) for k, v in value.items()]
            value.clear()
            for k, v in items:
                if isinstance(v, str):
                    value[k] = v
                else:
                    value[k].CopyFrom(v)
        elif desc.type == desc.TYPE_MESSAGE:
            for sub in (value if _repeated(desc) else [value]):
                _map_strings(sub, fn)
        elif desc.type == desc.TYPE_STRING:
            if _repeated(desc):
                mapped = [fn(v) for v in value]
                set_repeated(value, mapped)
            else:
                setattr(msg, desc.name, fn(value))


def _repeated(desc) -> bool:
    flag = getattr(desc, "is_repeated", None)  # protobuf >= 5; ``label`` is deprecated there
    return flag if flag is not None else desc.label == desc.LABEL_REPEATED


