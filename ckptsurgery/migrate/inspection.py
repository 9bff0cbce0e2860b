"""Looking inside a checkpoint: its format, variables and their roles, and what its ``.meta`` holds.

Variables are listed from the checkpoint's index (no tensor is read but the step counter), so
inspecting a checkpoint of any size is instant. The ``.meta`` is read as a protobuf; whether this
TensorFlow can import it is answered by looking for op types it does not register and then, in a
fresh graph, by trying the plain ``tf.compat.v1.train.import_meta_graph`` a user would run, so the
report can say why it fails (an unregistered op, a collection naming an op the graph does not
have) instead of crashing.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from ..graphdef.metagraph import frozen, node_index, node_map, op_name, owner_of, shape_text
from ..graphdef.roles import classify
from ..graphdef.saver import VARIABLE_OPS
from ..graphdef.slots import VariableRole, describe
from ..graphdef.walk import reachable
from .family import FamilyReport, recognise

__all__ = ["MetaSummary", "Inspection", "inspect_checkpoint", "import_check"]

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_TRAINING_SCOPES = ("gradients", "Adam", "GradientDescent", "Momentum", "RMSProp", "Adagrad",
                    "Ftrl", "Adadelta", "train", "optimizer", "report_uninitialized_variables",
                    "save", "loss", "Loss", "metrics", "accuracy", "Accuracy", "summaries")
_BOOKKEEPING_OPS = ("NoOp", "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "Const",
                    "ScalarSummary", "HistogramSummary", "MergeSummary", "Placeholder",
                    "PlaceholderWithDefault", "VariableV2", "Variable", "VarHandleOp",
                    "IsVariableInitialized", "VarIsInitializedOp", "Shape", "Size", "Rank")


@dataclass
class MetaSummary:
    """What a ``.meta`` holds, and whether this TensorFlow imports it.

    ``importable`` is None when the import was not tried; ``import_error`` is TensorFlow's own
    message, ``import_explanation`` what it means and what to do.
    """

    path: str
    tf_version: str | None
    n_ops: int
    op_types: dict[str, int]
    collections: dict[str, dict]
    placeholders: list[dict]
    likely_outputs: list[str]
    saver: dict
    devices: list[str]
    unregistered_ops: list[str]
    stale_collection_entries: dict[str, list[str]]
    importable: bool | None = None
    import_error: str | None = None
    import_explanation: str | None = None
    graft_points: list[dict] = field(default_factory=list)
    graft_points_note: str | None = None


@dataclass
class Inspection:
    """A checkpoint as :func:`inspect_checkpoint` sees it; :meth:`as_dict` is the ``--json``
    form, :meth:`lines` the text form."""

    prefix: str
    format: str
    shards: int
    files: list[dict]
    variables: list[dict]
    totals: dict
    optimizers: dict[str, dict]
    global_step: dict | None
    object_based: bool
    meta: MetaSummary | None = None
    roles: dict[str, VariableRole] = field(default_factory=dict, repr=False)
    family: FamilyReport | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("roles")
        out["family"] = self.family.as_dict() if self.family else None
        return out

    def lines(self) -> list[str]:
        fmt = ("V1 single file (the format before TF 0.12)" if self.format == "V1" else
               f"V2 bundle: .index + {self.shards} data shard{'s' if self.shards != 1 else ''}")
        disk = sum(f["bytes"] for f in self.files)
        t = self.totals
        kinds = ", ".join(f"{k} {v['count']} ({v['bytes']:,} B)" for k, v in t["by_kind"].items())
        out = [f"checkpoint   {self.prefix}",
               f"format       {fmt}, {disk:,} bytes on disk"
               + (", TF2 object-based" if self.object_based else ""),
               f"variables    {t['count']} tensors, {t['bytes']:,} bytes: {kinds}",
               "dtypes       " + ", ".join(f"{d} {n}" for d, n in t["by_dtype"].items())]
        if self.optimizers:
            out.append("optimizer    " + "; ".join(
                f"{name}: {o['slots']} slot(s) ({', '.join(o['slot_names'])})"
                + (f", state {', '.join(o['state'])}" if o["state"] else "")
                for name, o in self.optimizers.items()))
        else:
            out.append("optimizer    no slots (saved without optimizer state)")
        sources = Counter(v.get("role_source", "name") for v in self.variables)
        out.append("roles        " + ("read from the graph's ops for "
                                      f"{sources['graph']}, by name for {sources['name']}"
                                      if sources["graph"] else "by name (no .meta, or it shows none)"))
        disagree = [v for v in self.variables if v.get("role_by_name")]
        if disagree:
            out.append(f"disagree     the graph and the names give {len(disagree)} variable(s) "
                       "different roles (the graph's is used):")
            out += [f"               {v['name']}: graph says {v['role']}; name says "
                    f"{v['role_by_name']}" for v in disagree]
        gs = self.global_step
        out.append(f"global_step  {gs['name']} = {gs['value']} ({gs['dtype']})" if gs
                   else "global_step  none")
        if self.family is not None:
            out += self.family.lines()
        out.append("")
        width = max([len(v["name"]) for v in self.variables] + [4])
        out.append(f"  {'NAME':<{width}}  {'SHAPE':<16} {'DTYPE':<8} {'BYTES':>12}  ROLE")
        for v in self.variables:
            out.append(f"  {v['name']:<{width}}  {str(v['shape']):<16} {v['dtype']:<8} "
                       f"{v['bytes']:>12,}  {v['role']}")
        if self.meta is not None:
            out.append("")
            out += _meta_lines(self.meta)
        else:
            out.append("")
            out.append("meta-graph   none (no .meta beside the checkpoint)")
        return out


def inspect_checkpoint(path: str, *, check_import: bool = False,
                       model: str | None = None, config: str | None = None) -> Inspection:
    """Describe the checkpoint at ``path`` (prefix, any of its files, or a folder).

    Args:
        check_import: also try importing the ``.meta`` in a fresh graph (it is never imported
            into the caller's graph) and list its graft points; this loads TensorFlow, which
            nothing else here does for a V2 checkpoint.
        model: ``FILE.py:FUNC`` or ``module:FUNC``: the graph built by that model function
            (:mod:`~ckptsurgery.graph.modelcode`) instead of the ``.meta``; implies
            ``check_import``.
        config: the model family's config file (``bert_config.json``, ``hparams.json``) when
            it is not beside the checkpoint (:func:`~ckptsurgery.migrate.family.recognise`).

    Raises:
        CheckpointNotFoundError, CheckpointCorruptError: see
            :func:`~ckptsurgery.formats.checkpoint.open_checkpoint`.
    """
    from ..formats.checkpoint import open_checkpoint

    ckpt = open_checkpoint(path)
    if model:
        from ..graph.modelcode import meta_graph_from_code

        ckpt, check_import = ckpt.with_meta_graph(meta_graph_from_code(model)), True
    with frozen(ckpt.meta_graph):  # roles and the summary ask the same of the graph
        result = _inspect(ckpt, check_import, model)
    result.family, _ = recognise({k: v.shape for k, v in ckpt.variables.items()},
                                 folder=os.path.dirname(ckpt.prefix), config=config)
    return result


def _inspect(ckpt, check_import: bool, model: str | None = None) -> Inspection:
    infos = dict(ckpt.variables)
    object_based = ckpt.has_tensor(_OBJECT_GRAPH)
    names = list(infos) + ([_OBJECT_GRAPH] if object_based else [])
    roles = classify(names, ckpt.meta_graph)
    variables = []
    for name in sorted(names):
        if name == _OBJECT_GRAPH:
            size = len(ckpt.read(name).item())
            variables.append({"name": name, "shape": [], "dtype": "string", "bytes": size,
                              "role": "bookkeeping"})
            continue
        info = infos[name]
        variables.append({"name": name, "shape": list(info.shape), "dtype": info.dtype,
                          "bytes": info.nbytes, "role": describe(roles[name]),
                          "role_source": roles[name].source}
                         | ({"role_by_name": roles[name].by_name} if roles[name].by_name else {}))
    from ..formats.storage import size

    files = [{"path": p, "bytes": size(p)} for p in ckpt.files.paths]
    result = Inspection(
        prefix=ckpt.prefix, format=ckpt.files.format, shards=len(ckpt.files.data), files=files,
        variables=variables, totals=_totals(variables, roles), optimizers=_optimizers(roles),
        global_step=_global_step(ckpt, roles), object_based=object_based, roles=roles,
    )
    if model:
        result.meta = summarize_meta(ckpt.meta_graph, f"(built by {model})", check_import=True)
    elif ckpt.files.meta:
        result.meta = summarize_meta(ckpt.meta_graph, ckpt.files.meta, check_import=check_import)
    return result


def summarize_meta(meta, path: str, *, check_import: bool = False) -> MetaSummary:
    """A :class:`MetaSummary` of a parsed ``MetaGraphDef`` read from ``path``."""
    with frozen(meta):
        return _summarize_meta(meta, path, check_import)


def _summarize_meta(meta, path: str, check_import: bool) -> MetaSummary:
    from ..graphdef.collections import collection_items, collection_kind
    from ..graphdef.metagraph import tf_version, unregistered_ops

    index = node_index(meta)
    summary = MetaSummary(
        path=path, tf_version=tf_version(meta), n_ops=len(index.names),
        op_types=dict(Counter(index.ops).most_common()),
        collections={k: {"kind": collection_kind(meta, k),
                         "items": collection_items(meta, k)}
                     for k in sorted(meta.collection_def)},
        placeholders=_placeholders(meta), likely_outputs=_likely_outputs(meta),
        saver=_saver_summary(meta), devices=sorted(set(index.devices) - {""}),
        unregistered_ops=unregistered_ops(meta),
        stale_collection_entries=_stale_entries(meta),
    )
    if check_import or summary.unregistered_ops:
        summary.importable, summary.import_error, summary.import_explanation = import_check(
            meta, summary)
        if not summary.unregistered_ops:  # ckptsurgery's import drops stale entries first
            from ..graph.graftpoints import find_graft_points

            points, summary.graft_points_note = find_graft_points(meta)
            summary.graft_points = [p.as_dict() for p in points]
    return summary


def import_check(meta, summary: MetaSummary | None = None) -> tuple[bool, str | None, str | None]:
    """Whether plain ``tf.compat.v1.train.import_meta_graph`` imports ``meta`` (tried in a fresh
    graph), TensorFlow's error if not, and an explanation.

    Returns:
        ``(importable, error, explanation)``.
    """
    from ..errors import first_line
    from ..formats.protos import to_tensorflow
    from ..graphdef.metagraph import tf_version, unregistered_ops

    written = f"written by TensorFlow {tf_version(meta) or 'unknown (before 1.0?)'}"
    missing = summary.unregistered_ops if summary else unregistered_ops(meta)
    if missing:  # known without importing TensorFlow (see unregistered_ops)
        return False, f"unregistered op(s): {', '.join(missing)}", (
            f"the graph ({written}) uses op(s) today's TensorFlow no longer registers; "
            "inspect, diff, rename, strip, cast and convert do not import it and still work; "
            "'ckptsurgery salvage CKPT --drop-unregistered --out NEW' writes one that imports")
    import tensorflow as tf

    stale = summary.stale_collection_entries if summary else _stale_entries(meta)
    try:
        with tf.Graph().as_default():
            tf.compat.v1.train.import_meta_graph(to_tensorflow(meta), clear_devices=True)
    except Exception as e:  # TF raises KeyError, ValueError, TypeError, OpErrors here
        error = f"{type(e).__name__}: {first_line(e)}"
        if stale:
            key, refs = next(iter(stale.items()))
            return False, error, (
                f"collection '{key}' names {', '.join(repr(r) for r in refs[:3])}, which "
                f"{'is' if len(refs) == 1 else 'are'} not in the graph ({written}; TFLearn, for "
                "one, saves Python objects in collections and their names point nowhere); "
                "import_meta_graph looks every collection entry up and fails; "
                "'ckptsurgery salvage CKPT --out NEW' writes a copy whose .meta imports (so do "
                "rename, strip and cast, which drop such entries)")
        return False, error, (f"TensorFlow {tf.__version__} rejects the graph ({written}); "
                              "'ckptsurgery salvage CKPT --out NEW' writes a copy whose .meta "
                              "imports where it can (devices, stale collections, unregistered "
                              "ops)")
    return True, None, None


def _totals(variables: list[dict], roles: dict[str, VariableRole]) -> dict:
    by_kind: dict[str, dict] = {}
    by_dtype: Counter = Counter()
    for v in variables:
        kind = roles[v["name"]].kind
        entry = by_kind.setdefault(kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += v["bytes"]
        by_dtype[v["dtype"]] += 1
    return {"count": len(variables), "bytes": sum(v["bytes"] for v in variables),
            "by_kind": by_kind, "by_dtype": dict(by_dtype.most_common())}


def _optimizers(roles: dict[str, VariableRole]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, role in roles.items():
        if role.kind not in ("slot", "optimizer"):
            continue
        entry = out.setdefault(role.optimizer or "unknown",
                               {"slots": 0, "slot_names": [], "state": []})
        if role.kind == "slot":
            entry["slots"] += 1
            if role.slot not in entry["slot_names"]:
                entry["slot_names"].append(role.slot)
        else:
            entry["state"].append(name)
    return out


def _global_step(ckpt, roles: dict[str, VariableRole]) -> dict | None:
    steps = [n for n, r in roles.items() if r.kind == "step" and n in ckpt.variables]
    if not steps:
        return None
    name = next((n for n in steps if "global_step" in n.lower()), steps[0])
    info = ckpt.variables[name]
    value = ckpt.read(name) if not info.shape else None
    if value is not None:
        value = value.item()
        value = int(value) if float(value).is_integer() else value
    return {"name": name, "value": value, "dtype": info.dtype}


def _placeholders(meta) -> list[dict]:
    from ..graphdef.metagraph import placeholder_shape, placeholders

    out = []
    for name, dtype in placeholders(meta).items():
        shape = placeholder_shape(meta, name)
        out.append({"name": name, "dtype": dtype, "shape": None if shape is None else list(shape)})
    return out


def _stale_entries(meta) -> dict[str, list[str]]:
    """Collection entries (node lists) naming ops the graph does not have."""
    names = node_map(meta)
    stale = {}
    for key in sorted(meta.collection_def):
        col = meta.collection_def[key]
        if col.HasField("node_list"):
            refs = [v for v in col.node_list.value if op_name(v) not in names]
            if refs:
                stale[key] = refs
    return stale


def _likely_outputs(meta) -> list[str]:
    """The model's inference outputs (:func:`~ckptsurgery.graph.graftpoints.inference_outputs`);
    without any, the first 8
    ops that end the forward pass: what depends on a variable outside training scopes, is not a
    variable's own op (the saver's ``w/Read/ReadVariableOp``), no optimizer's update, and feeds
    nothing but losses and metrics."""
    from ..graph.graftpoints import inference_outputs

    found = inference_outputs(meta)
    if found:
        return found[:8]
    index = node_index(meta)
    forward, readers, variables = _forward_nodes(meta)
    owner = owner_of(variables)
    loss_heads: dict[str, bool] = {}

    def loss(name: str) -> bool:
        head = name.partition("/")[0]
        if head not in loss_heads:
            loss_heads[head] = _loss_scope(head)
        return loss_heads[head]

    ends = []
    for i in sorted(index.position[name] for name in forward):  # in graph order
        name = index.names[i]
        if (index.ops[i] not in _BOOKKEEPING_OPS and not _is_update(index.ops[i])
                and not any(c in forward and not loss(c) for c in readers.get(name, ()))
                and owner(name) is None and not loss(name)):
            ends.append(f"{name}:0")
            if len(ends) == 8:
                break
    return ends


def _forward_nodes(meta) -> tuple[set[str], dict[str, list[str]], set[str]]:
    """The nodes that depend on a variable through data edges, outside training scopes; who
    reads whom among the nodes that walk may enter; and the variables. Only those nodes'
    inputs are read: a third of the nodes of a graph trained with Adam (the rest is gradients,
    optimizer, saver)."""
    index = node_index(meta)
    heads = [name.partition("/")[0] for name in index.names]
    training = {head: _training_scope(head) for head in set(heads)}
    skipped = set(_BOOKKEEPING_OPS[:6])
    enters = [i for i, (head, op) in enumerate(zip(heads, index.ops, strict=True))
              if not training[head] and op not in skipped]
    nodes, names = meta.graph_def.node, index.names
    readers: dict[str, list[str]] = {}
    for i in enters:
        for ref in nodes[i].input:
            if ref[:1] != "^":
                readers.setdefault(op_name(ref) if ":" in ref else ref, []).append(names[i])
    variables = {names[i] for i in index.of_type(*VARIABLE_OPS)}
    entered = {names[i] for i in enters}
    forward = reachable(variables, lambda name: readers.get(name, ()),
                        enter=lambda name: name in entered)
    return forward - variables, readers, variables


def _is_update(op: str) -> bool:
    """An optimizer's update of a variable (``ApplyAdam``, ``ResourceApplyAdam``...)."""
    return op.startswith(("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply"))


def _loss_scope(name: str) -> bool:
    """Names of losses and metrics, which consume a model's outputs but are not outputs."""
    head = name.split("/", 1)[0].lower()
    return any(w in head for w in ("loss", "entropy", "xent", "accuracy", "eval", "metric",
                                   "mean_squared_error"))


def _training_scope(name: str) -> bool:
    head = name.split("/", 1)[0]
    return head in _TRAINING_SCOPES or head.startswith(("gradients", "save_", "train"))


def _saver_summary(meta) -> dict:
    from ..graphdef.saver import UnsupportedSaverError, saved_variables, saver_scope

    if not meta.HasField("saver_def"):
        return {"present": False}
    sd = meta.saver_def
    out = {"present": True, "scope": saver_scope(meta),
           "version": type(sd).CheckpointFormatVersion.Name(sd.version),
           "sharded": bool(sd.sharded)}
    try:
        out["tensors"] = len(saved_variables(meta))
    except UnsupportedSaverError as e:
        out["tensors"] = None
        out["note"] = str(e)
    return out


def _meta_lines(m: MetaSummary) -> list[str]:
    saver = m.saver
    saver_text = ("no saver" if not saver.get("present") else
                  f"saver {saver['version']}{', sharded' if saver['sharded'] else ''}, "
                  f"{saver.get('tensors')} tensors")
    out = [f"meta-graph   {m.path}: {m.n_ops} ops, written by TensorFlow "
           f"{m.tf_version or 'unknown (before 1.0?)'}, {saver_text}"]
    if m.importable is None:
        out.append("imports      not checked (--check-import tries it)")
    elif m.importable:
        out.append("imports      yes, with plain tf.compat.v1.train.import_meta_graph")
    else:
        out.append(f"imports      NO: {m.import_error}")
        if m.import_explanation:
            out.append(f"             {m.import_explanation}")
    if m.devices:
        out.append(f"devices      {', '.join(m.devices)} (cleared on import by ckptsurgery)")
    inputs = ", ".join(f"{p['name']} {p['dtype']} {shape_text(p['shape'])}"
                       for p in m.placeholders[:8]) or "none"
    if len(m.placeholders) > 8:
        inputs += f", ... ({len(m.placeholders)} in all)"
    out.append(f"inputs       (placeholders) {inputs}")
    out.append(f"outputs      (inference) {', '.join(m.likely_outputs) or 'none found'}")
    if m.graft_points:
        out.append("graft points (nearest to the output first; add --dense NAME:UNITS and --out)")
        for p in m.graft_points:
            out.append(f"  --at {p['at']:<36} {shape_text(p['shape']):<18} {' '.join(p['flags'])}")
    elif m.graft_points_note:
        out.append(f"graft points none: {m.graft_points_note}")
    out.append("collections")
    for key, col in m.collections.items():
        items = col["items"]
        shown = ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")
        stale = m.stale_collection_entries.get(key)
        note = f"  [not in the graph: {', '.join(stale)}]" if stale else ""
        out.append(f"  {key} ({col['kind']}): {shown}{note}")
    top = list(m.op_types.items())[:15]
    out.append("op types     " + ", ".join(f"{op} {n}" for op, n in top)
               + (f", ... ({len(m.op_types)} types)" if len(m.op_types) > 15 else ""))
    return out
