"""Placeholders a graph needs besides its inputs and labels, and the values to feed them.

Most TF1 models have switches: a ``bool`` ``is_training`` (batch norm, dropout), a scalar
``keep_prob``, an RNN's initial state. Training, validating and evaluating must feed them, and
so must every user of an exported graph, unless the export makes them
``PlaceholderWithDefault`` of the value used: :func:`with_defaults` does that at the protobuf
level, so serving, tf2onnx and the next graft need no feeds. Values come from ``--feed
NAME=VALUE`` (:func:`parse_feed`) or, for the two kinds whose meaning the name gives away, a
default: a training switch is ``false``, a keep probability ``1.0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SelectionError, UserError, nearest
from .metagraph import (
    free_name,
    node_map,
    op_name,
    placeholder_shape,
    placeholders,
    reroute,
    shape_text,
)
from .walk import consumers

__all__ = ["Feed", "parse_feed", "resolve_feeds", "default_feed", "is_training_switch",
           "suggest_value", "with_defaults", "baked_in", "with_dynamic_batch", "feed_array"]

_TRAINING_RE = re.compile(r"(?:^|[/_])(?:is_?)?train(?:ing)?(?:_?(?:mode|phase|flag))?$|"
                          r"(?:^|[/_])phase_?train$|(?:^|[/_])train_?mode$", re.I)
_KEEP_PROB_RE = re.compile(r"keep_?prob", re.I)
_DROPOUT_RE = re.compile(r"(?:^|/)[Dd]ropout(?:_\d+)?/")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


@dataclass(frozen=True)
class Feed:
    """The value fed to placeholder ``name`` (``dtype`` and ``shape`` as the graph declares
    them, ``None`` for unknown dimensions): ``value`` is a bool or number, or None for zeros
    shaped like the placeholder, its batch dimension taken from the batch fed to the inputs.
    ``origin`` says where the value came from (``--feed`` or the default rule that chose it)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None
    value: bool | float | int | None
    origin: str

    def __str__(self) -> str:
        shown = "zeros" if self.value is None else str(self.value).lower()
        return f"{self.name}={shown} ({self.origin})"


def parse_feed(text: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` (``is_training=false``, ``keep_prob=1.0``, ``init_state=zeros``).

    Raises:
        UserError: no ``=``, or an empty name or value.
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UserError(f"--feed '{text}' is not NAME=VALUE (e.g. is_training=false, "
                        "keep_prob=1.0, init_state=zeros)")
    return op_name(name.strip()), value.strip()


def is_training_switch(name: str, dtype: str) -> bool:
    """A ``bool`` placeholder whose name says training (``is_training``, ``training``,
    ``phase_train``, ``train_mode``...)."""
    return dtype == "bool" and bool(_TRAINING_RE.search(name))


def resolve_feeds(meta, needed: list[str], given: dict[str, str]) -> dict[str, Feed]:
    """The value of every placeholder in ``needed``: from ``given`` (``{name: value text}``)
    or from the default rules. Names in ``given`` must be placeholders of the graph; those not
    in ``needed`` get no :class:`Feed` (the caller may warn that they are unused).

    Raises:
        SelectionError: ``given`` names no placeholder of the graph (nearest names given).
        UserError: a value does not parse for its placeholder's dtype, ``zeros`` cannot be
            shaped, or a needed placeholder has neither a value nor a default (the message
            lists them with the ``--feed`` to write).
    """
    kinds = placeholders(meta)
    for name in given:
        if name not in kinds:
            near = nearest(name, kinds)
            raise SelectionError(
                f"--feed names '{name}', which is not a placeholder of the graph"
                + (f"; did you mean {', '.join(repr(n) for n in near)}?" if near else
                   f"; its placeholders are {', '.join(sorted(kinds)) or '(none)'}"))
    feeds, unfed = {}, []
    for name in needed:
        dtype, shape = kinds[name], placeholder_shape(meta, name)
        if name in given:
            feeds[name] = Feed(name, dtype, shape, _parse_value(name, dtype, shape, given[name]),
                               "--feed")
        elif (default := default_feed(meta, name)) is not None:
            feeds[name] = default
        else:
            unfed.append((name, dtype, shape))
    if unfed:
        readers = consumers(meta)
        listed = "; ".join(
            f"{n} ({d} {shape_text(s)}, read by {', '.join(readers.get(n, ['nothing'])[:2])})"
            + (f", e.g. --feed {n}={hint}" if (hint := suggest_value(n, d, s)) else "")
            for n, d, s in unfed)
        raise UserError(f"the graph needs placeholder(s) fed besides the inputs and labels: "
                        f"{listed}; give each a value that keeps the model meaningful with "
                        "--feed NAME=VALUE")
    return feeds


def default_feed(meta, name: str) -> Feed | None:
    """The value of placeholder ``name`` when its name or its readers give its meaning away,
    the same in ``inspect`` and ``graft``: a ``bool`` training switch or the predicate of a
    ``cond`` is false; a float scalar that a dropout reads is a keep probability (1.0) or,
    read by ``1 - rate`` or compared with the random draw, a rate (0.0). None when nothing
    says (a placeholder with a shape is data: an input, a mask, a state)."""
    dtype, shape = placeholders(meta)[name], placeholder_shape(meta, name)
    found = _default(meta, name, dtype, shape)
    return None if found is None else Feed(name, dtype, (), *found)


def _default(meta, name: str, dtype: str, shape) -> tuple | None:
    if shape not in ((), None):
        return None
    if dtype == "bool":
        if is_training_switch(name, dtype):
            return False, "default: a training switch"
        nodes = node_map(meta)
        if any(nodes[r].op in ("Switch", "RefSwitch", "Select", "SelectV2", "If", "StatelessIf")
               for r in consumers(meta).get(name, ())):
            return False, "default: it selects a branch (training mode off)"
        return None
    if not dtype.startswith(("float", "bfloat")):
        return None
    if _KEEP_PROB_RE.search(name):
        return 1.0, "default: a keep probability"
    nodes = node_map(meta)
    for reader in consumers(meta).get(name, ()):
        if not _DROPOUT_RE.search(reader):
            continue
        node = nodes[reader]
        data = [op_name(i) for i in node.input if not i.startswith("^")]
        if node.op in ("GreaterEqual", "Less") or (node.op == "Sub" and data[1:] == [name]):
            return 0.0, f"default: a dropout rate (read by {reader})"
        return 1.0, f"default: a keep probability (read by {reader})"
    return None


def feed_array(feed: Feed, batch: int):
    """The numpy value to feed for a batch of ``batch`` rows."""
    import numpy as np

    dtype = np.dtype(feed.dtype) if feed.dtype != "bfloat16" else np.float32
    if feed.value is not None:
        return np.full(feed.shape or (), feed.value, dtype)
    return np.zeros(_zeros_shape(feed, batch), dtype)


def with_defaults(meta, feeds: dict[str, Feed], inputs: str):
    """A copy of ``meta`` in which each fed placeholder is a ``PlaceholderWithDefault`` of its
    value; zeros take their batch dimension from the batch fed to ``inputs`` at run time.

    Returns:
        ``(new_meta, {placeholder name: name of its default's tensor})``.
    """
    import tensorflow as tf

    from ..formats.protos import from_tensorflow

    tf1 = tf.compat.v1
    new = type(meta)()
    new.CopyFrom(meta)
    nodes = node_map(new)
    taken = set(nodes)
    defaults = {}
    input_dtype = tf.as_dtype(nodes[op_name(inputs)].attr["dtype"].type)
    for name, feed in feeds.items():
        scratch = tf.Graph()
        with scratch.as_default():
            x = tf1.placeholder(input_dtype, name="scratch_inputs")
            dtype = tf.as_dtype(feed.dtype)
            if feed.value is None and feed.shape and None in feed.shape:
                dims = [tf1.shape(x)[0] if d is None else d for d in _zeros_shape(feed, None)]
                tf1.fill(tf1.stack(dims), tf1.constant(0, dtype), name="default")
            else:
                tf1.constant(feed_array(feed, 1), dtype, name="default")
        prefix = free_name(f"{name}/default", taken)
        renames = {n.name: (prefix if n.name == "default" else f"{prefix}/{n.name}")
                   for n in scratch.as_graph_def().node if n.name != "scratch_inputs"}
        for node in from_tensorflow(scratch.as_graph_def()).node:
            if node.name == "scratch_inputs":
                continue
            added = new.graph_def.node.add()
            added.CopyFrom(node)
            added.name = renames[node.name]
            taken.add(added.name)
            inputs_of = [_retarget(i, renames, inputs) for i in added.input]
            del added.input[:]
            added.input.extend(inputs_of)
        holder = nodes[name]
        holder.op = "PlaceholderWithDefault"
        del holder.input[:]
        holder.input.append(prefix)
        # The shape as read (old graphs leave the attr empty for "unknown", which the new op
        # would take for a scalar).
        holder.attr["shape"].shape.Clear()
        if feed.shape is None:
            holder.attr["shape"].shape.unknown_rank = True
        for d in feed.shape or ():
            holder.attr["shape"].shape.dim.add().size = -1 if d is None else d
        defaults[name] = f"{prefix}:0"
    return new, defaults


def baked_in(meta, feeds: dict[str, Feed], inputs: str):
    """A copy of ``meta`` in which the readers of each fed placeholder read its value instead
    (:func:`with_defaults`'s default tensor): what an export does, so that nothing is left to
    feed and converters see no placeholder (TFLite cannot lower a ``PlaceholderWithDefault``
    whose default has a dynamic shape). The placeholders stay, with no reader."""
    new, defaults = with_defaults(meta, feeds, inputs)
    reroute(new.graph_def, {f"{name}:0": tensor for name, tensor in defaults.items()},
            skip=set(defaults))
    return new


def with_dynamic_batch(meta, names: list[str]):
    """A copy of ``meta`` whose placeholders ``names`` take any batch size (first dimension)
    and say their shape in full (graphs before TF 1.2 kept it only in ``_output_shapes``),
    with no node's recorded ``_output_shapes`` (the import reads them, with the old batch) and
    TF 0.x's ``Variable`` ops as ``VariableV2``."""
    new = type(meta)()
    new.CopyFrom(meta)
    nodes = node_map(new)
    for name in names:
        node = nodes.get(name)
        if node is None or node.op != "Placeholder":
            continue
        shape = placeholder_shape(meta, name)
        if shape is None:
            continue
        proto = node.attr["shape"].shape
        proto.Clear()
        for i, d in enumerate(shape):
            proto.dim.add().size = -1 if i == 0 or d is None else d
    for node in new.graph_def.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
        if node.op == "Variable":  # TF 0.x's op: what converters freeze is its V2 (same attrs)
            node.op = "VariableV2"
    return new


def _zeros_shape(feed: Feed, batch: int | None) -> list:
    """The shape of zeros for ``feed``: its first unknown dimension is the batch."""
    if feed.shape is None:
        raise UserError(f"--feed {feed.name}=zeros: the placeholder's shape is unknown; "
                        "give a number instead")
    unknown = [i for i, d in enumerate(feed.shape) if d is None]
    if len(unknown) > 1:
        raise UserError(f"--feed {feed.name}=zeros: shape {shape_text(feed.shape)} has several "
                        "unknown dimensions; only the batch may be unknown")
    return [batch if d is None else d for d in feed.shape]


def _parse_value(name: str, dtype: str, shape, text: str):
    lowered = text.lower()
    if lowered == "zeros":
        feed = Feed(name, dtype, shape, None, "--feed")
        _zeros_shape(feed, 1)  # raises when it cannot be shaped
        return None
    if dtype == "bool":
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise UserError(f"--feed {name}={text}: '{name}' is a bool placeholder; give true or false")
    try:
        number = float(text)
    except ValueError:
        raise UserError(f"--feed {name}={text}: cannot read '{text}' as a value for {dtype} "
                        f"placeholder '{name}'; give a number or zeros") from None
    if dtype.startswith(("int", "uint")):
        if not number.is_integer():
            raise UserError(f"--feed {name}={text}: '{name}' is {dtype}; give a whole number")
        return int(number)
    return number


def suggest_value(name: str, dtype: str, shape) -> str | None:
    """An example value that keeps the model meaningful, or None when there is none to guess:
    zeros for a batch of states (an RNN's initial state), never for a mask (which would hide
    every token) nor for a scalar (a keep probability of 0, a learning rate of 0)."""
    if dtype == "bool":
        return "false"
    if shape and None in shape[:1] and "mask" not in name.lower():
        return "zeros"
    return None


def _retarget(ref: str, renames: dict[str, str], inputs: str) -> str:
    caret = "^" if ref.startswith("^") else ""
    name = op_name(ref)
    rest = ref[len(caret) + len(name):]
    if name == "scratch_inputs":
        target = op_name(inputs)
        index = inputs.rpartition(":")[2] if ":" in inputs else "0"
        return caret + target + (rest if rest else (f":{index}" if index != "0" else ""))
    return caret + renames.get(name, name) + rest
