"""Finding things in graphs: tensors by collection, tensor or op name; variables by scope regex.

A miss never returns an empty list: it raises :class:`NotFoundError` or :class:`SelectionError`
with the nearest names, so that asking for ``hidden3`` in a model that saved ``hiddens3`` says so.
"""

from __future__ import annotations

import re
import warnings

from ..errors import CkptSurgeryWarning, NotFoundError, SelectionError, nearest, some
from ..formats.metafile import VARIABLE_COLLECTIONS
from .feeds import default_feed
from .metagraph import node_map, op_name, placeholder_shape, placeholders
from .walk import consumers

__all__ = [
    "resolve_tensor",
    "find_placeholder",
    "find_inputs",
    "select_variables",
    "scope_matches",
]


def resolve_tensor(meta, ref: str) -> str:
    """The tensor name (``op:index``) that ``ref`` names in a ``MetaGraphDef``.

    ``ref`` is tried as a collection key (holding exactly one tensor), then as a tensor name
    (``dnn/hidden3/Relu:0``), then as an op name (its first output).

    Raises:
        NotFoundError: nothing is called ``ref``; the message lists the nearest collections and ops.
        SelectionError: ``ref`` is a collection holding other than one tensor.
    """
    nodes = node_map(meta)
    if ref in meta.collection_def and ref not in VARIABLE_COLLECTIONS:
        col = meta.collection_def[ref]
        items = list(col.node_list.value) if col.HasField("node_list") else []
        if len(items) != 1:
            raise SelectionError(
                f"collection '{ref}' holds {len(items)} tensors, not one"
                + (f" ({', '.join(items[:5])}); name one of them instead" if items else "")
            )
        return _as_tensor_name(items[0])
    name = op_name(ref)
    if name in nodes:
        tensor = ref if ref != name else f"{name}:0"
        index = int(tensor.rpartition(":")[2])
        n_out = _num_outputs(nodes[name])
        if n_out is not None and index >= n_out:
            raise NotFoundError(f"op '{name}' has {n_out} output(s); '{ref}' does not exist")
        return tensor
    raise NotFoundError(_miss_message(ref, meta, nodes))


def find_placeholder(meta, ref: str | None, collection: str, kind: str,
                     among: set[str] | None = None, exclude: set[str] = frozenset()) -> str | None:
    """The graph's input (``kind='float'``) or label (``kind='integer'``) tensor name.

    Order: ``ref`` if given; else the single-tensor collection ``collection``; else the only
    placeholder of that kind (within ``among`` op names when given, never one in ``exclude``).
    A scalar is never the input (it is a ``keep_prob`` or a learning rate), nor a ``bool``
    placeholder either kind, nor one whose readers make it a switch
    (:func:`~ckptsurgery.graphdef.feeds.default_feed`: a keep probability declared without a
    shape), nor one that only feeds an input queue (an Estimator's
    ``enqueue_input/Placeholder_N``: the model reads the queue, not it). Returns None when the
    graph has no such placeholder.

    Raises:
        SelectionError: several placeholders fit; the message lists them and the option to use.
    """
    if ref is not None:
        return resolve_tensor(meta, ref)
    if collection in meta.collection_def:
        return resolve_tensor(meta, collection)
    readers = consumers(meta)
    fits = sorted(
        name for name, dtype in placeholders(meta).items()
        if (among is None or name in among) and name not in exclude
        and not (readers.get(name) and all(node_map(meta)[r].op.startswith("QueueEnqueue")
                                           for r in readers[name]))
        and (dtype.startswith(("float", "bfloat")) and placeholder_shape(meta, name) != ()
             and default_feed(meta, name) is None
             if kind == "float" else dtype.startswith(("int", "uint")))
    )
    if len(fits) > 1:
        option = "--inputs" if kind == "float" else "--labels"
        raise SelectionError(
            f"the graph has {len(fits)} {kind} placeholders ({some(fits)}) and no "
            f"'{collection}' collection; say which one with {option} NAME"
            + (" (and give the others values with --feed NAME=VALUE)" if kind == "float" else "")
        )
    return f"{fits[0]}:0" if fits else None


def find_inputs(meta, ref: str | None, among: set[str], exclude: set[str] = frozenset()
                ) -> list[str]:
    """The input tensors a graft below ``among`` (op names) feeds.

    ``ref`` names them, comma-separated; else the float input :func:`find_placeholder` finds;
    else, for a model of token ids, every integer placeholder with a batch axis in ``among``
    (``input_ids``, ``input_mask``, ``segment_ids``: a mask is an input, never a switch to
    feed zeros), in graph order. Empty when none fits.

    Raises:
        NotFoundError: a name in ``ref`` names nothing (nearest names given).
        SelectionError: several float placeholders fit.
    """
    if ref is not None and "," in ref:
        return [resolve_tensor(meta, r.strip()) for r in ref.split(",") if r.strip()]
    single = find_placeholder(meta, ref, "inputs", "float", among=among, exclude=exclude)
    if single is not None:
        return [single]
    kinds = placeholders(meta)
    return [f"{name}:0" for name in kinds if name in among and name not in exclude
            and kinds[name].startswith(("int", "uint"))
            and len(placeholder_shape(meta, name) or ()) >= 1]


def scope_matches(regex: str, name: str) -> re.Match | None:
    """Whether ``name`` is in scope ``regex``, exactly as ``get_collection(key, scope=regex)``
    decides it (``re.match``: anchored at the start, not at the end)."""
    return re.match(regex, name)


def select_variables(graph, regex: str, collection: str = "variables", what: str = "--scope"):
    """The variables of ``collection`` in ``graph`` whose name is in scope ``regex``.

    Semantics are those of ``tf.compat.v1.get_collection(collection, scope=regex)``. A regex that
    matches only part of a scope name (``hidden1`` catching ``hidden10/kernel``) gives a
    :class:`CkptSurgeryWarning`.

    Raises:
        SelectionError: ``regex`` is invalid or matches no variable (never a silent no-op).
    """
    try:
        re.compile(regex)
    except re.error as e:
        raise SelectionError(f"{what} '{regex}' is not a valid regular expression: {e}") from e
    variables = graph.get_collection(collection)
    chosen = graph.get_collection(collection, scope=regex)
    if not chosen:
        scopes = sorted({v.op.name.split("/")[0] for v in variables})
        raise SelectionError(
            f"{what} '{regex}' matches no variable in collection '{collection}'; "
            f"top-level scopes are: {', '.join(scopes) or '(none)'}"
        )
    for v in chosen:
        m = scope_matches(regex, v.op.name)
        end = m.end()
        name = v.op.name
        if 0 < end < len(name) and name[end] != "/" and name[end - 1] != "/":
            warnings.warn(
                f"{what} '{regex}' matches '{name}' only through part of a scope name; "
                f"anchor it (e.g. '{regex}/') if that is not what you meant",
                CkptSurgeryWarning,
                stacklevel=2,
            )
    return chosen


def _as_tensor_name(item: str) -> str:
    return item if op_name(item) != item else f"{item}:0"


def _num_outputs(node) -> int | None:
    shapes = node.attr.get("_output_shapes")
    return len(shapes.list.shape) if shapes is not None and shapes.list.shape else None


#: Op types whose outputs are a layer's output: what a reference to a tensor most likely meant.
LAYER_OUTPUT_OPS = frozenset({
    "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Tanh", "Sigmoid", "Softmax", "Softplus",
    "BiasAdd", "MatMul", "Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "Mean",
    "FusedBatchNorm", "FusedBatchNormV3", "Gelu"})
#: Name scopes of training machinery, never a layer's output.
_TRAINING_SCOPES = ("gradients", "train", "optimizer", "save", "Adam", "GradientDescent",
                    "Momentum", "RMSProp", "Adagrad", "Ftrl", "loss", "metrics")


def _miss_message(ref: str, meta, nodes) -> str:
    """The miss, with the nearest names: collections and ops spelled alike or containing
    ``ref``; failing those, the layer outputs whose names look most like it (a graph whose only
    collection is ``train_op`` still gets names to try)."""
    import difflib

    keys = [k for k in meta.collection_def if k not in VARIABLE_COLLECTIONS]
    near_keys = nearest(ref, keys, n=2)
    near_ops = nearest(op_name(ref), nodes, n=3)
    hints = [f"collection '{k}'" for k in near_keys] + [f"op '{o}'" for o in near_ops]
    msg = f"no collection or tensor '{ref}'"
    if hints:
        return msg + f"; did you mean {' or '.join(hints[:3])}?"
    outputs = [n for n, node in nodes.items() if node.op in LAYER_OUTPUT_OPS
               and n.split("/")[0] not in _TRAINING_SCOPES]
    want = op_name(ref).lower()
    outputs.sort(key=lambda n: -difflib.SequenceMatcher(None, want, n.lower()).ratio())
    if outputs:
        return msg + (f"; the nearest layer outputs are {', '.join(repr(o) for o in outputs[:3])}"
                      " ('ckptsurgery inspect CKPT --check-import' lists graft points)")
    return msg + f"; collections are: {', '.join(sorted(keys)) or '(none)'}"
