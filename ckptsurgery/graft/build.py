"""Grafting: reuse the lower part of a TF1 model and put new dense layers on top.

:func:`build` turns a checkpoint and a :class:`GraftSpec` into a :class:`Grafted` graph and a
printable :class:`Plan` (what is reused, frozen, new, pruned) before anything runs or is written:
``open -> plan -> edit -> train -> export``. The graph is edited at the protobuf level first
(prune what the new outputs do not need, cut gradients), then imported into a new ``tf.Graph``
that the caller owns, then the new layers are added.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from ..errors import CkptSurgeryWarning, SelectionError, UserError, some
from ..graph.importer import import_meta_graph
from ..graph.layers import DenseSpec, dense, pool
from ..graphdef.batchnorm import batch_norm_layers
from ..graphdef.feeds import Feed, is_training_switch, resolve_feeds, with_defaults
from ..graphdef.metagraph import op_name, placeholders, shape_text
from ..graphdef.select import find_inputs, find_placeholder, resolve_tensor, select_variables
from ..graphdef.walk import reachable
from .strategies import apply_strategy

__all__ = ["DROPOUT_MODES", "GraftSpec", "VariableRow", "Plan", "Grafted", "build", "graft_picture"]


@dataclass
class GraftSpec:
    """What to graft and how.

    Attributes:
        at: collection, tensor or op to put the new layers on (``hiddens3``).
        layers: the new dense layers, bottom to top; none to reuse the model as it is up to
            ``at`` (to fine-tune it, say), ``at`` then being the output.
        cut_after: insert ``stop_gradient`` after this tensor (freezes everything below it).
        uncut: remove the graph's ``stop_gradient`` ops first, so that what an earlier cut froze
            trains again (fine-tuning a model frozen with ``cut_after``).
        train_scope: regex of the variables that train (``hidden[34]|logits``); default all.
        train_variables: the exact reused variables that train besides the new layers' (a
            strategy's choice); None: as ``train_scope`` says.
        restore_scope: regex of the variables restored from the checkpoint; default all kept.
        keep_dead: keep the old graph branch the new layers replace, instead of pruning it.
        inputs, labels: the graph's input and label tensors, when the defaults do not find them;
            ``inputs`` may name several, comma-separated (``input_ids,input_mask,segment_ids``).
        output_collection: the collection that holds the new top layer's output.
        seed: graph-level seed for the new layers' initialisers.
        pool: ``flatten``, ``avg`` or ``max``: turn a rank-3/4 ``at`` (a feature map) into rows
            before the first new layer (:data:`~ckptsurgery.graph.layers.POOLS`).
        feeds: ``{placeholder: value}`` for placeholders the graph needs besides the inputs and
            labels (``{"is_training": "false", "init_state": "zeros"}``); training switches and
            keep probabilities have defaults (:mod:`ckptsurgery.graphdef.feeds`).
        keep_placeholders: keep fed placeholders as placeholders in the output (by default they
            become ``PlaceholderWithDefault`` of their value, so users of the export feed nothing).
        bn_train: batch-norm layers that train use batch statistics and update their moving
            averages (their ``update_ops`` run with each step); by default every batch-norm
            layer runs in inference mode and its moving statistics stay as they are.
        strategy: ``feature-extract``, ``fine-tune-top[:N]`` or ``fine-tune-all``
            (:mod:`ckptsurgery.graft.strategies`): what trains, instead of ``cut_after`` and
            ``train_scope``.
        lr_reused: with ``fine-tune-all``, the learning rate of the reused layers (None: a
            tenth of the training's).
        dropout: what becomes of the dropout in the reused graph (:data:`DROPOUT_MODES`):
            ``train`` (default) keeps it in training steps above the cut and bypasses it when
            evaluating, in the export and below the cut; ``off`` bypasses it everywhere;
            ``keep`` leaves the graph's dropout as it is (on everywhere, the export too).
    """

    at: str
    layers: list[DenseSpec]
    cut_after: str | None = None
    uncut: bool = False
    train_scope: str | None = None
    train_variables: tuple[str, ...] | None = None
    restore_scope: str | None = None
    keep_dead: bool = False
    inputs: str | None = None
    labels: str | None = None
    output_collection: str = "logits"
    seed: int | None = 42
    pool: str | None = None
    feeds: dict[str, str] = field(default_factory=dict)
    keep_placeholders: bool = False
    bn_train: bool = False
    dropout: str = "train"
    strategy: str | None = None
    lr_reused: float | None = None


@dataclass(frozen=True)
class VariableRow:
    """A variable in a plan: name, shape, number of parameters."""

    name: str
    shape: tuple[int, ...]

    @property
    def params(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Plan:
    """What a graft will do, printable before anything runs (``--dry-run``)."""

    source: str
    at: str
    cut: str | None
    inputs: str
    labels: str | None
    output: str
    layers: list[DenseSpec]
    reused: list[VariableRow] = field(default_factory=list)
    trained: list[VariableRow] = field(default_factory=list)
    frozen: list[VariableRow] = field(default_factory=list)
    new: list[VariableRow] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    pruned_ops: int = 0
    uncut: list[str] = field(default_factory=list)
    at_shape: list | None = None
    pool: str | None = None
    pooled_shape: list | None = None
    feeds: list[Feed] = field(default_factory=list)
    feeds_as_defaults: bool = True
    batch_norm: list[tuple[str, str]] = field(default_factory=list)
    strategy: str | None = None
    strategy_layers: dict[str, list[str]] = field(default_factory=dict)
    dropout: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def header(self) -> list[str]:
        """What is grafted where: source, layers, tensors, pooling, feeds, batch norm, strategy,
        cut."""
        lines = [
            f"source:  {self.source}",
            f"graft:   {' -> '.join(str(s) for s in self.layers) or '(no new layers)'} on {self.at}",
            f"inputs:  {self.inputs}   labels: {self.labels or '(none)'}   output: {self.output}",
        ]
        if self.pool:
            lines.append(f"pool:    {self.pool} {shape_text(self.at_shape)} -> "
                         f"{shape_text(self.pooled_shape)}")
        if self.feeds:
            how = ("exported as placeholder defaults: users of the output feed nothing"
                   if self.feeds_as_defaults else "kept as placeholders (--keep-placeholders)")
            lines.append(f"feeds:   {', '.join(str(f) for f in self.feeds)}; {how}")
        for scope, mode in self.dropout:
            lines.append(f"dropout {scope}: {mode}")
        for scope, mode in self.batch_norm:
            lines.append(f"batch norm {scope}: {mode}")
        if self.strategy:
            layers = self.strategy_layers
            lines.append(
                f"strategy: {self.strategy}: reused layers trained: "
                f"{', '.join(reversed(layers.get('trained', []))) or 'none'}"
                + (" (at the lower --lr-reused)" if layers.get("slower") else "")
                + f"; frozen: {', '.join(reversed(layers.get('frozen', []))) or 'none'}"
                + f"; new: {', '.join(s.name for s in self.layers) or 'none'}")
        if self.cut:
            lines.append(f"cut:     stop_gradient after {self.cut}")
        if self.uncut:
            lines.append(f"uncut:   removed stop_gradient {', '.join(self.uncut)}")
        return lines

    def lines(self) -> list[str]:
        """The header, then one table: a row per variable with its shape, parameters and what
        happens to it (reused or new, and trained or frozen), totals at the bottom."""
        trained, frozen = {r.name for r in self.trained}, {r.name for r in self.frozen}
        origin = {r.name: "new" for r in self.new} | {r.name: "reused" for r in self.reused}
        rows = {r.name: r for r in (*self.reused, *self.new, *self.trained, *self.frozen)}
        width = max([len(n) for n in rows] + [8])
        table = [f"  {'variable':<{width}}  {'shape':<14} {'parameters':>11}  what happens"]
        for name, r in rows.items():
            fate = ("trained" if name in trained else "frozen" if name in frozen
                    else "not trainable")
            table.append(f"  {name:<{width}}  {str(list(r.shape)):<14} {r.params:>11,}  "
                         f"{origin.get(name, 'initialised, not restored')}, {fate}")
        return self.header() + table + ["  " + self.totals()]

    def totals(self) -> str:
        """One line: parameters trained and frozen, variables reused and new, and what was
        pruned (the plan in brief, as the demo prints it)."""
        def params(rows):
            return f"{sum(r.params for r in rows):,}"

        return (f"trained {len(self.trained)} variables ({params(self.trained)} parameters), "
                f"frozen {len(self.frozen)} ({params(self.frozen)}); reused {len(self.reused)}, "
                f"new {len(self.new)}; pruned {len(self.pruned)} variables, {self.pruned_ops:,} ops"
                + (f" ({', '.join(self.pruned[:8])}{' ...' if len(self.pruned) > 8 else ''})"
                   if self.pruned else ""))

    def as_dict(self) -> dict:
        def rows(rs):
            return [{"name": r.name, "shape": list(r.shape), "params": r.params} for r in rs]

        return {
            "source": self.source, "at": self.at, "cut": self.cut, "inputs": self.inputs,
            "labels": self.labels, "output": self.output,
            "layers": [str(s) for s in self.layers],
            "reused": rows(self.reused), "trained": rows(self.trained),
            "frozen": rows(self.frozen), "new": rows(self.new),
            "pruned": self.pruned, "pruned_ops": self.pruned_ops, "uncut": self.uncut,
            "at_shape": self.at_shape, "pool": self.pool, "pooled_shape": self.pooled_shape,
            "feeds": [{"name": f.name, "value": f.value, "origin": f.origin} for f in self.feeds],
            "feeds_as_defaults": self.feeds_as_defaults,
            "batch_norm": [{"scope": s, "mode": m} for s, m in self.batch_norm],
            "dropout": [{"scope": s, "mode": m} for s, m in self.dropout],
            "strategy": self.strategy, "strategy_layers": self.strategy_layers,
        }


@dataclass
class Grafted:
    """A grafted graph, ready to restore, train and export.

    ``inputs`` is the input placeholder's tensor, or a tuple of them for a model with several
    inputs (a BERT's ``input_ids``, ``input_mask``, ``segment_ids``), fed from
    :class:`~ckptsurgery.train.data.Columns`. ``feed_point`` is the tensor below which nothing
    trains (the cut), whose values may be
    computed once and fed (``--cache-frozen``). ``feeds`` maps placeholders that every run
    feeds to their :class:`~ckptsurgery.graphdef.feeds.Feed`; ``train_feeds`` overrides some
    of them in training steps only (``--bn-train``: the training switch is true there);
    ``update_ops`` are the batch-norm updates that run with each training step.
    """

    graph: object
    plan: Plan
    inputs: object
    labels: object | None
    output: object
    restore_vars: list
    train_vars: list
    feed_point: object | None
    feeds: dict = field(default_factory=dict)
    train_feeds: dict = field(default_factory=dict)
    update_ops: list = field(default_factory=list)
    slower: list = field(default_factory=list)


def build(checkpoint, spec: GraftSpec, *, require_labels: bool = True) -> Grafted:
    """Build the grafted graph for ``checkpoint`` (a :class:`~ckptsurgery.formats.checkpoint.Checkpoint`).

    With ``require_labels`` False (nothing will train), several candidate label placeholders
    are not an error: the graft keeps none of them. With it True and no integer placeholder in
    the graph (one-hot float labels, Estimator queues), a new ``labels`` placeholder (int64,
    class indices) is added and put in collection ``labels``.

    Raises:
        UserError: the checkpoint has no ``.meta``, a reference names nothing (nearest names
            given), a regex selects nothing, a placeholder the graph needs has no value, a
            feature map needs ``pool``, or the new layers cannot be built.
    """
    import tensorflow as tf

    from ..graphdef.edit import cut, prune, uncut
    from ..graphdef.walk import ancestors

    meta = checkpoint.meta_graph
    if meta is None:
        raise UserError(
            f"checkpoint '{checkpoint.prefix}' has no .meta file; graft needs the graph "
            f"('{checkpoint.prefix}.meta')"
        )
    source_meta = meta
    at = resolve_tensor(meta, spec.at)
    below_at = ancestors(meta, [at])
    input_list = find_inputs(meta, spec.inputs, below_at, exclude=set(spec.feeds))
    if not input_list:
        raise SelectionError(f"'{at}' depends on no float placeholder; name the input with --inputs")
    inputs = input_list[0]
    strategy_layers: dict[str, list[str]] = {}
    if spec.strategy:
        spec, strategy_layers = apply_strategy(spec, meta, at, input_list)
    try:
        labels = find_placeholder(meta, spec.labels, "labels", "integer",
                                  exclude={op_name(t) for t in input_list})
    except SelectionError:
        if require_labels or spec.labels:
            raise
        labels = None  # several candidates, and nothing to train: no need to choose
    cut_at = None
    if spec.cut_after:
        cut_at = resolve_tensor(meta, spec.cut_after)
        if op_name(cut_at) not in below_at:
            raise UserError(
                f"--cut-after '{spec.cut_after}' ({cut_at}) is not below --at '{spec.at}' ({at}); "
                "cut a tensor the new layers depend on"
            )
    fixed = {op_name(t) for t in (*input_list, labels) if t}
    needed = [p for p in placeholders(meta) if p in below_at and p not in fixed]
    feeds = resolve_feeds(meta, needed, spec.feeds)
    unused = sorted(set(spec.feeds) - set(needed))
    if unused:
        warnings.warn(f"--feed {', '.join(unused)}: not used below --at '{spec.at}'; ignored",
                      CkptSurgeryWarning, stacklevel=2)
    norms = [layer for layer in batch_norm_layers(meta) if layer.statistics[0] in below_at]

    removed_ops, removed_vars = 0, []
    if not spec.keep_dead:
        keep = [t for t in (at, *input_list, labels) if t]
        if spec.bn_train:  # the updates of batch-norm statistics are nobody's ancestors
            keep += [u for layer in norms for u in layer.update_ops]
        meta, info = prune(meta, keep)
        removed_ops, removed_vars = len(info.removed_ops), info.removed_variables
    meta, dropout_modes, dropout_switch, replaced = _dropout(
        source_meta, meta, spec.dropout, below_at, cut_at, feeds)
    at = replaced.get(at, at)
    removed_stops: dict[str, str] = {}
    if spec.uncut:
        meta, removed_stops = uncut(meta)
        if op_name(at) in removed_stops:
            at = removed_stops[op_name(at)]
        if cut_at and op_name(cut_at) in removed_stops:
            cut_at = removed_stops[op_name(cut_at)]
    feed_name = None
    if cut_at:
        meta, feed_name = cut(meta, cut_at)
        if cut_at == at:
            at = feed_name
    if feeds and not spec.keep_placeholders:
        meta, _ = with_defaults(meta, feeds, inputs)

    graph = tf.Graph()
    graph.seed = spec.seed
    import_meta_graph(meta, graph)
    imported = {v.op.name for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
    # New variables are of the kind the model already uses (resource or ref).
    resource = any(graph.get_operation_by_name(n).type == "VarHandleOp" for n in imported)
    out = graph.get_tensor_by_name(at)
    at_shape = _shape_list(out)
    if spec.pool:
        if not spec.layers:
            raise UserError("--pool shapes the input of new layers; give at least one --dense")
        out = pool(out, spec.pool)
    elif spec.layers and out.shape.rank not in (None, 2):
        raise UserError(
            f"--at '{spec.at}' is a feature map of shape {shape_text(at_shape)}; dense layers take "
            f"rows: add --pool flatten (keep every value), --pool avg or --pool max "
            "(one value per channel)"
        )
    pooled_shape = _shape_list(out) if spec.pool else None
    outputs = []
    for layer in spec.layers:
        out = dense(out, layer, use_resource=resource)
        outputs.append((layer.name, out))
    with graph.as_default():
        if labels is None and require_labels:
            added = tf.compat.v1.placeholder(tf.int64, (None,), name="labels")
            graph.clear_collection("labels")
            graph.add_to_collection("labels", added)
            labels = added.name
        graph.clear_collection(spec.output_collection)
        for name, tensor in outputs[:-1]:
            graph.add_to_collection(name, tensor)
        graph.add_to_collection(spec.output_collection, out)

    all_vars = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
    new_vars = [v for v in all_vars if v.op.name not in imported]
    restore_vars = [v for v in all_vars if v.op.name in imported]
    if spec.restore_scope:
        chosen = select_variables(graph, spec.restore_scope, "variables", "--restore-scope")
        restore_vars = [v for v in chosen if v.op.name in imported]
        if not restore_vars:
            raise SelectionError(
                f"--restore-scope '{spec.restore_scope}' matches only new variables; nothing to restore"
            )
    feed_point = graph.get_tensor_by_name(feed_name) if feed_name else None
    trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
    # Whatever a stop_gradient separates from the output is frozen: our cut or an earlier one.
    live = _variables_feeding(out, trainable, graph.get_tensor_by_name(inputs))
    train_vars = [v for v in trainable if v.op.name in live]
    if spec.train_scope:
        chosen = {v.op.name for v in select_variables(
            graph, spec.train_scope, "trainable_variables", "--train-scope")}
        train_vars = [v for v in train_vars if v.op.name in chosen]
        if not train_vars:
            raise SelectionError(
                f"--train-scope '{spec.train_scope}' selects no variable the output depends on "
                "(only ones below a stop_gradient or off its path); nothing would train"
            )
    if spec.train_variables is not None:
        dead = sorted(set(spec.train_variables) - {v.op.name for v in train_vars})
        if dead:
            raise UserError(
                f"--strategy {spec.strategy}: {some(dead)} cannot train (below a "
                "stop_gradient in the graph, or off the output's path); add --uncut to train "
                "what an earlier cut froze, or ask for fewer layers")
        chosen = set(spec.train_variables) | {v.op.name for v in new_vars}
        train_vars = [v for v in train_vars if v.op.name in chosen]
    trained = {v.op.name for v in train_vars}
    untrained_new = [v.op.name for v in new_vars if v.op.name not in trained]
    if untrained_new:
        warnings.warn(f"new variables {', '.join(untrained_new)} will not train "
                      "(not selected by --train-scope)", CkptSurgeryWarning, stacklevel=2)
    switches = [n for n, f in feeds.items() if is_training_switch(n, f.dtype)]
    modes, update_ops = _batch_norm_modes(norms, trained, spec.bn_train,
                                          _switched_by(source_meta, norms, switches))
    update_ops = [graph.get_operation_by_name(u) for u in update_ops]
    train_feeds = {}
    if update_ops:  # their layers train in training mode: the switch is on in training steps
        train_feeds = {graph.get_tensor_by_name(f"{n}:0"): True for n in switches}
    if dropout_switch:
        train_feeds[graph.get_tensor_by_name(dropout_switch)] = True

    def rows(vs):
        return [VariableRow(v.op.name, tuple(v.shape.as_list())) for v in vs]

    plan = Plan(
        source=checkpoint.prefix, at=at, cut=cut_at, inputs=", ".join(input_list),
        labels=labels,
        output=out.name, layers=list(spec.layers),
        reused=rows(restore_vars),
        trained=rows(train_vars),
        frozen=rows([v for v in trainable if v.op.name not in trained]),
        new=rows(new_vars),
        pruned=removed_vars, pruned_ops=removed_ops, uncut=sorted(removed_stops),
        at_shape=at_shape, pool=spec.pool, pooled_shape=pooled_shape,
        feeds=list(feeds.values()), feeds_as_defaults=not spec.keep_placeholders,
        batch_norm=modes, strategy=spec.strategy, strategy_layers=strategy_layers,
        dropout=dropout_modes,
    )
    return Grafted(
        graph=graph, plan=plan,
        inputs=graph.get_tensor_by_name(inputs) if len(input_list) == 1
        else tuple(graph.get_tensor_by_name(t) for t in input_list),
        labels=graph.get_tensor_by_name(labels) if labels else None,
        output=out, restore_vars=restore_vars, train_vars=train_vars, feed_point=feed_point,
        feeds={graph.get_tensor_by_name(f"{n}:0"): f for n, f in feeds.items()}
        | ({graph.get_tensor_by_name(dropout_switch): Feed(
            op_name(dropout_switch), "bool", (), False, "dropout: on in training steps only")}
           if dropout_switch else {}),
        train_feeds=train_feeds, update_ops=update_ops,
        slower=[v for v in train_vars if v.op.name in imported]
        if strategy_layers.get("slower") else [],
    )


#: What ``--dropout`` takes (see :class:`GraftSpec`).
DROPOUT_MODES = ("train", "off", "keep")


def _dropout(source_meta, meta, mode: str, below_at: set[str], cut_at: str | None,
             feeds: dict):
    """``meta`` (the pruned graph) with the dropout below ``--at`` as ``mode`` says, what
    became of each site (for the plan), the switch that turns the trained ones on (None if
    none), and ``{site output: its replacement}`` (for an ``--at`` that is one). Sites are
    found in ``source_meta``, where every reader of their output still is.

    Sites inside a loop or a ``cond`` are left to the graph (a layer's dropout behind its own
    training switch is already off unless that switch is fed true), and so are those whose
    keep probability is a placeholder the graft feeds (its value decides)."""
    from ..graphdef.dropout import dropout_sites, switched_dropout, without_dropout
    from ..graphdef.walk import ancestors

    if mode not in DROPOUT_MODES:
        raise UserError(f"--dropout {mode}: use {', '.join(DROPOUT_MODES)}")
    from ..graphdef.metagraph import node_map

    nodes = node_map(meta)
    sites, modes = [], []
    for site in dropout_sites(source_meta):
        if op_name(site.output) not in below_at or op_name(site.output) not in nodes:
            continue
        own = [n for n in nodes if n.startswith(site.scope + "/")]
        masked = op_name(site.input)
        rate = reachable(own, lambda n: [op_name(i) for i in nodes[n].input],
                         enter=lambda n, x=masked: n in nodes and n != x)
        fed = next((p for p in feeds if p in rate), None)
        if fed is not None:
            feed = feeds[fed]
            modes.append((site.scope, f"as {feed.name}={str(feed.value).lower()} makes it"))
        elif "/while/" not in site.scope + "/" and "/cond" not in site.scope:
            sites.append(site)
        else:
            modes.append((site.scope, "as the graph has it (inside a loop or a cond: its own "
                                      "switch decides)"))
    if not sites or mode == "keep":
        return meta, modes + [(s.scope, "kept as the graph has it (--dropout keep): on "
                                        "everywhere, the export included") for s in sites], \
            None, {}
    frozen = ancestors(meta, [cut_at]) if cut_at else set()
    off = [s for s in sites if mode == "off" or op_name(s.output) in frozen]
    on = [s for s in sites if s not in off]
    meta = without_dropout(meta, off) if off else meta
    switch, replaced = None, {s.output: s.input for s in off}
    if on:
        meta, switch, more = switched_dropout(meta, on)
        replaced.update(more)
    modes += [(s.scope, "on in training steps, off when evaluating and in the export")
              if s in on else (s.scope, "off (below the cut)" if mode == "train"
                               else "off (--dropout off)") for s in sites]
    return meta, modes, switch, replaced


def _switched_by(meta, norms, switches: list[str]) -> dict[str, set[str]]:
    """``{layer scope: the training switches its ops depend on}``."""
    from ..graphdef.walk import ancestors

    out = {}
    for layer in norms:
        own = [n.name for n in meta.graph_def.node if n.name.startswith(layer.scope + "/")]
        out[layer.scope] = ancestors(meta, own) & set(switches) if own and switches else set()
    return out


def graft_picture(grafted: Grafted, *, around: str | None = None, depth: int = 2) -> str:
    """The DOT picture of a graft: the grafted graph's layers coloured reused, frozen, trained
    and new, the pruned ones beside them, shapes on the edges, the cut in red."""
    from ..graphdef.picture import layer_graph, to_dot

    plan = grafted.plan
    roles = {r.name: "reused" for r in plan.reused}
    for role, rows in (("frozen", plan.frozen), ("trained", plan.trained), ("new", plan.new)):
        roles.update({r.name: role for r in rows})
    layers = layer_graph(grafted.graph.as_graph_def(add_shapes=True), roles, around=around,
                         depth=depth, pruned=plan.pruned)
    return to_dot(layers, title=f"graft of {plan.source} on {plan.at}")


def _batch_norm_modes(norms, trained: set[str], bn_train: bool,
                      switched_by: dict[str, set[str]]):
    """Each batch-norm layer's mode as the plan says it, and the update ops to run.

    A layer trains when one of its variables (gamma, beta) does; by default it still runs in
    inference mode (the Keras guidance for fine-tuning); with ``bn_train`` it uses batch
    statistics and its update ops run with each training step. A frozen layer that shares its
    training switch with one that trains uses batch statistics in training steps too (the
    switch is on), but its moving statistics still do not move: the plan says so.
    """
    modes, updates = [], []
    training_switches = set()
    for layer in norms:
        if bn_train and trained & set(layer.variables):
            training_switches |= switched_by.get(layer.scope, set())
    for layer in norms:
        kind = "fused" if layer.fused else "unfused"
        if bn_train and trained & set(layer.variables):
            if not layer.update_ops:
                raise UserError(
                    f"--bn-train: batch-norm layer '{layer.scope}' has no update ops in the "
                    "graph's update_ops collection, so its moving statistics cannot follow; "
                    "train it in inference mode (drop --bn-train)")
            modes.append((layer.scope, f"training ({kind}): batch statistics, moving averages "
                                       "updated"))
            updates += layer.update_ops
        else:
            why = "frozen" if not trained & set(layer.variables) else "trains"
            shared = sorted(switched_by.get(layer.scope, set()) & training_switches)
            if layer.batch_statistics == "always":
                modes.append((layer.scope, f"batch statistics always ({kind}, {why}: the graph "
                                           "was built with training=True and has no switch); "
                                           "moving statistics kept bit-identical"))
            elif layer.batch_statistics == "unknown" or (
                    layer.batch_statistics == "switch" and not switched_by.get(layer.scope)):
                modes.append((layer.scope, f"as the graph sets it ({kind}, {why}: its mode is "
                                           "not switched by a placeholder ckptsurgery feeds); "
                                           "moving statistics kept bit-identical"))
            elif shared:
                modes.append((layer.scope, f"batch statistics in training steps ({kind}, {why}; "
                                           f"shares {', '.join(shared)} with a layer that "
                                           "trains), inference when evaluating; moving "
                                           "statistics kept bit-identical"))
            else:
                modes.append((layer.scope, f"inference ({kind}, {why}): moving statistics "
                                           "kept bit-identical"))
    if bn_train and not updates:
        raise UserError("--bn-train: no batch-norm layer below --at trains; drop --bn-train or "
                        "widen what trains (--train-scope, --cut-after)")
    return modes, updates


def _shape_list(tensor) -> list | None:
    return tensor.shape.as_list() if tensor.shape.rank is not None else None


def _variables_feeding(tensor, variables, fed) -> set[str]:
    """The names of the variables among ``variables`` that ``tensor`` depends on through a
    path with no ``StopGradient`` and not through the ``fed`` input tensor: the ones a loss on
    ``tensor`` can train."""
    ops = reachable([tensor.op], lambda op: [t.op for t in op.inputs],
                    enter=lambda op: op.type != "StopGradient" and op is not fed.op)
    return {op.name for op in ops} & {v.op.name for v in variables}
