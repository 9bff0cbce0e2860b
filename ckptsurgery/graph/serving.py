"""A checkpoint's graph made ready to serve, and written as a TF2-loadable SavedModel.

:func:`serving_graph` decides, from the ``.meta`` alone, what an export takes and gives: the
real inputs (``--inputs``, else the graph's input as ``graft`` finds it), the outputs
(``--outputs``, else the first inference output that ``inspect`` shows), and for every other
placeholder the outputs depend on a value baked in (a training switch false, a keep
probability 1.0, ``--feed NAME=VALUE``; :mod:`ckptsurgery.graphdef.feeds`). Its graph has those
values in place of the placeholders, every dropout bypassed
(:mod:`ckptsurgery.graphdef.dropout`), the inputs' batch dimension dynamic and nothing but what
the outputs need. What cannot run outside the training program (a queue or iterator input, a
``py_func``) is refused with the op named. :func:`write_saved_model` imports it, restores the
checkpoint's values and writes a SavedModel whose ``serving_default`` signature maps the inputs'
names to the outputs' (devices cleared); ``tf.saved_model.load`` in eager TensorFlow 2,
``saved_model_cli``, TF Serving, the TFLite converter and Keras 3's ``TFSMLayer`` read it.
:func:`run_reference` runs the same outputs in a TF1 session of the checkpoint's own graph, the
values an export is checked against.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from ..errors import CkptSurgeryWarning, NotFoundError, SelectionError, UserError
from ..graphdef.dropout import DropoutSite, dropout_sites, without_dropout
from ..graphdef.edit import fed_by_placeholder, prune
from ..graphdef.feeds import Feed, baked_in, feed_array, resolve_feeds, with_dynamic_batch
from ..graphdef.metagraph import node_map, op_name, placeholder_shape, placeholders
from ..graphdef.select import find_placeholder, resolve_tensor
from ..graphdef.walk import ancestors, reachable
from .graftpoints import inference_outputs
from .importer import import_meta_graph
from .restore import restore

__all__ = ["Port", "ServingGraph", "serving_graph", "write_saved_model", "run_reference",
           "SIGNATURE", "UNEXPORTABLE_OPS"]

#: The signature every export has.
SIGNATURE = "serving_default"

#: Op types that only the training program can run, with what they are.
UNEXPORTABLE_OPS = {
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"),
                    "a py_func (Python code the graph does not hold)"),
    **dict.fromkeys(("QueueDequeueV2", "QueueDequeueManyV2", "QueueDequeueUpToV2",
                     "QueueDequeue", "QueueDequeueMany", "QueueDequeueUpTo", "ReaderReadV2",
                     "ReaderReadUpToV2", "IteratorGetNext", "IteratorGetNextSync"),
                    "a queue or dataset input (its data comes from the training program)"),
}


@dataclass(frozen=True)
class Port:
    """An input or output of an export: its signature ``key``, the graph ``tensor``, dtype
    name and ``shape`` (None for unknown dimensions, None for an unknown rank)."""

    key: str
    tensor: str
    dtype: str
    shape: tuple | None

    def as_dict(self) -> dict:
        return {"key": self.key, "tensor": self.tensor, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}


@dataclass
class ServingGraph:
    """What an export serves: ``meta`` (ready to import), ``inputs`` and ``outputs`` (their
    shapes and dtypes are filled in by :func:`write_saved_model`), the ``feeds`` baked in and
    the ``dropout`` sites bypassed. ``reference`` is the checkpoint's graph as the TF1 session
    of the check runs it: the same ops, dropout bypassed, pruned, the feeds still placeholders
    (fed their values)."""

    meta: object
    reference: object
    inputs: list[Port]
    outputs: list[Port]
    feeds: list[Feed] = field(default_factory=list)
    dropout: list[DropoutSite] = field(default_factory=list)


def serving_graph(meta, *, inputs: list[str] | None = None, outputs: list[str] | None = None,
                  feeds: dict[str, str] | None = None) -> ServingGraph:
    """The :class:`ServingGraph` of ``meta``.

    Args:
        inputs: references (``x``, ``x:0``, a collection) of the inputs; default the graph's
            input (collection ``inputs``, else the only float placeholder the output needs).
        outputs: references of the outputs, each ``REF`` or ``KEY=REF`` (``KEY`` names it in
            the signature); default the first inference output.
        feeds: ``{placeholder: value text}`` for placeholders that are not inputs.

    Raises:
        NotFoundError: an input or output names nothing (nearest names given), or no output
            is found.
        SelectionError: several float placeholders could be the input.
        UserError: a placeholder has no value and no default, or the outputs need an op only
            the training program can run (named).
    """
    feeds = dict(feeds or {})
    sites = dropout_sites(meta)
    graph = without_dropout(meta, sites)  # a keep probability that only dropout reads goes too
    output_refs = _outputs(graph, outputs)
    below = ancestors(graph, [t for _, t in output_refs])
    if inputs:
        input_refs = [resolve_tensor(graph, ref) for ref in inputs]
    else:
        found = find_placeholder(graph, None, "inputs", "float", among=below, exclude=set(feeds))
        if found is None:
            layers = sorted(n for n in below if n.endswith("input_layer/concat"))
            raise SelectionError(
                f"'{output_refs[0][1]}' depends on no float input placeholder; name the "
                "input(s) with --inputs"
                + (f" (an Estimator's features: --inputs {layers[-1]})" if layers else ""))
        input_refs = [found]
    for ref in input_refs:
        if op_name(ref) not in below:
            raise UserError(f"input '{ref}' is not used by the output(s) "
                            f"{', '.join(t for _, t in output_refs)}; choose another --inputs")
    kinds = placeholders(graph)
    inner = [r for r in input_refs if op_name(r) not in kinds]
    if inner:  # inputs in the middle of the graph become placeholders
        shapes = _imported_shapes(graph, inner)
        for ref in inner:
            graph, holder = fed_by_placeholder(graph, ref, shapes[ref])
            input_refs[input_refs.index(ref)] = holder
        kinds = placeholders(graph)
    given = {op_name(r) for r in input_refs}
    upstream = _upstream(graph, [t for _, t in output_refs], given)
    _refuse_unexportable(graph, upstream)
    needed = [p for p in kinds if p in upstream and p not in given]
    resolved = resolve_feeds(graph, needed, feeds)
    unused = sorted(set(feeds) - set(needed))
    if unused:
        warnings.warn(f"--feed {', '.join(unused)}: not needed by the output(s) (a keep "
                      "probability is not: dropout is off in exports); ignored",
                      CkptSurgeryWarning, stacklevel=2)
    graph = with_dynamic_batch(graph, [op_name(r) for r in input_refs])
    graph, _ = prune(graph, [t for _, t in output_refs] + input_refs)
    reference = graph
    if resolved:
        graph = baked_in(graph, resolved, input_refs[0])
        graph, _ = prune(graph, [t for _, t in output_refs] + input_refs)
    nodes = node_map(graph)
    keys = _unique([_key(op_name(r)) for r in input_refs])
    ins = [Port(k, r, kinds[op_name(r)], _shape_of(graph, nodes, r))
           for k, r in zip(keys, input_refs, strict=True)]
    outs = [Port(k, t, "", None) for k, t in output_refs]
    return ServingGraph(graph, reference, ins, outs, list(resolved.values()),
                        [s for s in sites if op_name(s.output) in ancestors(meta, [
                            t for _, t in output_refs])])


def write_saved_model(serving: ServingGraph, checkpoint, path: str) -> ServingGraph:
    """Import ``serving``'s graph, restore every variable from ``checkpoint`` and write a
    SavedModel at ``path`` (which must not exist) with the ``serving_default`` signature.

    Returns:
        ``serving`` with its outputs' dtypes and shapes filled in.

    Raises:
        RestoreError: the checkpoint lacks a variable the outputs need, or its shape differs.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    import_meta_graph(serving.meta, graph)
    with tf1.Session(graph=graph) as session:
        _restore_all(session, graph, checkpoint)
        signature = tf1.saved_model.signature_def_utils.predict_signature_def(
            {p.key: graph.get_tensor_by_name(p.tensor) for p in serving.inputs},
            {p.key: graph.get_tensor_by_name(p.tensor) for p in serving.outputs})
        with graph.as_default():
            init = tf1.tables_initializer() if graph.get_collection(
                tf1.GraphKeys.TABLE_INITIALIZERS) else None
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                session, [tf1.saved_model.tag_constants.SERVING],
                signature_def_map={SIGNATURE: signature}, strip_default_attrs=True,
                clear_devices=True, main_op=init)
            builder.save()
        serving.outputs = [_port(graph, p.key, p.tensor) for p in serving.outputs]
        serving.inputs = [_port(graph, p.key, p.tensor) for p in serving.inputs]
    return serving


def run_reference(serving: ServingGraph, checkpoint, batch: dict) -> dict:
    """The outputs for ``batch`` (``{input key: array}``) in a TF1 session of the checkpoint's
    own graph (:attr:`ServingGraph.reference`, the baked values fed): ``{output key: array}``."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    import_meta_graph(serving.reference, graph)
    rows = len(next(iter(batch.values())))
    feed = {p.tensor: batch[p.key] for p in serving.inputs}
    for f in serving.feeds:
        feed[f"{f.name}:0"] = feed_array(f, rows)
    with tf1.Session(graph=graph) as session:
        _restore_all(session, graph, checkpoint)
        values = session.run([p.tensor for p in serving.outputs], feed)
    return {p.key: v for p, v in zip(serving.outputs, values, strict=True)}


def _restore_all(session, graph, checkpoint) -> None:
    import tensorflow as tf

    tf1 = tf.compat.v1
    variables = graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
    session.run(tf1.variables_initializer(variables))
    restore(session, variables, checkpoint)


def _imported_shapes(meta, refs: list[str]) -> dict:
    """The static shapes of tensors ``refs`` (None for an unknown rank), from an import."""
    import tensorflow as tf

    graph = tf.Graph()
    import_meta_graph(meta, graph)
    shapes = {}
    for ref in refs:
        shape = graph.get_tensor_by_name(ref).shape
        shapes[ref] = shape.as_list() if shape.rank is not None else None
    return shapes


def _port(graph, key: str, name: str) -> Port:
    tensor = graph.get_tensor_by_name(name)
    shape = tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else None
    return Port(key, name, tensor.dtype.name, shape)


def _outputs(meta, refs: list[str] | None) -> list[tuple[str, str]]:
    """``[(signature key, tensor name)]`` of the outputs."""
    if not refs:
        found = inference_outputs(meta)
        if not found:
            raise NotFoundError("no inference output found (no output collection, "
                                "cross-entropy or softmax); name the output(s) with --outputs")
        refs = [found[0]]
    named = []
    for ref in refs:
        key, sep, target = ref.partition("=")
        if not sep:
            key, target = "", ref
        tensor = resolve_tensor(meta, target)
        if not key:
            key = target if target in meta.collection_def else _key(op_name(tensor))
        named.append((_safe(key), tensor))
    keys = _unique([k for k, _ in named])
    return list(zip(keys, [t for _, t in named], strict=True))


def _key(name: str) -> str:
    """A signature key for an op: its scope's last part (``dnn/logits/BiasAdd`` -> ``logits``),
    or its name when it has no scope."""
    parts = name.split("/")
    return _safe(parts[-2] if len(parts) > 1 else parts[0])


def _safe(key: str) -> str:
    key = re.sub(r"\W", "_", key)
    return key if key and not key[0].isdigit() else f"t_{key}"


def _unique(keys: list[str]) -> list[str]:
    out: list[str] = []
    for key in keys:
        new, n = key, 1
        while new in out:
            new, n = f"{key}_{n}", n + 1
        out.append(new)
    return out


def _upstream(meta, outputs: list[str], stop: set[str]) -> set[str]:
    """The ops the outputs depend on, not going past the ops in ``stop``."""
    nodes = node_map(meta)
    return reachable([op_name(t) for t in outputs],
                     lambda name: [op_name(i) for i in nodes[name].input],
                     enter=lambda name: name in nodes and name not in stop)


def _refuse_unexportable(meta, upstream: set[str]) -> None:
    nodes = node_map(meta)
    for name in sorted(upstream):
        what = UNEXPORTABLE_OPS.get(nodes[name].op)
        if what:
            raise UserError(
                f"cannot export: the output(s) need op '{name}' ({nodes[name].op}), {what}; "
                "name a tensor below it as the input with --inputs, or export an output that "
                "does not need it")


def _shape_of(meta, nodes, ref: str) -> tuple | None:
    name = op_name(ref)
    if name in nodes and nodes[name].op == "Placeholder":
        return placeholder_shape(meta, name)
    return None

