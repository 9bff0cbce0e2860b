"""Where to graft: a model's inference outputs and the activations on the way to them.

Users of old models rarely know their input and output names. :func:`find_graft_points` reads
the graph: the inference outputs (output collections, the logits of a cross-entropy, softmax
and argmax ops; never a loss, a metric, a summary, or anything that depends on a label), the
input placeholders they depend on, and along the path between them the activations a graft can
stand on (ReLU and friends, pooling, flattening, the final state of a TF1 loop), with their
shapes, nearest to the output first. Each point carries the flags a graft there needs
(``--inputs``, ``--pool``, ``--feed``). Shapes come from importing the graph into a scratch
``tf.Graph``, so a graph this TensorFlow cannot import has no graft points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import CkptSurgeryError
from ..graphdef.feeds import default_feed, resolve_feeds, suggest_value
from ..graphdef.layergroups import output_layers
from ..graphdef.metagraph import (
    analysis,
    frozen,
    node_map,
    nodes_of_type,
    op_name,
    placeholder_shape,
    placeholders,
)
from ..graphdef.walk import ancestors, by_distance, consumers, reachable
from .importer import import_meta_graph

__all__ = ["GraftPoint", "find_graft_points", "inference_outputs"]

#: Op types whose output is an activation a new layer can stand on.
ACTIVATION_OPS = frozenset({
    "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Tanh", "Sigmoid", "Softplus", "Softsign",
    "MaxPool", "AvgPool", "MaxPoolV2", "MaxPool3D", "AvgPool3D", "Exit",
    "Maximum",  # leaky ReLU written as tf.maximum(alpha * z, z)
})
_FLATTEN_OPS = frozenset({"Reshape", "Mean", "Max", "Squeeze"})  # flatten, global pooling
_LOSS_OPS = frozenset({"SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits",
                       "SigmoidCrossEntropyWithLogits"})
_LAYER_OPS = frozenset({"MatMul", "Conv2D", "Conv1D", "Conv3D", "BatchMatMul", "BatchMatMulV2",
                        "BatchMatMulV3", "Einsum", "DepthwiseConv2dNative"})
_PREDICTION_OPS = frozenset({"Softmax", "Sigmoid", "ArgMax", "TopKV2", "LogSoftmax"})
_OUTPUT_COLLECTIONS = ("logits", "outputs", "output", "predictions", "prediction", "y_pred",
                       "y_proba", "probabilities", "scores")
# Op types that end a path without being an output: bookkeeping, shapes, summaries, asserts.
_NOT_OUTPUTS = frozenset({"Shape", "Size", "Rank", "ShapeN", "NoOp", "Assert", "Identity",
                          "ScalarSummary", "HistogramSummary", "MergeSummary", "Print",
                          "PrintV2", "StopGradient", "ZerosLike", "OnesLike", "Fill", "Const",
                          "Placeholder", "PlaceholderWithDefault", "StridedSlice", "Pack",
                          "Unpack", "Cast", "ArgMax", "ArgMin", "Equal", "NotEqual", "Less",
                          "Greater", "InTopK", "InTopKV2"})
_VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp"})
_LAYER_NORM_RE = re.compile(r"(?:^|/)(?:LayerNorm|layer_norm|ln_\w+)(?:/|$)", re.I)
_SKIP_SCOPES = ("gradients", "loss", "losses", "metrics", "eval", "accuracy", "summaries",
                "save", "train", "optimizer", "Adam", "GradientDescent", "Momentum", "RMSProp",
                "Adagrad", "cross_entropy", "xent")


@dataclass(frozen=True)
class GraftPoint:
    """A tensor to graft on (``at``), its static ``shape`` (None for unknown dimensions) and
    the ``flags`` a graft there needs besides ``--at`` and ``--dense``."""

    at: str
    op: str
    shape: list | None
    flags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"at": self.at, "op": self.op, "shape": self.shape, "flags": self.flags}


@analysis
def inference_outputs(meta) -> list[str]:
    """Tensors that are the model's inference outputs, most likely first: output collections,
    the logits fed to a cross-entropy, then softmax/argmax-like ops; none that depends on a
    label placeholder or sits in a loss, metric or training scope. Without any of those, the
    outputs of the layers no other layer reads
    (:func:`~ckptsurgery.graphdef.layergroups.output_layers`): a DQN's online network, whose
    output feeds only its loss, and its target network; a GAN's discriminator."""
    nodes = node_map(meta)
    losses = [n for n in nodes_of_type(meta, *_LOSS_OPS) if not n.name.startswith("gradients")]
    labels = _label_placeholders(meta, losses)
    readers = consumers(meta)
    tainted = reachable(labels, lambda n: readers.get(n, ())) if labels else set()
    found: list[str] = []

    def add(ref: str) -> None:
        ref = ref if ":" in ref else ref + ":0"
        name = op_name(ref)
        if name in nodes and name not in tainted and not _skipped(name) and ref not in found:
            found.append(ref)

    for key in _OUTPUT_COLLECTIONS:
        col = meta.collection_def.get(key) if key in meta.collection_def else None
        if col is not None and col.HasField("node_list"):
            for ref in col.node_list.value:
                add(ref)
    for node in losses:
        if node.input:
            add(node.input[0] if node.op != "SigmoidCrossEntropyWithLogits" else node.input[1])
    # a softmax that feeds a matmul is attention's weights, not an output
    predictions = [n.name for n in nodes_of_type(meta, *_PREDICTION_OPS)
                   if not _in_loop(n.name) and not _skipped(n.name)
                   and not any(nodes[r].op in _LAYER_OPS for r in readers.get(n.name, ()))]
    hidden = set()  # a sigmoid under another layer's weights is a hidden layer, not an output
    for later in predictions:
        below = ancestors(meta, [later])
        layers = [m for m in below if nodes[m].op in _LAYER_OPS]
        under = set().union(*(ancestors(meta, [m]) for m in layers)) if layers else set()
        hidden |= {c for c in predictions if c != later and c in under}
    for name in predictions:
        if name not in hidden:
            add(name)
    if not found:  # the layers no other layer reads (an embedding is never the output)
        for layer in output_layers(meta):
            if layer.kind not in ("Gather", "GatherV2", "ResourceGather"):
                for ref in layer.outputs:
                    add(ref)
    if not found:
        found = [f"{n}:0" for n in _forward_sinks(meta, tainted)]
    return found


def _forward_sinks(meta, tainted: set[str]) -> list[str]:
    """What a graph computes when nothing names its output (Q-values, a reconstruction, a
    language model's logits, a BERT whose logits sit in a ``loss`` scope): the float ops that
    data from the input placeholders reaches and that no forward op reads further, apart from
    losses, metrics, summaries and training; nearest to the inputs' deepest layer first."""
    nodes = node_map(meta)
    readers = consumers(meta)
    kinds = placeholders(meta)
    inputs = [p for p in kinds if p not in tainted and placeholder_shape(meta, p)]
    forward = reachable(inputs, lambda n: [r for r in readers.get(n, ()) if not
                                           _training(r) and r not in tainted])
    sinks = []
    for name in forward:
        node = nodes[name]
        if node.op in _NOT_OUTPUTS or _in_loop(name) or not _float_output(node):
            continue
        if not any(r in forward and nodes[r].op not in _NOT_OUTPUTS
                   for r in readers.get(name, ())):
            sinks.append(name)
    depth = {n: len(ancestors(meta, [n]) & forward) for n in sinks}
    return sorted(sinks, key=lambda n: (-depth[n], n))


def find_graft_points(meta, *, limit: int = 8) -> tuple[list[GraftPoint], str | None]:
    """The graft points of ``meta``, nearest to its first inference output first.

    Returns:
        ``(points, why_none)``: ``why_none`` says why the list is empty (no inference output,
        no float input below it, the graph does not import).
    """
    with frozen(meta):  # the walks below ask the same of the graph many times
        return _find_graft_points(meta, limit)


def _find_graft_points(meta, limit: int) -> tuple[list[GraftPoint], str | None]:
    import tensorflow as tf

    outputs = inference_outputs(meta)
    if not outputs:
        return [], "no inference output found (no output collection, cross-entropy or softmax)"
    nodes = node_map(meta)
    kinds = placeholders(meta)
    output = op_name(outputs[0])
    below = ancestors(meta, [output])
    inputs = [p for p in kinds if p in below and _input_like(meta, p, kinds[p])] or [
        p for p in integer_inputs(meta) if p in below]  # token ids
    if not inputs:  # an Estimator: inputs come from a queue, the features from a layer
        inputs = [n for n in below if nodes[n].op in ("ConcatV2", "Concat")
                  and n.endswith("input_layer/concat")]
    if not inputs:
        return [], (f"'{outputs[0]}' depends on no input placeholder or feature layer"
                    if kinds else "the graph has no input placeholder")
    readers = consumers(meta)
    from_inputs = reachable(inputs, lambda name: readers.get(name, ()))
    # the output itself when it is a layer's output (a pooled output, a final layer norm)
    path = [n for n in by_distance(meta, output) if n in from_inputs
            and (n != output or nodes[n].op in ("Tanh", "Relu", "Elu", "Selu")
                 or _layer_norm_end(nodes, n, readers.get(n, ())))
            and (nodes[n].op in ACTIVATION_OPS or _is_flatten(nodes[n])
                 or _layer_norm_end(nodes, n, readers.get(n, ())) or _embedding(nodes, n)
                 or _linear_layer_end(nodes, n, readers.get(n, ()), output))
            and not _gelu_inside(nodes, n, readers.get(n, ()))
            and not _skipped(n) and (nodes[n].op == "Exit" or not _in_loop(n))]
    graph = tf.Graph()
    try:
        import_meta_graph(meta, graph)
    except CkptSurgeryError as e:
        return [], f"the graph does not import: {e}"
    collections = set(meta.collection_def)
    points = []
    for name in path:
        tensor = graph.get_tensor_by_name(f"{name}:0")
        shape = tensor.shape.as_list() if tensor.shape.rank is not None else None
        if not tensor.dtype.is_floating or shape is None or len(shape) < 2 or len(shape) > 4:
            continue
        if len(shape) == 2 and shape[1] is None:
            continue
        flags = _flags(meta, kinds, nodes, name, shape, collections)
        if flags is None:
            continue
        points.append(GraftPoint(f"{name}:0", nodes[name].op, shape, flags))
        if len(points) >= limit:
            break
    return points, None if points else "no activation with a usable shape between input and output"


def _flags(meta, kinds, nodes, name: str, shape: list, collections: set[str]) -> list[str] | None:
    below = ancestors(meta, [name])
    flags = []
    inputs = sorted((p for p in kinds if p in below and _input_like(meta, p, kinds[p])),
                    key=lambda p: _input_rank(meta, p))
    ids = [p for p in integer_inputs(meta) if p in below]
    if not inputs and ids:  # token ids: graft finds them itself
        flags = []
        if len(shape) > 2:
            flags += ["--pool", "flatten" if None not in shape[1:] else "avg"]
        return flags + _feed_flags(meta, kinds, below, set(ids))
    if not inputs:
        layers = sorted(n for n in below if n.endswith("input_layer/concat")
                        and nodes[n].op in ("ConcatV2", "Concat"))
        if not layers:
            return None
        flags += ["--inputs", layers[-1]]
        inputs = []
        chosen = layers[-1]
    else:
        chosen = inputs[0]
    if len(inputs) > 1 and "inputs" not in collections:
        flags += ["--inputs", chosen]
    if len(shape) > 2:
        flags += ["--pool", "flatten" if None not in shape[1:] else "avg"]
    extra = {p: "zeros" for p in inputs[1:]}
    return flags + _feed_flags(meta, kinds, below, {chosen, *ancestors(meta, [chosen])}, extra)


def _feed_flags(meta, kinds, below: set[str], exclude: set[str],
                extra: dict[str, str] | None = None) -> list[str]:
    """``--feed`` flags for the float and bool placeholders in ``below`` but ``exclude`` that
    have no default: an example that keeps the model meaningful, or ``VALUE``."""
    feeds = {}
    for p in kinds:
        if p in below and p not in exclude and not kinds[p].startswith(("int", "uint")):
            try:
                resolve_feeds(meta, [p], {})
            except CkptSurgeryError:
                feeds[p] = suggest_value(p, kinds[p], placeholder_shape(meta, p)) or "VALUE"
    for p, value in (extra or {}).items():
        feeds.setdefault(p, value)
    return [flag for p, value in sorted(feeds.items()) for flag in ("--feed", f"{p}={value}")]


def _input_rank(meta, name: str) -> tuple:
    """Sort key: the likeliest batch input first (highest rank, then a name that says input)."""
    shape = placeholder_shape(meta, name)
    rank = len(shape) if shape is not None else 0
    leaf = name.rsplit("/", 1)[-1].lower()
    named = leaf in ("x", "input", "inputs", "images", "image", "features") or "input" in leaf
    return (-rank, not named, name)


def _training(name: str) -> bool:
    """An op of the training machinery or of a loss, metric or summary."""
    return _skipped(name) or name.startswith("gradients") or "/gradients/" in name


def _float_output(node) -> bool:
    """Whether ``node``'s first output is a float tensor, as far as its attrs tell."""
    for key in ("T", "dtype", "out_type"):
        if key in node.attr and node.attr[key].type:
            return node.attr[key].type in (1, 2, 14, 19)
    return False


def _in_loop(name: str) -> bool:
    """Inside a TF1 while loop's body (a step of the loop, not its result)."""
    return "/while/" in name or name.startswith("while/")


@analysis
def integer_inputs(meta) -> list[str]:
    """Integer placeholders that are a model's inputs, not its labels: token or class ids that
    reach, outside losses and metrics, an op computing with a weight (an embedding's
    ``Gather``, a ``MatMul`` after a ``gather`` of positions), in graph order."""
    nodes = node_map(meta)
    readers = consumers(meta)
    reads = {n for n, node in nodes.items() if node.op in _VARIABLE_OPS or (
        node.op in ("Identity", "ReadVariableOp") and node.input
        and nodes.get(op_name(node.input[0])) is not None
        and nodes[op_name(node.input[0])].op in _VARIABLE_OPS)}
    found = []
    for name, dtype in placeholders(meta).items():
        if not dtype.startswith(("int", "uint")) or not placeholder_shape(meta, name):
            continue
        reached = reachable([name], lambda n: readers.get(n, ()),
                            enter=lambda n: not _training(n))
        if any(op_name(i) in reads for r in reached if r != name
               for i in nodes[r].input if not i.startswith("^")):
            found.append(name)
    return found


def _input_like(meta, name: str, dtype: str) -> bool:
    """A float placeholder that is not a scalar nor a switch with a default (a keep
    probability declared without a shape is not an input)."""
    return dtype.startswith(("float", "bfloat")) and placeholder_shape(meta, name) != () \
        and default_feed(meta, name) is None


def _label_placeholders(meta, losses) -> list[str]:
    """Placeholders that feed one of the ``losses`` (nodes) as its labels, and integer
    placeholders (class labels) but those a model computes with (:func:`integer_inputs`)."""
    kinds = placeholders(meta)
    labels = {p for p, d in kinds.items() if d.startswith(("int", "uint"))} - set(
        integer_inputs(meta))
    for node in losses:
        if len(node.input) > 1:
            which = node.input[0] if node.op == "SigmoidCrossEntropyWithLogits" else node.input[1]
            logits = node.input[1] if node.op == "SigmoidCrossEntropyWithLogits" else node.input[0]
            feeds_logits = ancestors(meta, [logits])
            # a language model reads its labels from its own inputs: those stay inputs
            labels |= {n for n in ancestors(meta, [which]) if n in kinds
                       and n not in feeds_logits}
    return sorted(labels)


def _linear_layer_end(nodes, name: str, readers, output: str) -> bool:
    """The output of a dense or conv layer with no activation (TFLearn's default, say): a
    ``BiasAdd`` (or ``Add``) of a ``MatMul``/``Conv2D`` that no activation follows and that is
    not the logits the output is made of."""
    node = nodes[name]
    if node.op not in ("BiasAdd", "Add", "AddV2") or not node.input:
        return False
    if nodes.get(op_name(node.input[0])) is None or nodes[op_name(node.input[0])].op not in _LAYER_OPS:
        return False
    return not any(nodes[c].op in ACTIVATION_OPS or c == output for c in readers)


def _layer_norm_end(nodes, name: str, readers=()) -> bool:
    """The output of a layer normalisation (BERT's ``LayerNorm``, GPT-2's ``ln_f``,
    ``layer_norm``): the ``Add`` in its scope that no op of the scope reads further."""
    match = _LAYER_NORM_RE.search(name)
    if nodes[name].op not in ("Add", "AddV2") or not match:
        return False
    scope = name[:match.end()].rstrip("/") + "/"
    return not any(r.startswith(scope) for r in readers)


def _embedding(nodes, name: str) -> bool:
    """An embedding's output: a gather from a variable (token ids to vectors)."""
    node = nodes[name]
    if node.op not in ("Gather", "GatherV2", "ResourceGather") or not node.input:
        return False
    src = nodes.get(op_name(node.input[0]))
    while src is not None and src.op in ("Identity", "ReadVariableOp") and src.input:
        src = nodes.get(op_name(src.input[0]))
    return src is not None and src.op in _VARIABLE_OPS


def _gelu_inside(nodes, name: str, readers) -> bool:
    """A ``Tanh`` or ``Sigmoid`` inside an activation (GELU's ``0.5 * (1 + tanh(...))``,
    swish): one that a constant is added to, or whose input is a cube."""
    if nodes[name].op not in ("Tanh", "Sigmoid"):
        return False
    return any(nodes[r].op in ("Add", "AddV2") and any(
        nodes.get(op_name(i)) is not None and nodes[op_name(i)].op == "Const"
        for i in nodes[r].input) for r in readers)


def _is_flatten(node) -> bool:
    return node.op in _FLATTEN_OPS and "flatten" in node.name.lower() or (
        node.op in ("Mean", "Max") and "global" in node.name.lower())


def _skipped(name: str) -> bool:
    head = name.split("/", 1)[0]
    return head in _SKIP_SCOPES or head.lower().startswith(
        ("loss", "metric", "summar", "eval", "accuracy"))
