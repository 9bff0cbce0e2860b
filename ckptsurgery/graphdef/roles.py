"""What each saved variable is for, read from the graph: the ops that update a variable say
which optimizer slots belong to it, which state belongs to the optimizer, which variable counts
steps and which holds a moving average, whatever their names.

Names fail often (an optimizer under a name scope saves ``optimizer/layer/w/RMSProp``, nested
scopes give ``model/model/cell/kernel/Adam_1``); the ``Apply*`` and ``ResourceApply*`` ops of
every ``tf.compat.v1.train`` optimizer take the weight first and its slots after it, and
``AssignMovingAvg`` updates name the average they move. A sparse gradient (an embedding read
through ``tf.gather``) takes another path: no ``Apply*`` op, but ``Assign``/``Scatter*`` ops under
the optimizer's ``<optimizer>/update_<weight>/`` name scope write the weight's slots.
BERT's and ELECTRA's ``AdamWeightDecayOptimizer`` and ALBERT's ``LAMBOptimizer`` write their
``<w>/adam_m``/``<w>/adam_v`` with plain ``assign`` ops under the same names; the graph tells
them apart by LAMB's trust ratio, which takes the norm of the weight itself.
:func:`graph_roles` reads them; :func:`classify` uses it when a ``.meta`` exists and falls back
to names for what the graph does not say.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from .metagraph import analysis, frozen, node_index, node_map, nodes_of_type
from .saver import VARIABLE_OPS, UnsupportedSaverError, saved_variables, trace_variable
from .slots import VariableRole, classify_by_name, describe

__all__ = ["graph_roles", "classify"]

_APPLY_RE = re.compile(r"^(?:Resource)?(?:Sparse)?Apply(?P<optimizer>[A-Za-z]+?)(?:V2)?$")
_OPTIMIZER_NAMES = {"GradientDescent": "GradientDescent", "Momentum": "Momentum",
                    "Keras Momentum": "Momentum", "RMSProp": "RMSProp",
                    "CenteredRMSProp": "RMSProp", "Adam": "Adam", "AdamWithAmsgrad": "Adam",
                    "Adagrad": "Adagrad", "AdagradDA": "AdagradDA", "Adadelta": "Adadelta",
                    "Ftrl": "Ftrl", "ProximalAdagrad": "ProximalAdagrad",
                    "ProximalGradientDescent": "ProximalGradientDescent", "AdaMax": "AdaMax",
                    "PowerSign": "PowerSign", "AddSign": "AddSign"}
_MOVING_AVG_RE = re.compile(r"AssignMovingAvg(?:_\d+)?$")
# the sparse path of tf.train optimizers: <optimizer scope>/update_<weight's op name>/<write op>
_UPDATE_RE = re.compile(r"^(?:.*/)?(?P<optimizer>[^/]+)/update_(?P<weight>.+)/[^/]+$")
_WRITE_OPS = ("Assign", "AssignAdd", "AssignSub", "ScatterAdd", "ScatterSub", "ScatterUpdate",
              "ResourceScatterAdd", "ResourceScatterSub", "ResourceScatterUpdate",
              "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp")
_role = functools.partial(VariableRole, source="graph")


@analysis
def graph_roles(meta) -> dict[str, VariableRole]:
    """``{checkpoint key: VariableRole}`` for the saved variables whose role the graph shows:
    slots and optimizer state (from ``Apply*`` ops), step counters (the ``global_step``
    collection), moving averages (``AssignMovingAvg`` of ``ExponentialMovingAverage``, whose
    primary is the averaged weight) and batch-norm statistics (``kind="model"``: they are
    weights at inference), each with ``source="graph"``. Keys the graph says nothing about are
    left out."""
    nodes = node_map(meta)
    index = node_index(meta)
    key_of = _keys(meta, index)
    roles: dict[str, VariableRole] = {}
    users: dict[str, set[str]] = {}  # variable -> Apply ops reading it
    applies = []
    # the AssignMovingAvg updates, looked at after the optimizers
    averages = [nodes[name] for name in index.names
                if "AssignMovingAvg" in name and _MOVING_AVG_RE.search(name) and nodes[name].input]
    optimizers = {op: m.group("optimizer") for op in index.by_op if (m := _APPLY_RE.match(op))}
    traced: dict[str, str | None] = {}  # the learning rate, beta1... are inputs of every update
    for node in nodes_of_type(meta, *optimizers):
        names = []
        for ref in node.input:
            if ref.startswith("^"):
                continue
            if ref not in traced:
                traced[ref] = trace_variable(nodes, ref)
            names.append(traced[ref])
        if not names:
            continue
        optimizer = optimizers[node.op]
        applies.append((_OPTIMIZER_NAMES.get(optimizer, optimizer), names))
        for name in names:
            if name:
                users.setdefault(name, set()).add(node.name)
    for optimizer, names in applies:
        weight = names[0]
        if weight is None or weight not in key_of:
            continue
        shape = _shape(nodes[weight])
        for name in names[1:]:
            if name is None or name not in key_of or name == weight:
                continue
            if len(users[name]) == 1 and _shape(nodes[name]) == shape:
                roles[key_of[name]] = _role("slot", optimizer, key_of[weight],
                                            key_of[name].rsplit("/", 1)[-1])
            else:  # shared by several weights: beta1_power, a learning-rate variable...
                roles[key_of[name]] = _role("optimizer", optimizer)
    _sparse_slots(meta, nodes, index, key_of, roles)
    _moment_slots(nodes, index, key_of, roles)
    for ref in _collection(meta, "global_step"):
        variable = trace_variable(nodes, ref)
        if variable in key_of:
            roles[key_of[variable]] = _role("step")
    saved_keys = set(key_of.values())
    for node in averages:
        average = trace_variable(nodes, node.input[0])
        if average not in key_of:
            continue
        key = key_of[average]
        if key.endswith(("/moving_mean", "/moving_variance")):
            roles.setdefault(key, _role("model"))
        elif "/ExponentialMovingAverage" in key:
            primary = key.split("/ExponentialMovingAverage", 1)[0]
            roles[key] = _role("ema", None, primary if primary in saved_keys else None,
                                      "ExponentialMovingAverage")
    return roles


def _sparse_slots(meta, nodes, index, key_of, roles) -> None:
    """Add to ``roles`` the slots written by the sparse path of ``tf.train`` optimizers
    (``Adam/update_embed/ScatterAdd`` writes ``embed/Adam``): a variable of the weight's shape,
    other than the weight, written under its ``update_`` scope."""
    for i in index.of_type(*_WRITE_OPS):
        m = _UPDATE_RE.match(index.names[i])
        node = nodes[index.names[i]]
        if m is None or not node.input:
            continue
        weight, target = m.group("weight"), trace_variable(nodes, node.input[0])
        if (target is None or target == weight or weight not in key_of
                or target not in key_of or key_of[target] in roles
                or _shape(nodes[target]) != _shape(nodes[weight])):
            continue
        optimizer = m.group("optimizer")
        roles[key_of[target]] = _role("slot", _OPTIMIZER_NAMES.get(optimizer, optimizer),
                                      key_of[weight], key_of[target].rsplit("/", 1)[-1])


_MOMENTS = ("adam_m", "adam_v")


def _moment_slots(nodes, index, key_of, roles) -> None:
    """Add to ``roles`` the ``<w>/adam_m``, ``<w>/adam_v`` moments that the graph writes, with
    their optimizer: ``LAMB`` when the graph multiplies a moment-holding weight's value by
    itself (``tf.norm`` of the weight, for LAMB's trust ratio ``|w| / |update|``; BERT's
    ``AdamWeightDecayOptimizer`` never does), else ``AdamWeightDecay``. A graph saved without
    its training ops writes none and says nothing."""
    variable_of = {key: var for var, key in key_of.items()}
    moments = {}  # variable op -> (key, primary key)
    weights = set()  # variable ops of the weights that have moments
    for var, key in key_of.items():
        primary, _, slot = key.rpartition("/")
        if slot in _MOMENTS and primary in variable_of and key not in roles:
            moments[var] = (key, primary)
            weights.add(variable_of[primary])
    if not moments or not any(
            trace_variable(nodes, node.input[0]) in moments
            for node in (nodes[index.names[i]] for i in index.of_type(*_WRITE_OPS))
            if node.input):
        return
    lamb = any(trace_variable(nodes, node.input[0]) in weights
               for node in (nodes[index.names[i]] for i in index.of_type("Mul"))
               if len(node.input) == 2 and node.input[0] == node.input[1])
    for key, primary in moments.values():
        roles[key] = _role("slot", "LAMB" if lamb else "AdamWeightDecay", primary,
                           key.rsplit("/", 1)[-1])


def classify(names, meta=None) -> dict[str, VariableRole]:
    """The role of every checkpoint key in ``names``: from the graph (``meta``, when there is
    one) for what its ops show, by name for the rest; each role's ``source`` says which. Where
    both have an opinion and differ, the graph's role wins and its ``by_name`` says what the
    name rule made of it (``inspect`` lists these).

    Returns:
        ``{key: VariableRole}`` in the order of ``names``.
    """
    names = list(names)
    if meta is None:
        return classify_by_name(names)
    with frozen(meta):  # the roles and the saver's keys read the same nodes
        from_graph = graph_roles(meta)
    by_name = classify_by_name(names)
    out = {}
    for n in names:
        graph, name = from_graph.get(n), by_name[n]
        if graph is None:
            out[n] = name
        elif name.kind != "model" and (name.kind, name.primary) != (graph.kind, graph.primary):
            out[n] = dataclasses.replace(graph, by_name=describe(name))
        else:
            out[n] = graph
    return out


def _keys(meta, index) -> dict[str, str]:
    """Variable node name -> checkpoint key (the node's name when the saver cannot be read)."""
    try:
        return {v.node: v.key for v in saved_variables(meta)}
    except UnsupportedSaverError:
        return {index.names[i]: index.names[i] for i in index.of_type(*VARIABLE_OPS)}


def _collection(meta, key: str) -> list[str]:
    from .collections import collection_items

    return collection_items(meta, key) if key in meta.collection_def else []


def _shape(node):
    attr = node.attr.get("shape")
    return tuple(d.size for d in attr.shape.dim) if attr is not None else None
