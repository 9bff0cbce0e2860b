"""Walking graphs: the one reachability walk, and what a set of tensors depends on.

:func:`reachable` serves every walk of the package, over op names of a ``GraphDef`` or over the
ops of a live ``tf.Graph``; :func:`ancestors` is the walk over a ``MetaGraphDef``'s inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from ..errors import NotFoundError
from .collections import variable_defs
from .metagraph import analysis, node_index, node_map, op_name

__all__ = ["reachable", "ancestors", "by_distance", "consumers"]

T = TypeVar("T")


def reachable(starts: Iterable[T], neighbours: Callable[[T], Iterable[T]],
              enter: Callable[[T], bool] = lambda _: True) -> set[T]:
    """Everything reachable from ``starts`` through ``neighbours``, ``starts`` included,
    entering (and going on from) only the nodes ``enter`` accepts."""
    seen: set[T] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node in seen or not enter(node):
            continue
        seen.add(node)
        stack.extend(neighbours(node))
    return seen


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


def by_distance(meta, start: str, stop: Iterable[str] = ()) -> list[str]:
    """The op names on data paths into ``start`` (an op or tensor), breadth first: nearest
    first, ``start`` itself at the head; not going past the ops or tensors ``stop`` (fed
    inputs: what is above them is computed from the feed, not from what is below)."""
    nodes = node_map(meta)
    first = op_name(start)
    ends = {op_name(s) for s in stop}
    seen, order, frontier = {first} | ends, [first], [first]
    while frontier:
        nxt = []
        for name in frontier:
            for ref in nodes[name].input:
                if ref.startswith("^"):
                    continue
                src = op_name(ref)
                if src in nodes and src not in seen:
                    seen.add(src)
                    order.append(src)
                    nxt.append(src)
        frontier = nxt
    return order


@analysis
def consumers(meta) -> dict[str, list[str]]:
    """``{op name: the ops that read one of its outputs}``, by data edges (control edges, which
    order ops but carry no tensor, are left out), in one pass over the inputs."""
    data: dict[str, list[str]] = {}
    for name, node in zip(node_index(meta).names, meta.graph_def.node, strict=True):
        for ref in node.input:
            if ref[:1] == "^":
                continue
            if ":" in ref:  # most inputs are plain op names: no op_name call for them
                ref = op_name(ref)
            readers = data.get(ref)
            if readers is None:
                data[ref] = [name]
            else:
                readers.append(name)
    return data
