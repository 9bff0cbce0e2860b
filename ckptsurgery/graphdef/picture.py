"""Pictures of a graph as its layers: each layer a box, the tensors between them as edges with
their shapes, each layer coloured by what a graft does with it (reused, frozen, trained, new,
pruned).

A layer is what :func:`~ckptsurgery.graphdef.layergroups.layer_groups` finds: an op that reads a
weight with its bias, normalisation and activation, scoped or not (``Variable_3``'s ``MatMul`` is
a layer as much as ``dnn/hidden1``). Edges follow data: from the ops of a layer back through
whatever lies between layers (activations, dropout, reshapes, ``cond``'s ``Switch``/``Merge``,
loops, identities, casts) to the next layer or input: a placeholder, or the queue or iterator an
Estimator reads its batches from. A placeholder that only selects
a mode (a ``bool`` switch, a scalar keep probability) is drawn as such, dashed and without a
shape, and never stands in for the data path. :func:`layer_graph` reads a ``GraphDef`` (no live
graph needed: shapes come from the ``_output_shapes`` attrs that
``as_graph_def(add_shapes=True)`` and most saved graphs carry); :func:`to_dot` writes Graphviz's
DOT language.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .layergroups import layer_groups
from .metagraph import op_name
from .roles import classify
from .slots import classify_by_name

__all__ = ["ROLES", "FORMATS", "LayerGraph", "layer_graph", "to_dot", "write_picture"]

#: Picture formats by file extension: DOT always; SVG and PNG through Graphviz's ``dot``.
FORMATS = (".dot", ".svg", ".png")

#: Roles of a layer in a graft, and how each is drawn (fill colour, border style).
ROLES = {
    "input": ("#ffffff", "solid"),
    "mode": ("#ffffff", "dashed"),
    "model": ("#cfe2f3", "solid"),
    "reused": ("#cfe2f3", "solid"),
    "frozen": ("#d9d9d9", "solid"),
    "trained": ("#fce5cd", "solid"),
    "new": ("#d9ead3", "bold"),
    "pruned": ("#f4cccc", "dashed"),
}
_PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")
# Where an Estimator's or input pipeline's batches enter the graph: drawn as inputs.
_INPUT_OPS = frozenset({"QueueDequeueV2", "QueueDequeueManyV2", "QueueDequeueUpToV2",
                        "QueueDequeue", "QueueDequeueMany", "QueueDequeueUpTo", "IteratorGetNext",
                        "IteratorGetNextSync", "ParseExample", "ParseExampleV2",
                        "ParseSingleExample"})
_VARIABLE_OPS = {"Variable", "VariableV2", "VarHandleOp"}
_MAX_WALK = 5000  # ops visited per edge search: the ops between two layers are few
_PASS_THROUGH = frozenset({"Identity", "RefIdentity", "ReadVariableOp", "Enter", "RefEnter",
                           "Cast"})
_SHAPE_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank"})
_DT_BOOL = 10
_DT_FLOATS = frozenset({1, 2, 14, 19})  # float32, float64, bfloat16, float16


@dataclass
class LayerGraph:
    """Layers (``{name: role}``, with each layer's weights and optimizer slots) and the edges
    between them (``{(from, to): shape text}``; a mode edge, from a switch, has no shape and is
    in ``modes``; a ``stop_gradient`` edge is in ``cut``)."""

    roles: dict[str, str] = field(default_factory=dict)
    variables: dict[str, list[str]] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    cut: set[tuple[str, str]] = field(default_factory=set)
    modes: set[tuple[str, str]] = field(default_factory=set)
    ops: dict[str, list[str]] = field(default_factory=dict)


def layer_graph(graph, roles: dict[str, str] | None = None, *, around: str | None = None,
                depth: int = 2, pruned: list[str] = ()) -> LayerGraph:
    """The layers of ``graph_def`` and how data flows between them.

    Args:
        graph: a ``MetaGraphDef`` (its ops then also tell optimizer slots from weights), or a
            ``GraphDef`` (a live graph's ``as_graph_def(add_shapes=True)``).
        roles: ``{variable name: role}`` (a key of :data:`ROLES`); a layer takes the role of its
            variables (``new`` over ``trained`` over ``frozen`` over ``reused``). Without it,
            layers are ``model``.
        around: keep only layers within ``depth`` edges of the layer holding this op or tensor.
        pruned: variables a graft removed: drawn as ``pruned`` layers with no edges.
    """
    graph_def = graph.graph_def if hasattr(graph, "graph_def") else graph
    nodes = {n.name: n for n in graph_def.node}
    out = LayerGraph()
    owner: dict[str, str] = {}
    names = [n for n, node in nodes.items() if node.op in _VARIABLE_OPS]
    kinds = classify(names, graph) if graph is not graph_def else classify_by_name(names)
    anchors: dict[str, set[str]] = {}
    for layer in layer_groups(graph):
        if all(kinds[v].kind != "model" for v in layer.variables if v in kinds):
            continue  # optimizer state read by its own updates (beta1_power), a step counter
        anchors[layer.name] = set(layer.anchors)
        out.variables[layer.name] = list(layer.variables)
        out.ops[layer.name] = list(layer.ops)
        owner.update({o: layer.name for o in layer.ops if o not in owner})
        if roles is None:
            out.roles[layer.name] = "model"
        else:
            given = {roles.get(v, "reused") for v in layer.variables}
            out.roles[layer.name] = next(
                (r for r in ("new", "trained", "frozen", "reused") if r in given), "reused")
    layer_of = {v: layer for layer, own in out.variables.items() for v in own}
    for role in kinds.values():
        layer = layer_of.get(role.primary) if role.kind == "slot" else None
        if layer is not None:
            out.slots[layer] = out.slots.get(layer, 0) + 1
    reads = _value_reads(nodes)
    for layer, ops in out.ops.items():
        for src, ref, mode, crossed in _sources(ops, anchors[layer], layer, nodes, owner, reads):
            key = (src, layer)
            if mode:
                out.modes.add(key)
                out.edges.setdefault(key, "")
            else:
                out.modes.discard(key)
                if not out.edges.get(key):
                    out.edges[key] = _shape_of(nodes, ref)
            if src not in out.roles:
                out.roles[src] = "mode" if mode else "input"
            elif not mode and out.roles[src] == "mode":
                out.roles[src] = "input"
            if crossed:
                out.cut.add(key)
    for name in pruned:
        layer = name.rsplit("/", 1)[0] if "/" in name else name
        if classify_by_name([name])[name].kind == "model" and \
                out.roles.setdefault(layer, "pruned") == "pruned":
            out.variables.setdefault(layer, []).append(name)
    if around is not None:
        ref = op_name(around)
        start = owner.get(ref) or (ref if ref in out.roles else None)
        if start is not None:
            keep = {start}
            for _ in range(depth):
                keep |= {b for a, b in out.edges if a in keep} | {a for a, b in out.edges
                                                                 if b in keep}
            out.roles = {k: v for k, v in out.roles.items() if k in keep or v == "pruned"}
            out.edges = {e: s for e, s in out.edges.items() if e[0] in keep and e[1] in keep}
    return out


def _sources(ops: list[str], anchors: set[str], layer: str, nodes, owner, reads: set[str]):
    """Where the data of ``layer`` (its ``ops``) comes from: ``(other layer or placeholder,
    the tensor that leaves it, through a mode input only, through a StopGradient)`` for each,
    found by walking back over data inputs through the ops that belong to no layer. A path
    into a ``Switch``'s predicate, or from a placeholder that is a switch (``bool``, scalar or
    of unknown rank), is a mode path. Data placeholders count only on the way into the
    layer's weight-reading ``anchors``: the labels that a loss after the last layer reads are
    not its input. A variable's reads (``reads``) and scalars (a summary, a loss term) carry no
    layer's output."""
    own = set(ops)
    found: dict[str, tuple[str, bool, bool]] = {}
    queue: deque = deque()
    seen: set[tuple[str, bool, bool, bool]] = set()
    for name in ops:
        for ref, mode in _data_inputs(nodes.get(name)):
            if op_name(ref) not in own:
                queue.append((ref, mode, False, name in anchors))
    steps = 0
    while queue and steps < _MAX_WALK:
        ref, mode, crossed, anchored = queue.popleft()
        name = op_name(ref)
        node = nodes.get(name)
        if node is None or name in reads or (name, mode, crossed, anchored) in seen:
            continue
        seen.add((name, mode, crossed, anchored))
        steps += 1
        crossed = crossed or node.op == "StopGradient"
        src = owner.get(name)
        if src == layer:
            continue  # back into the layer itself: a loop's recurrence
        if src is None and (node.op in _PLACEHOLDERS or node.op in _INPUT_OPS):
            switch = node.op in _PLACEHOLDERS and _is_switch(node)
            if (mode and not switch) or not (switch or anchored):
                continue  # a loop bound read off the input's shape; labels that a loss reads
            src, mode = name, switch
        elif src is not None and mode:
            continue  # another layer that only decides a branch or a loop bound
        if src is not None:
            index = int(ref.rpartition(":")[2]) if ":" in ref else 0
            if not mode and _rank(node, index) == 0:
                continue  # a scalar: a summary or a loss term, not the data path
            best = found.get(src)
            if best is None or (best[1] and not mode):  # a data path beats a mode path
                found[src] = (ref, mode, crossed)
            continue
        if node.op in _VARIABLE_OPS:
            continue
        for nxt, to_mode in _data_inputs(node):
            queue.append((nxt, mode or to_mode, crossed, anchored))
    return [(src, ref, mode, crossed) for src, (ref, mode, crossed) in found.items()]


def _data_inputs(node):
    """``(tensor, is a mode input)`` for each data input of ``node`` (a ``Switch``'s
    predicate is a mode input). A ``Shape``'s input is none: it reads no values (BERT's
    attention mask takes its batch size off the token ids)."""
    if node is None or node.op in _SHAPE_OPS:
        return []
    refs = [r for r in node.input if not r.startswith("^")]
    if node.op in ("Switch", "RefSwitch"):
        return [(r, i == 1) for i, r in enumerate(refs)]
    return [(r, False) for r in refs]


def _is_switch(node) -> bool:
    """A placeholder that selects a mode rather than carrying data: a ``bool``, or a float
    scalar or float of unknown rank (a ``keep_prob`` declared without a shape). Integer
    placeholders of unknown rank are labels or ids, not switches."""
    dtype = node.attr["dtype"].type
    if dtype == _DT_BOOL:
        return True
    return dtype in _DT_FLOATS and _rank(node, 0) in (0, None)


def _rank(node, index: int) -> int | None:
    """The rank of output ``index`` of ``node`` as ``_output_shapes`` (or a placeholder's
    ``shape``) records it; None when unknown. Graphs written before TensorFlow 1.2 left an
    unknown ``shape`` attr empty, so an empty one counts only when nothing else says more."""
    if "_output_shapes" in node.attr and index < len(node.attr["_output_shapes"].list.shape):
        shape = node.attr["_output_shapes"].list.shape[index]
        if not shape.unknown_rank and shape.dim:
            return len(shape.dim)
        if shape.unknown_rank:
            return None
    if node.op in _PLACEHOLDERS and "shape" in node.attr:
        shape = node.attr["shape"].shape
        return None if shape.unknown_rank or not shape.dim else len(shape.dim)
    if "_output_shapes" in node.attr and index < len(node.attr["_output_shapes"].list.shape):
        return 0
    return None


def _value_reads(nodes) -> set[str]:
    """The ops that pass a variable's value on unchanged (its reads, loop entries, casts): a
    path that starts at one carries a weight (a regulariser, a summary), not a layer's output."""
    readers: dict[str, list[str]] = {}
    for name, node in nodes.items():
        for ref in node.input:
            if not ref.startswith("^"):
                readers.setdefault(op_name(ref), []).append(name)
    frontier = [n for n, node in nodes.items() if node.op in _VARIABLE_OPS]
    found: set[str] = set()
    while frontier:
        name = frontier.pop()
        for reader in readers.get(name, ()):
            if reader not in found and nodes[reader].op in _PASS_THROUGH:
                found.add(reader)
                frontier.append(reader)
    return found


def to_dot(layers: LayerGraph, title: str = "") -> str:
    """The Graphviz DOT text of ``layers``: boxes coloured by role, shapes on the edges, a
    ``stop_gradient`` edge drawn red and dashed, and a legend of the roles present."""
    lines = ["digraph ckptsurgery {", "  rankdir=BT;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];']
    if title:
        lines.append(f'  labelloc=t; label="{_quote(title)}";')
    for layer, role in sorted(layers.roles.items()):
        fill, style = ROLES[role]
        n = len(layers.variables.get(layer, []))
        slots = layers.slots.get(layer, 0)
        detail = f"\\n{role}" + (f", {n} weight{'s' if n > 1 else ''}" if n else "") + (
            f" + {slots} slot{'s' if slots > 1 else ''}" if slots else "")
        shape = ", shape=ellipse" if role in ("input", "mode") else ""
        lines.append(f'  "{_quote(layer)}" [label="{_quote(layer)}{detail}", fillcolor="{fill}", '
                     f'style="rounded,filled,{style}"{shape}];')
    for (src, dst), shape in sorted(layers.edges.items()):
        if src not in layers.roles or dst not in layers.roles:
            continue
        extra = ', color="#cc0000", style=dashed, fontcolor="#cc0000"' if (src, dst) in layers.cut \
            else ', style=dashed, color="#777777"' if (src, dst) in layers.modes else ""
        label = shape + (" stop_gradient" if (src, dst) in layers.cut else "")
        lines.append(f'  "{_quote(src)}" -> "{_quote(dst)}" [label="{_quote(label)}"{extra}];')
    present = sorted(set(layers.roles.values()), key=list(ROLES).index)
    lines.append('  subgraph cluster_legend { label="legend"; fontsize=10;')
    for role in present:
        fill, style = ROLES[role]
        lines.append(f'    "legend_{role}" [label="{role}", fillcolor="{fill}", '
                     f'style="rounded,filled,{style}"];')
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _shape_of(nodes, ref: str) -> str:
    node = nodes.get(op_name(ref))
    index = int(ref.rpartition(":")[2]) if ":" in ref else 0
    if node is None or "_output_shapes" not in node.attr:
        return ""
    shapes = node.attr["_output_shapes"].list.shape
    if index >= len(shapes) or shapes[index].unknown_rank:
        return ""
    return "[" + ", ".join("?" if d.size < 0 else str(d.size) for d in shapes[index].dim) + "]"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def write_picture(dot_text: str, path: str, *, force: bool = False) -> str:
    """Write ``dot_text`` to ``path``: as it is for ``.dot``, rendered by Graphviz's ``dot``
    program for ``.svg`` and ``.png``; atomically, an existing file only with ``force``.

    Raises:
        UserError: another extension, or ``dot`` is not installed (the message says how to get
            it, and that ``.dot`` needs nothing).
        OutputError: the file exists (no ``force``) or cannot be written.
    """
    import os
    import shutil
    import subprocess

    from ..errors import UserError
    from ..formats.output import atomic_file, check_output_file

    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"picture '{path}': give a file ending in {', '.join(FORMATS)}")
    path = check_output_file(path, force=force)
    dot = shutil.which("dot") if ext != ".dot" else None
    if ext != ".dot" and dot is None:
        raise UserError(
            f"writing '{path}' needs Graphviz's 'dot' program, which is not installed; install "
            "graphviz (apt-get install graphviz, brew install graphviz) or write a .dot file")
    with atomic_file(path) as tmp:
        if ext == ".dot":
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(dot_text)
        else:
            proc = subprocess.run([dot, f"-T{ext[1:]}", "-o", tmp], input=dot_text.encode(),
                                  capture_output=True, timeout=120)
            if proc.returncode != 0:
                raise UserError(f"Graphviz could not draw '{path}': "
                                f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    return path
