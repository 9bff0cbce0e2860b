"""Pictures of a graph as its layers: name scopes collapsed to boxes, tensors' shapes on the
edges, each layer coloured by what a graft does with it (reused, frozen, trained, new, pruned).

:func:`layer_graph` reads a ``GraphDef`` (no live graph needed: shapes come from the
``_output_shapes`` attrs that ``as_graph_def(add_shapes=True)`` and most saved graphs carry) and
returns a small :class:`LayerGraph`; :func:`to_dot` writes it in Graphviz's DOT language. A
500-op graph reads as a dozen boxes: every op belongs to the layer whose variables its name
names (``dnn/hidden1/MatMul`` -> ``hidden1``), bookkeeping (savers, gradients, optimizers,
initialisers) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .metagraph import op_name

__all__ = ["ROLES", "FORMATS", "LayerGraph", "layer_graph", "to_dot", "write_picture"]

#: Picture formats by file extension: DOT always; SVG and PNG through Graphviz's ``dot``.
FORMATS = (".dot", ".svg", ".png")

#: Roles of a layer in a graft, and how each is drawn (fill colour, border style).
ROLES = {
    "input": ("#ffffff", "solid"),
    "model": ("#cfe2f3", "solid"),
    "reused": ("#cfe2f3", "solid"),
    "frozen": ("#d9d9d9", "solid"),
    "trained": ("#fce5cd", "solid"),
    "new": ("#d9ead3", "bold"),
    "pruned": ("#f4cccc", "dashed"),
    "ops": ("#ffffff", "dotted"),
}
_BOOKKEEPING = ("save", "gradients", "train", "init", "Adam", "GradientDescent", "Momentum",
                "RMSProp", "Adagrad", "report_uninitialized", "loss", "eval", "summaries",
                "beta1_power", "beta2_power", "global_step", "Assign")
_VARIABLE_OPS = {"Variable", "VariableV2", "VarHandleOp"}


@dataclass
class LayerGraph:
    """Layers (``{name: role}``, with each layer's variables) and the edges between them
    (``{(from, to): shape text}``)."""

    roles: dict[str, str] = field(default_factory=dict)
    variables: dict[str, list[str]] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    cut: set[tuple[str, str]] = field(default_factory=set)


def layer_graph(graph_def, roles: dict[str, str] | None = None, *, around: str | None = None,
                depth: int = 2, pruned: list[str] = ()) -> LayerGraph:
    """The layers of ``graph_def`` and how data flows between them.

    Args:
        graph_def: a ``GraphDef`` (``meta.graph_def``, or a live graph's
            ``as_graph_def(add_shapes=True)``).
        roles: ``{variable name: role}`` (a key of :data:`ROLES`); a layer takes the role of its
            variables (``new`` over ``trained`` over ``frozen`` over ``reused``). Without it,
            layers with variables are ``model``.
        around: keep only layers within ``depth`` edges of the layer holding this op or tensor.
        pruned: variables a graft removed: drawn as ``pruned`` layers with no edges.
    """
    nodes = {n.name: n for n in graph_def.node}
    variables = sorted(n.name for n in graph_def.node if n.op in _VARIABLE_OPS)
    layers = {v.rsplit("/", 1)[0] if "/" in v else v for v in variables if not _bookkeeping(v)}
    out = LayerGraph()

    def layer_of(name: str) -> str | None:
        parts = name.split("/")
        for i in range(len(parts), 0, -1):  # the longest layer name it contains as components
            for j in range(len(parts) - i + 1):
                candidate = "/".join(parts[j:j + i])
                if candidate in layers:
                    return candidate
        if nodes[name].op in ("Placeholder", "PlaceholderWithDefault"):
            return name
        return None

    owner = {n: layer_of(n) for n in nodes if not _bookkeeping(n)}
    for layer in sorted({v for v in owner.values() if v}):
        own = [v for v in variables if v.startswith(layer + "/")]
        out.variables[layer] = own
        if layer in nodes and nodes[layer].op in ("Placeholder", "PlaceholderWithDefault"):
            out.roles[layer] = "input"
            continue
        if roles is None:
            out.roles[layer] = "model"
            continue
        kinds = {roles.get(v, "reused") for v in own}
        out.roles[layer] = next((r for r in ("new", "trained", "frozen", "reused") if r in kinds),
                                "reused")
    for name, node in nodes.items():
        dst = owner.get(name)
        if dst is None:
            continue
        for ref in node.input:
            if ref.startswith("^"):
                continue
            src, crossed = _through(op_name(ref), nodes, owner)
            if src is None or src == dst:
                continue
            out.edges.setdefault((src, dst), _shape_of(nodes, ref))
            if crossed:
                out.cut.add((src, dst))
    for name in pruned:
        layer = name.rsplit("/", 1)[0] if "/" in name else name
        if not _bookkeeping(name) and out.roles.setdefault(layer, "pruned") == "pruned":
            out.variables.setdefault(layer, []).append(name)
    if around is not None:
        start = owner.get(op_name(around))
        if start is not None:
            keep = {start}
            for _ in range(depth):
                keep |= {b for a, b in out.edges if a in keep} | {a for a, b in out.edges
                                                                 if b in keep}
            out.roles = {k: v for k, v in out.roles.items() if k in keep or v == "pruned"}
            out.edges = {e: s for e, s in out.edges.items() if e[0] in keep and e[1] in keep}
    return out


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
        detail = f"\\n{role}" + (f", {n} variable{'s' if n > 1 else ''}" if n else "")
        shape = ", shape=ellipse" if role == "input" else ""
        lines.append(f'  "{_quote(layer)}" [label="{_quote(layer)}{detail}", fillcolor="{fill}", '
                     f'style="rounded,filled,{style}"{shape}];')
    for (src, dst), shape in sorted(layers.edges.items()):
        if src not in layers.roles or dst not in layers.roles:
            continue
        extra = ', color="#cc0000", style=dashed, fontcolor="#cc0000"' if (src, dst) in layers.cut \
            else ""
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


def _through(name: str, nodes, owner) -> tuple[str | None, bool]:
    """The layer a tensor comes from, looking through ops that belong to none (a cut, a
    pooling or reshape between layers) up to a few steps; and whether a ``StopGradient``
    was on the way."""
    crossed = False
    for _ in range(8):
        node = nodes.get(name)
        if node is None:
            return None, crossed
        crossed = crossed or node.op == "StopGradient"  # a cut named after its layer, too
        if owner.get(name) and node.op != "StopGradient":
            return owner[name], crossed
        inputs = [i for i in node.input if not i.startswith("^")]
        if not inputs:
            return None, crossed
        name = op_name(inputs[0])
    return None, crossed


def _shape_of(nodes, ref: str) -> str:
    node = nodes.get(op_name(ref))
    index = int(ref.rpartition(":")[2]) if ":" in ref else 0
    if node is None or "_output_shapes" not in node.attr:
        return ""
    shapes = node.attr["_output_shapes"].list.shape
    if index >= len(shapes) or shapes[index].unknown_rank:
        return ""
    return "[" + ", ".join("?" if d.size < 0 else str(d.size) for d in shapes[index].dim) + "]"


def _bookkeeping(name: str) -> bool:
    head = name.split("/", 1)[0]
    return head.startswith(_BOOKKEEPING) or "/Adam" in name or name.endswith(("/Momentum",
                                                                            "/RMSProp"))


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
