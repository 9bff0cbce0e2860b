"""Layers as the graph computes them, scoped or not.

A layer is an op that reads a weight variable (a ``MatMul``, ``Conv2D``, an embedding's
``Gather``: its *anchor*) with the ops that follow it up to the next anchor: the bias add, the
activation, dropout, pooling; and the variables those ops read besides the weights: the bias,
and batch norm's gamma, beta and moving statistics, which belong to the layer they normalise.
Name scopes are not layers: TF1 code without scopes names its variables ``Variable``,
``Variable_1``... (kernel and bias of one layer far apart), and ``tf.layers`` puts batch norm in
a scope of its own (``batch_normalization_3``) beside the dense layer it normalises.

:func:`layer_groups` reads a ``MetaGraphDef`` (or a bare ``GraphDef``) without TensorFlow and
returns the :class:`Layer` list in graph order (input to output); :func:`layers_below` the
layers a tensor depends on, nearest first (what transfer strategies count). Bookkeeping
(gradients, optimizer updates, savers, initialisers) is no layer's. Imports: graphdef only.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .collections import collection_items
from .metagraph import analysis, op_name
from .walk import by_distance, reachable

__all__ = ["ANCHOR_OPS", "Layer", "layer_groups", "layers_below", "output_layers"]

#: Op types that make a layer when they read a variable: the weight-applying ops.
ANCHOR_OPS = frozenset({
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv1D", "Conv2D",
    "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2",
    "Gather", "GatherV2", "ResourceGather"})

_VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp"})
# Ops a variable's value passes through unchanged on its way to the op that uses it.
_PASS_THROUGH = frozenset({"Identity", "RefIdentity", "ReadVariableOp", "Enter", "RefEnter",
                           "Switch", "RefSwitch", "Cast", "Reshape"})
_BOOKKEEPING_OPS = frozenset({
    "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
    "AssignSubVariableOp", "IsVariableInitialized", "VarIsInitializedOp", "SaveV2", "Save",
    "SaveSlices", "RestoreV2", "Restore", "RestoreSlice", "ScatterUpdate", "ScatterAdd",
    "ScatterSub", "ResourceScatterUpdate", "ResourceScatterAdd", "ResourceScatterSub"})
# Ops a layer's output passes through on its way out: bias, normalisation, activation, pooling.
_CHAIN_OPS = frozenset({
    "BiasAdd", "Add", "AddV2", "Mul", "Sub", "Identity", "FusedBatchNorm", "FusedBatchNormV2",
    "FusedBatchNormV3", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Tanh", "Sigmoid",
    "Softplus", "Softsign", "Softmax", "MaxPool", "AvgPool", "MaxPoolV2", "MaxPool3D",
    "AvgPool3D"})
_BOOKKEEPING_SCOPE = re.compile(r"(^|/)(gradients(_\d+)?|save(_\d+)?)(/|$)")
_NEXT_ITERATION = ("NextIteration", "RefNextIteration")
_PART = re.compile(r"/part_\d+$")
_MAX_ATTACH_STEPS = 64


@dataclass(frozen=True)
class Layer:
    """One layer of a graph.

    Attributes:
        name: the scope of its first weight (``hidden1`` for ``hidden1/kernel``), or the weight
            itself when it has no scope (``Variable_2``).
        kind: the op type of its anchor (``MatMul``, ``Conv2D``, ``GatherV2``), ``""`` for a
            variable that no anchor reads (a lone learned scale).
        weights: the variables its anchor ops read.
        variables: all its variables, weights first: biases, batch norm's gamma, beta and
            moving statistics follow, in graph order.
        ops: the ops that compute it, in graph order: variable reads, anchors, bias adds,
            normalisation, activations (gradients and optimizer updates excluded).
        anchors: its anchor ops (several when a weight is shared: an unrolled RNN, two towers).
        outputs: the tensor each anchor's computation hands on (after its bias, normalisation
            and activation, before anything mixes in other data: a label, a dropout rate).
        inputs_from: the names of the layers whose outputs it reads.
    """

    name: str
    kind: str
    weights: tuple[str, ...]
    variables: tuple[str, ...]
    ops: tuple[str, ...]
    anchors: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    inputs_from: tuple[str, ...] = ()


def layer_groups(graph) -> list[Layer]:
    """The layers of ``graph`` (a ``MetaGraphDef`` or a ``GraphDef``), input to output.

    Only variables that some forward op reads are considered: optimizer slots and counters are
    no layer's. A trainable variable no anchor claims (a learned scale on the input) is a layer
    of its own; a non-trainable one (with a ``trainable_variables`` collection to say so) is
    left out.
    """
    return _layer_groups(graph)


def layers_below(meta, at: str, inputs: Iterable[str] = ()) -> list[Layer]:
    """The layers of ``meta`` that the op or tensor ``at`` depends on (through data edges, not
    past the fed ``inputs``), nearest to it first, each with only its variables that ``at``
    depends on (a layer cut after its ``MatMul`` keeps its kernel and not its bias)."""
    order = by_distance(meta, at, inputs)
    distance = {name: i for i, name in enumerate(order)}
    below = set(order)
    found = []
    for layer in layer_groups(meta):
        steps = [distance[o] for o in layer.anchors or layer.ops if o in distance]
        variables = tuple(v for v in layer.variables if v in below)
        if steps and variables:
            found.append((min(steps), replace(
                layer, weights=tuple(w for w in layer.weights if w in below),
                variables=variables)))
    return [layer for _, layer in sorted(found, key=lambda pair: pair[0])]


def output_layers(graph) -> list[Layer]:
    """The layers of ``graph`` whose outputs no other layer reads: the model's heads (a
    classifier's logits; both networks of a DQN's online/target pair; a GAN's discriminator,
    which reads the generator), in graph order."""
    layers = layer_groups(graph)
    read = {name for layer in layers for name in layer.inputs_from}
    return [layer for layer in layers if layer.name not in read]


@analysis
def _layer_groups(graph) -> list[Layer]:
    graph_def = graph.graph_def if hasattr(graph, "graph_def") else graph
    trainable = None
    if hasattr(graph, "collection_def") and "trainable_variables" in graph.collection_def:
        trainable = set(collection_items(graph, "trainable_variables"))
    nodes = {n.name: n for n in graph_def.node if not _bookkeeping(n)}
    readers: dict[str, list[str]] = {}
    for name, node in nodes.items():
        for ref in node.input:
            if not ref.startswith("^") and op_name(ref) in nodes:
                readers.setdefault(op_name(ref), []).append(name)
    inputs = {name: _data_inputs(node, nodes) for name, node in nodes.items()}
    order = _topological(nodes, inputs)
    position = {name: i for i, name in enumerate(order)}
    variables = [n for n in order if nodes[n].op in _VARIABLE_OPS]

    # Each variable's reads (the ops its value passes through) and its users beyond them.
    reads: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    for var in variables:
        reads[var], users[var] = _reads(var, nodes, readers)
    value_of = {r: var for var, chain in reads.items() for r in chain} | {v: v for v in variables}
    for var in variables:  # a partitioned variable is the concatenation of its parts
        for user in list(users[var]):
            if nodes[user].op in ("Concat", "ConcatV2") and all(
                    op_name(i) in value_of or nodes[op_name(i)].op == "Const"
                    for i in nodes[user].input if not i.startswith("^") and op_name(i) in nodes):
                chain, more = _reads(user, nodes, readers)
                reads[var] += [user, *chain]
                users[var] = [u for u in users[var] if u != user] + more
                value_of.update({r: var for r in (user, *chain)})
    for var in variables:
        users[var].sort(key=position.__getitem__)

    # Anchors, and the weights each reads; then each op's latest anchor upstream.
    anchor_weights: dict[str, list[str]] = {}
    for var in variables:
        for user in users[var]:
            if nodes[user].op in ANCHOR_OPS:
                anchor_weights.setdefault(user, []).append(var)
    # Each op's latest (deepest) anchor upstream.
    upstream: dict[str, str | None] = {}
    depth: dict[str, int] = {}
    for name in order:
        if name in value_of:
            upstream[name] = None
            continue
        best = None
        for src in (upstream.get(i) for i in inputs[name]):
            if src is not None and (best is None or (depth[src], position[src]) >
                                    (depth[best], position[best])):
                best = src
        if name in anchor_weights:
            depth[name] = 1 + (depth[best] if best is not None else 0)
            best = name
        upstream[name] = best

    # Group: the weights an anchor reads are one layer; other variables join the layer of the
    # first anchored op downstream of their users (breadth first).
    group: dict[str, str] = {}
    for anchor in sorted(anchor_weights, key=position.__getitem__):
        weights = anchor_weights[anchor]
        root = next((group[w] for w in weights if w in group), anchor)
        for w in weights:
            group.setdefault(w, root)
    members: dict[str, list[str]] = {}  # root anchor -> its anchors
    for anchor in sorted(anchor_weights, key=position.__getitem__):
        members.setdefault(group[anchor_weights[anchor][0]], []).append(anchor)
    extra_ops: dict[str, list[str]] = {}
    own: list[str] = []
    for var in variables:
        if var in group or not users[var]:
            continue
        root, visited = _attach(users[var], readers, upstream, nodes)
        if root is not None:
            root = group[anchor_weights[root][0]]
            group[var] = root
            extra_ops.setdefault(root, []).extend(visited)
        elif trainable is None or var in trainable:
            own.append(var)

    anchor_root = {a: root for root, anchors in members.items() for a in anchors}
    # An op is the layer's of its deepest anchor upstream (a residual add the deeper
    # layer's), and none's where layers of one depth meet (attention's scores and context).
    nearest = _nearest(order, inputs, {a: a for a in anchor_weights}, value_of)
    ops_of: dict[str, set[str]] = {}
    for name, anchor in upstream.items():
        if anchor is not None and len({anchor_root[a] for a in nearest[name]
                                       if depth[a] == depth[anchor]}) == 1:
            ops_of.setdefault(anchor_root[anchor], set()).add(name)
    # The layers each op reads through ops that are no layer's: a layer's inputs.
    nearest = _nearest(order, inputs, {o: root for root, ops in ops_of.items() for o in ops},
                       value_of)
    fed = reachable([n for n in nodes if nodes[n].op in ("Placeholder", "PlaceholderV2")],
                    lambda name: readers.get(name, ()))
    outputs = {a: _output(a, nodes, readers, upstream, fed) for a in anchor_weights}
    sources = {root: sorted({s for a in anchors for i in inputs[a]
                             for s in nearest.get(i, ())} - {root})
               for root, anchors in members.items()}
    layers, taken, named = [], set(), {}
    groups = [((depth[root], position[root]), root) for root in members] + \
        [((0, position[users[var][0]]), var) for var in own]
    scopes = Counter(scope for _, root in groups for scope in _scopes(
        anchor_weights[members[root][0]][0] if root in members else root))
    for _, root in sorted(groups):
        anchors = members.get(root, [])
        if anchors:
            weights = list(dict.fromkeys(w for a in anchors for w in anchor_weights[a]))
            mine = weights + [v for v in variables if group.get(v) == root and v not in weights]
            ops = ops_of.get(root, set()) | set(extra_ops.get(root, ()))
        else:
            weights, mine = [root], [root]
            ops = set(users[root])
        ops |= {r for v in mine for r in reads[v]}
        name = _name(weights[0], scopes, taken)
        taken.add(name)
        named[root] = name
        layers.append(Layer(name, nodes[anchors[0]].op if anchors else "", tuple(weights),
                            tuple(mine), tuple(sorted(ops, key=position.__getitem__)),
                            tuple(anchors), tuple(outputs[a] for a in anchors),
                            tuple(sources.get(root, ()))))
    return [replace(layer, inputs_from=tuple(named[r] for r in layer.inputs_from))
            for layer in layers]


def _nearest(order, inputs, stops: dict[str, str], value_of) -> dict[str, frozenset]:
    """Each op's nearest ``stops`` upstream (``{op: what it stands for}``): all that reach
    it through ops that are no stop (attention's context reads its query, key and value
    layers; a residual add two), where ``upstream`` keeps only the deepest anchor."""
    nearest: dict[str, frozenset] = {}
    empty: frozenset = frozenset()
    for name in order:
        if name in stops:
            nearest[name] = frozenset((stops[name],))
        elif name in value_of:
            nearest[name] = empty
        else:
            found = {s for s in (nearest.get(i) for i in inputs[name]) if s}
            nearest[name] = found.pop() if len(found) == 1 else frozenset().union(*found)
    return nearest


def _output(anchor: str, nodes, readers, upstream, fed) -> str:
    """The tensor ``anchor``'s layer hands on: follow its only reader while it is a bias add,
    normalisation, activation or pooling whose other inputs come from no layer and no
    placeholder (a label or a dropout rate mixed in ends the layer)."""
    current = anchor
    while True:
        nxt = [r for r in readers.get(current, ()) if nodes[r].op in _CHAIN_OPS
               and upstream.get(r) == anchor and all(
                   op_name(i) == current or (upstream.get(op_name(i)) is None
                                             and op_name(i) not in fed)
                   for i in nodes[r].input if not i.startswith("^"))]
        if len(nxt) != 1:
            return f"{current}:0"
        current = nxt[0]


def _reads(start: str, nodes, readers) -> tuple[list[str], list[str]]:
    """The ops ``start``'s value passes through unchanged (reads, loop entries, casts), and
    the ops that use it beyond them."""
    chain, use, seen, frontier = [], [], {start}, [start]
    while frontier:
        name = frontier.pop()
        for reader in readers.get(name, ()):
            if reader in seen:
                continue
            seen.add(reader)
            if nodes[reader].op in _PASS_THROUGH:
                chain.append(reader)
                frontier.append(reader)
            else:
                use.append(reader)
    return chain, use


def _attach(starts, readers, upstream, nodes) -> tuple[str | None, list[str]]:
    """The first anchor upstream of an op downstream of ``starts`` (breadth first), and the
    ops on the way to that op (a batch norm's ``Rsqrt`` of its moving variance, say; not an
    optimizer's update of the same variable, which leads elsewhere)."""
    queue, came_from, steps = deque(starts), dict.fromkeys(starts), 0
    while queue and steps < _MAX_ATTACH_STEPS:
        name = queue.popleft()
        steps += 1
        if upstream.get(name) is not None:
            found, path = upstream[name], []
            while (name := came_from[name]) is not None:
                path.append(name)
            return found, path[::-1]
        for reader in readers.get(name, ()):
            if reader not in came_from and nodes[reader].op not in _VARIABLE_OPS:
                came_from[reader] = name
                queue.append(reader)
    return None, []


def _data_inputs(node, nodes) -> list[str]:
    """The ops whose outputs ``node`` reads, in the order computation runs: a loop's
    ``NextIteration`` closes a cycle and counts as no input of its ``Merge``, but the loop's
    ``Exit`` waits for it (what leaves a loop is what its body computed)."""
    def refs(n):
        return [op_name(r) for r in n.input if not r.startswith("^") and op_name(r) in nodes]

    found = [i for i in refs(node) if nodes[i].op not in _NEXT_ITERATION]
    if node.op in ("Exit", "RefExit") and found:
        switch = nodes[found[0]]
        merge = refs(switch)[:1]
        if merge and nodes[merge[0]].op in ("Merge", "RefMerge"):
            found += [i for i in refs(nodes[merge[0]]) if nodes[i].op in _NEXT_ITERATION]
    return found


def _topological(nodes, inputs) -> list[str]:
    """Node names, every op after its data inputs (:func:`_data_inputs`); graph order among
    equals."""
    pending, readers = {}, {}
    for name in nodes:
        mine = set(inputs[name])
        pending[name] = len(mine)
        for i in mine:
            readers.setdefault(i, []).append(name)
    ready = deque(n for n in nodes if pending[n] == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for reader in readers.get(name, ()):
            pending[reader] -= 1
            if pending[reader] == 0:
                ready.append(reader)
    placed = set(order)
    return order + [n for n in nodes if n not in placed]  # left in a cycle: graph order


def _bookkeeping(node) -> bool:
    return node.op in _BOOKKEEPING_OPS or node.op.startswith(("Apply", "ResourceApply",
                                                               "ResourceSparseApply",
                                                               "SparseApply")) \
        or bool(_BOOKKEEPING_SCOPE.search(node.name))


def _scopes(weight: str) -> list[str]:
    """The scopes ``weight`` lies in, outermost first (a partitioned piece's as its whole's)."""
    parts = _PART.sub("", weight).split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _name(weight: str, scopes: Counter, taken: set[str]) -> str:
    """A layer's name: the scope of its first weight when no other layer's weights share
    it (``hidden1``), else the weight (``model/wte`` beside ``model/h0/...``)."""
    weight = _PART.sub("", weight)  # a partitioned variable's pieces: kernel/part_0
    scope = weight.rpartition("/")[0]
    return scope if scope and scopes[scope] == 1 and scope not in taken else weight
