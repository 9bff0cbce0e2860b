"""What each saved tensor is for: model weight, optimizer slot, optimizer state or step counter.

A checkpoint saved during training holds more than the model: one or two *slot* variables per
weight (``hidden1/kernel/Adam``, ``hidden1/kernel/Adam_1``; BERT's ``AdamWeightDecayOptimizer``
and ALBERT's ``LAMBOptimizer`` ``<w>/adam_m``, ``<w>/adam_v``, other LAMBs' ``<w>/lamb_m``,
``<w>/lamb_v``, Mesh TensorFlow's
Adafactor ``<w>_slot_vr``, ``<w>_slot_vc``, ``<w>_slot_v``), optimizer *state* that belongs to no
weight (``beta1_power``, TF2's ``optimizer/iter``) and *step counters* (``global_step``, TF2's
``save_counter``). ``strip --optimizer-slots`` drops the first two kinds; conversions leave out all
three unless asked. Recognition is by name (TensorFlow names slots after the optimizer), and a
slot is only called one when its primary variable is in the same checkpoint, so a weight that
happens to be called ``.../Momentum`` is not mistaken for one.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass

__all__ = [
    "SLOT_NAMES",
    "SUFFIX_SLOT_NAMES",
    "TRAINING_STATE",
    "VariableRole",
    "classify_by_name",
    "describe",
    "clean_name",
]

#: Slot names TF 1.x optimizers give their slots, and the optimizer each belongs to.
SLOT_NAMES = {
    "Adam": "Adam", "Adam_1": "Adam",
    "Momentum": "Momentum",
    "RMSProp": "RMSProp", "RMSProp_1": "RMSProp",
    "Adagrad": "Adagrad",
    "AdagradDA": "AdagradDA", "AdagradDA_1": "AdagradDA",
    "ProximalAdagrad": "ProximalAdagrad",
    "Ftrl": "Ftrl", "Ftrl_1": "Ftrl",
    "Adadelta": "Adadelta", "Adadelta_1": "Adadelta",
    "AdaMax": "AdaMax", "AdaMax_1": "AdaMax",
    "Nadam": "Nadam", "Nadam_1": "Nadam",
    "LazyAdam": "LazyAdam", "LazyAdam_1": "LazyAdam",
    # optimizers written outside tf.train, which name their moments themselves: BERT's and
    # ELECTRA's AdamWeightDecayOptimizer and ALBERT's LAMBOptimizer both write adam_m/adam_v
    # (a .meta tells which: ckptsurgery.graphdef.roles)
    "adam_m": "AdamWeightDecay or LAMB", "adam_v": "AdamWeightDecay or LAMB",
    "lamb_m": "LAMB", "lamb_v": "LAMB",
}

#: Slots appended to the weight's own name (``w_slot_vr``), and the optimizer each belongs to.
SUFFIX_SLOT_NAMES = {"_slot_vr": "Adafactor", "_slot_vc": "Adafactor", "_slot_v": "Adafactor"}

#: Kinds that are training state, dropped by ``strip --optimizer-slots``.
TRAINING_STATE = ("slot", "optimizer")

_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# A second optimizer in one graph suffixes its slots again: Adam_2, Adam_3, Momentum_1 ...
_SLOT_RE = re.compile(
    r"^(?P<primary>.+?)(?:/t_\d+)?/(?P<slot>(?P<base>[A-Za-z]+?|adam_[mv]|lamb_[mv])(?:_\d+)?)$")
_SUFFIX_SLOT_RE = re.compile(r"^(?P<primary>.+?)(?P<slot>_slot_v[rc]?)$")
_TF2_SLOT_RE = re.compile(
    r"^(?P<primary>.+)/\.OPTIMIZER_SLOT/(?P<opt>.+)/(?P<slot>[^/]+)" + re.escape(_TF2_SUFFIX) + "$"
)
_POWER_RE = re.compile(r"(?:^|/)beta[12]_power(?:_\d+)?$")
# Keras 2 in a TF1 graph keeps its optimizer's moments and counters under training/<Optimizer>/
# (training/Adam/Variable_3, training/SGD/iterations), named after no weight.
_KERAS_STATE_RE = re.compile(
    r"^training(?:_\d+)?/(?P<opt>Adam|SGD|RMSprop|Adagrad|Adadelta|Adamax|Nadam|Ftrl)/")
_STEP_NAMES = {"global_step", "training_step", "save_counter"}


@dataclass(frozen=True)
class VariableRole:
    """The role of one checkpoint key.

    ``kind`` is ``"model"``, ``"slot"`` (``primary`` is the weight it shadows, ``slot`` its slot
    name), ``"optimizer"`` (state of an optimizer that belongs to no weight), ``"step"``
    (``global_step``, ``save_counter``), ``"ema"`` (an ``ExponentialMovingAverage`` shadow;
    ``primary`` is the averaged weight) or ``"bookkeeping"`` (TF2's object graph entry).
    ``optimizer`` names the optimizer where it is known; ``source`` is ``"name"`` or
    ``"graph"`` (read from the ops, :mod:`ckptsurgery.graphdef.roles`); ``by_name`` is what
    the name rule said where it disagrees with the graph.
    """

    kind: str
    optimizer: str | None = None
    primary: str | None = None
    slot: str | None = None
    source: str = "name"
    by_name: str | None = None


def describe(role: VariableRole) -> str:
    """A role in words: ``slot adam_m (AdamWeightDecay) of bert/pooler/dense/kernel``."""
    if role.kind == "slot":
        return f"slot {role.slot} ({role.optimizer}) of {role.primary}"
    if role.kind == "optimizer":
        return f"optimizer state ({role.optimizer})" if role.optimizer else "optimizer state"
    if role.kind == "ema":
        return f"moving average of {role.primary}" if role.primary else "moving average"
    return role.kind


def clean_name(key: str) -> str:
    """A checkpoint key without TF2's ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix."""
    return key[: -len(_TF2_SUFFIX)] if key.endswith(_TF2_SUFFIX) else key


def classify_by_name(names: Iterable[str],
                     known: Container[str] = ()) -> dict[str, VariableRole]:
    """The role of every key in ``names`` (the keys of one checkpoint) but those in ``known``
    (whose roles the graph gave), by name only (what
    :func:`ckptsurgery.graphdef.roles.classify` falls back to without a graph).

    Returns:
        ``{key: VariableRole}`` in the order of ``names``.
    """
    names = list(names)
    present = set(names)
    roles: dict[str, VariableRole] = {}
    optimizer_paths: set[str] = set()
    for name in names:
        m = _TF2_SLOT_RE.match(name)
        if m and m.group("primary") + _TF2_SUFFIX in present:
            opt = m.group("opt")
            optimizer_paths.add(opt)
            roles[name] = VariableRole("slot", opt.rsplit("/", 1)[-1],
                                       m.group("primary") + _TF2_SUFFIX, m.group("slot"))
    for name in names:
        if name in roles or name in known:
            continue
        roles[name] = _classify_one(name, present, optimizer_paths)
    return {n: roles[n] for n in names if n in roles}


def _classify_one(name: str, present: set[str], optimizer_paths: set[str]) -> VariableRole:
    if name == "_CHECKPOINTABLE_OBJECT_GRAPH":
        return VariableRole("bookkeeping")
    plain = clean_name(name)
    if plain.rsplit("/", 1)[-1].lower() in _STEP_NAMES:
        return VariableRole("step")
    if _POWER_RE.search(plain):
        return VariableRole("optimizer", "Adam")
    keras = _KERAS_STATE_RE.match(plain)
    if keras:
        return VariableRole("optimizer", keras.group("opt"))
    head = plain.split("/", 1)[0]
    if name.endswith(_TF2_SUFFIX) and (head == "optimizer" or any(
            plain.startswith(p + "/") for p in optimizer_paths)):
        return VariableRole("optimizer", head)
    if plain.endswith("/ExponentialMovingAverage"):
        primary = name[: -len("/ExponentialMovingAverage")]
        if primary in present:
            return VariableRole("ema", None, primary, "ExponentialMovingAverage")
    m = _SLOT_RE.match(name)
    if m and m.group("primary") in present:
        slot = m.group("slot")
        optimizer = SLOT_NAMES.get(slot) or SLOT_NAMES.get(m.group("base"))
        if optimizer is not None:
            return VariableRole("slot", optimizer, m.group("primary"), slot)
    m = _SUFFIX_SLOT_RE.match(name)
    if m and m.group("primary") in present:
        return VariableRole("slot", SUFFIX_SLOT_NAMES[m.group("slot")], m.group("primary"),
                            m.group("slot").lstrip("_"))
    return VariableRole("model")
