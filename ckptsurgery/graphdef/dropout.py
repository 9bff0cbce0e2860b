"""Dropout sites of a serialised graph, and a copy of the graph with them bypassed.

``tf.nn.dropout`` (both the ``keep_prob`` form of TF 1.0-1.12 and the ``rate`` form after it)
and the TF1/Keras layers' dropout are a name scope ``.../dropout`` holding a ``RandomUniform``:
the ``Shape`` of the input ``x`` draws a mask, and the scope's one output is ``x`` masked and
rescaled. A graph saved for training keeps those ops, with a fixed rate or a placeholder; what
is exported or evaluated must not drop anything, so :func:`without_dropout` makes the readers of
each site's output read its input: with dropout off the output *is* the input (scaled by 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .metagraph import free_name, node_map, op_name, reroute

__all__ = ["DropoutSite", "dropout_sites", "without_dropout", "switched_dropout"]

_DT_FLOAT, _DT_BOOL = 1, 10
_SCOPE_RE = re.compile(r"^(.*?(?:^|/)[Dd]ropout(?:_\d+)?)/")


@dataclass(frozen=True)
class DropoutSite:
    """One dropout: its ``scope``, the tensor it masks (``input``) and the tensor the rest of
    the graph reads (``output``)."""

    scope: str
    input: str
    output: str

    def __str__(self) -> str:
        return f"{self.scope} ({self.input} -> {self.output})"


def dropout_sites(meta) -> list[DropoutSite]:
    """Every dropout of ``meta`` outside gradient scopes, in graph order. A scope whose input
    or single output cannot be told is not a site (it is left as it is)."""
    nodes = node_map(meta)
    scopes: list[str] = []
    for node in meta.graph_def.node:
        if node.op in ("RandomUniform", "RandomUniformInt") and not node.name.startswith(
                "gradients"):
            m = _SCOPE_RE.match(node.name)
            if m and m.group(1) not in scopes and "/gradients" not in m.group(1):
                scopes.append(m.group(1))
    sites = []
    for scope in scopes:
        prefix = scope + "/"
        inside = [n for n in meta.graph_def.node if n.name.startswith(prefix)]
        names = {n.name for n in inside}
        outputs = sorted({ref for n in meta.graph_def.node if n.name not in names
                          and not n.name.startswith("gradients")
                          for ref in n.input if not ref.startswith("^")
                          and op_name(ref) in names})
        source = _masked_input(inside, names, nodes)
        if len(outputs) == 1 and source is not None:
            out = outputs[0] if ":" in outputs[0] else outputs[0] + ":0"
            if out != source:  # else it is bypassed already (a cond's Switch read past it)
                sites.append(DropoutSite(scope, source, out))
    return sites


def without_dropout(meta, sites: list[DropoutSite]):
    """A copy of ``meta`` in which every reader of a site's output reads the site's input."""
    new = type(meta)()
    new.CopyFrom(meta)
    reroute(new.graph_def, {site.output: site.input for site in sites})
    return new


def _masked_input(inside, names: set[str], nodes) -> str | None:
    """The tensor a dropout scope masks: what its ``Shape`` reads (the mask has ``x``'s shape),
    else the first outside input of its first ``RealDiv``/``Div``/``Mul``. Inside a ``cond``,
    ``x`` comes in through a ``Switch`` in the scope, whose output is the one to read."""
    for kind in (("Shape",), ("RealDiv", "Div", "Mul")):
        for node in inside:
            if not node.input or node.op not in kind:
                continue
            source = nodes.get(op_name(node.input[0]))
            if source is not None and (source.name not in names or source.op == "Switch"):
                ref = node.input[0]
                return ref if ":" in ref else ref + ":0"
    return None


def switched_dropout(meta, sites: list[DropoutSite], switch: str = "dropout_training"):
    """A copy of ``meta`` in which every reader of a site's output reads
    ``SelectV2(switch, output, input)``: the dropout where the ``bool`` placeholder ``switch``
    (a ``PlaceholderWithDefault`` of false, added) is fed true, its input unchanged otherwise.
    What a graft does with dropout that trains: on in training steps (which feed the switch
    true), off when evaluating and in the export, which feeds nothing.

    Returns:
        ``(new_meta, the switch's tensor name, {site output: the tensor that replaces it}``).
    """

    new = type(meta)()
    new.CopyFrom(meta)
    nodes = node_map(new)
    taken = set(nodes)
    switch = free_name(switch, taken)
    taken.add(switch)
    default = new.graph_def.node.add(name=free_name(f"{switch}/default", taken), op="Const")
    default.attr["dtype"].type = _DT_BOOL
    default.attr["value"].tensor.dtype = _DT_BOOL
    default.attr["value"].tensor.bool_val.append(False)
    default.attr["value"].tensor.tensor_shape.SetInParent()
    holder = new.graph_def.node.add(name=switch, op="PlaceholderWithDefault",
                                    input=[default.name])
    holder.attr["dtype"].type = _DT_BOOL
    holder.attr["shape"].shape.SetInParent()
    replaced = {}
    for site in sites:
        producer = nodes[op_name(site.output)]
        select = new.graph_def.node.add(name=free_name(f"{site.scope}/switched", taken),
                                        op="SelectV2", input=[switch, site.output, site.input])
        taken.add(select.name)
        select.attr["T"].type = producer.attr["T"].type if "T" in producer.attr else _DT_FLOAT
        replaced[site.output] = select.name
    reroute(new.graph_def, replaced, skip=set(replaced.values()))
    return new, f"{switch}:0", {k: f"{v}:0" for k, v in replaced.items()}
