"""Rewriting a checkpoint: rename its variables, strip some of them, or cast them to another dtype.

Each operation is made in two steps, as the rest of the package does: a *plan*
(:class:`RewritePlan`: every input key to its output key, or dropped, and the casts), which can be
printed before anything is written (``--dry-run``), then :func:`rewrite_checkpoint`, which streams
the tensors through :func:`~ckptsurgery.formats.stream.copy_tensors` (a bounded batch at a time) and, when
the checkpoint has a ``.meta``, writes one rewritten by
:func:`~ckptsurgery.graphdef.metarewrite.rewrite_meta_graph` so that it still imports and restores. Values
are copied bit for bit except where cast. A TF2 object-based checkpoint's object graph is kept
consistent with the new keys.

Everything is written to a temporary prefix and moved into place at the end
(:func:`~ckptsurgery.safety.staging.staged_checkpoint`); the input is never modified.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import CheckpointCorruptError, SelectionError, UserError, nearest
from ..graphdef.metagraph import frozen
from ..graphdef.roles import classify
from ..graphdef.slots import TRAINING_STATE

__all__ = [
    "RENAME_PRESETS",
    "PRESET_WORDS",
    "FLOAT_DTYPES",
    "RewritePlan",
    "RewriteResult",
    "parse_map",
    "compile_renames",
    "plan_rename",
    "plan_strip",
    "plan_and_rewrite",
    "plan_cast",
    "plan_salvage",
    "plan_ema",
    "ema_checkpoint",
    "salvage_checkpoint",
    "rewrite_checkpoint",
    "rename_checkpoint",
    "strip_checkpoint",
    "cast_checkpoint",
]

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"

#: dtypes ``cast`` converts between.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# The RNN cells whose 'weights'/'biases' TF 1.2 renamed to 'kernel'/'bias' (the list of
# tensorflow/contrib/rnn/python/tools/checkpoint_convert.py). Slots follow their weight.
_RNN_CELLS = (
    "basic_rnn_cell", "basic_lstm_cell", "lstm_cell", "lstm_cell/projection", "gru_cell",
    "gru_cell/gates", "gru_cell/candidate", "output_projection_wrapper",
    "input_projection_wrapper", "lstm_block_wrapper", "layer_norm_basic_lstm_cell", "ugrnn_cell",
    "nas_rnn", "intersection_rnn_cell", "intersection_rnn_cell/in_projection",
    "phased_lstm_cell/mask_gates", "phased_lstm_cell/new_input", "phased_lstm_cell/output_gate",
    "attention_cell_wrapper", "attention_cell_wrapper/attn_output_projection",
    "attention_cell_wrapper/attention", "coupled_input_forget_gate_lstm_cell",
    "time_freq_lstm_cell", "grid_lstm_cell", "bidirectional_grid_lstm_cell",
)
_CELL = "|".join(re.escape(c) for c in sorted(_RNN_CELLS, key=len, reverse=True))

#: Named lists of ``(regex, replacement)`` renames for ``rename --preset``.
RENAME_PRESETS: dict[str, list[tuple[str, str]]] = {
    "rnn-1.2": [
        (rf"(^|/)({_CELL})/weights(?=/|$)", r"\1\2/kernel"),
        (rf"(^|/)({_CELL})/biases(?=/|$)", r"\1\2/bias"),
        (r"(^|/)(nas_rnn)/recurrent_weights(?=/|$)", r"\1\2/recurrent_kernel"),
    ],
}


#: What each preset renames, in words, for messages (its patterns are long).
PRESET_WORDS = {"rnn-1.2": "the TF 1.0/1.1 RNN names (<cell>/weights, <cell>/biases)"}


@dataclass
class RewritePlan:
    """What a rewrite does to each key of the input checkpoint.

    ``targets`` maps every input key to its output key, or to None when it is dropped;
    ``casts`` maps input keys to the dtype name they are written as. ``rename`` is the function
    that made the new names (applied to graph variable names too), None when nothing is renamed.
    ``meta`` replaces the input's ``.meta`` as the graph to rewrite (a salvaged one);
    ``notes`` are lines the plan prints after its changes. ``values_from`` gives a kept key
    the value of another input key (``ema``: a weight takes its moving average's value).
    """

    operation: str
    targets: dict[str, str | None]
    casts: dict[str, str] = field(default_factory=dict)
    rename: Callable[[str], str] | None = None
    meta: object | None = None  # a .meta to rewrite instead of the input's (salvage)
    values_from: dict[str, str] = field(default_factory=dict)  # key -> key whose value it takes
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        return [k for k, t in self.targets.items() if t is not None]

    @property
    def dropped(self) -> list[str]:
        return [k for k, t in self.targets.items() if t is None]

    @property
    def renamed(self) -> dict[str, str]:
        return {k: t for k, t in self.targets.items() if t is not None and t != k}

    def lines(self) -> list[str]:
        """The plan as text, one change per line; of a kind with more than
        ``_LISTED`` changes (a checkpoint of 10,000s of tensors), the first ``_SHOWN`` and
        how many more (``as_dict`` has them all)."""
        out = [f"{self.operation}: {len(self.kept)} variable(s) kept, {len(self.dropped)} "
               f"dropped, {len(self.renamed)} renamed, {len(self.casts)} cast"]
        out += _listed([f"  rename {k} -> {t}" for k, t in self.renamed.items()], "renamed")
        out += _listed([f"  drop   {k}" for k in self.dropped], "dropped")
        out += [f"  {note}" for note in self.notes]
        out += _listed([f"  cast   {k} -> {d}" for k, d in self.casts.items()], "cast")
        return out

    def as_dict(self) -> dict:
        return {"operation": self.operation, "kept": self.kept, "dropped": self.dropped,
                "renamed": self.renamed, "cast": self.casts}


_LISTED, _SHOWN = 50, 20


def _listed(lines: list[str], kind: str) -> list[str]:
    if len(lines) <= _LISTED:
        return lines
    return lines[:_SHOWN] + [f"  ... and {len(lines) - _SHOWN:,} more {kind} (--json lists all)"]


@dataclass
class RewriteResult:
    """What :func:`rewrite_checkpoint` wrote: the prefix, its files, the plan, the bytes
    read and written, what happened to the ``.meta`` (None when none was written), and the casts that
    overflowed (``{key: number of finite values now infinite}``)."""

    prefix: str
    files: list[str]
    plan: RewritePlan
    bytes_read: int
    meta: object | None = None
    meta_note: str = ""
    overflowed: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0

    def lines(self) -> list[str]:
        out = self.plan.lines()
        if self.meta is not None:
            m = self.meta
            out.append(f"meta-graph: saver rebuilt ('{m.saver_scope}'), {len(m.removed_ops)} "
                       f"op(s) removed, {len(m.renamed_ops)} renamed"
                       + (f", collections emptied: {', '.join(m.removed_collections)}"
                          if m.removed_collections else ""))
        if self.meta_note:
            out.append(f"meta-graph: {self.meta_note}")
        if self.overflowed:
            shown = ", ".join(f"{k} ({n})" for k, n in list(self.overflowed.items())[:5])
            out.append(f"warning: {len(self.overflowed)} tensor(s) hold values beyond the range "
                       f"of the new dtype, now infinite: {shown}")
        out.append(f"wrote {self.prefix} ({len(self.files)} file(s), "
                   f"{self.bytes_written:,} bytes of tensors from {self.bytes_read:,} read)")
        return out

    def as_dict(self) -> dict:
        return {"prefix": self.prefix, "files": self.files, "bytes": self.bytes_read,
                "bytes_written": self.bytes_written,
                "plan": self.plan.as_dict(),
                "meta": self.meta.as_dict() if self.meta is not None else None,
                "meta_note": self.meta_note, "overflowed": self.overflowed}


def parse_map(text: str) -> tuple[str, str]:
    """``'REGEX=REPLACEMENT'`` as a pair, split at the last ``=`` (regexes may hold ``(?=``).

    Raises:
        UserError: no ``=``, or the regex does not compile.
    """
    pattern, sep, repl = text.rpartition("=")
    if not sep or not pattern:
        raise UserError(f"--map '{text}' is not REGEX=REPLACEMENT, e.g. 'weights$=kernel'")
    try:
        re.compile(pattern)
    except re.error as e:
        raise UserError(f"--map '{text}': bad regex '{pattern}': {e}") from e
    return pattern, repl


def compile_renames(maps: Sequence[tuple[str, str]]) -> Callable[[str], str]:
    """A function applying ``(regex, replacement)`` pairs in order with ``re.sub``.

    Raises (when called):
        UserError: a replacement refers to a group the regex does not have.
    """
    compiled = [(re.compile(p), r) for p, r in maps]

    def rename(name: str) -> str:
        for pattern, repl in compiled:
            try:
                name = pattern.sub(repl, name)
            except (re.error, IndexError) as e:
                raise UserError(f"--map '{pattern.pattern}={repl}' fails on '{name}': {e}") from e
        return name

    return rename


def _keys(checkpoint) -> list[str]:
    return list(checkpoint.variables)


def compile_patterns(patterns: Iterable[str], option: str) -> list[re.Pattern]:
    """The regexes given with ``option`` (``--drop``), compiled; a bad one is a UserError."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise UserError(f"{option} '{p}': bad regex: {e}") from e
    return out


def _require_match(pattern: re.Pattern, keys: Sequence[str], option: str, prefix: str) -> None:
    if not any(pattern.search(k) for k in keys):
        near = nearest(pattern.pattern, keys)
        raise SelectionError(
            f"{option} '{pattern.pattern}' matches no variable of '{prefix}'"
            + (f"; near: {', '.join(near)}" if near else "")
            + "; 'ckptsurgery inspect' lists them"
        )


def plan_rename(checkpoint, maps: Sequence[tuple[str, str]], *, what: str | None = None,
                verbose: bool = False) -> RewritePlan:
    """Plan renaming every key with ``maps``, ``(regex, replacement)`` pairs applied in order
    with ``re.sub``. ``what`` says in words what the maps rename (a preset's
    :data:`PRESET_WORDS`): the error when nothing matches says that rather than quoting
    patterns, which it adds only when ``verbose``.

    Raises:
        SelectionError: the maps rename nothing, or make two variables share a name.
    """
    rename = compile_renames(maps)
    keys = _keys(checkpoint)
    targets = {k: rename(k) for k in keys}
    if all(t == k for k, t in targets.items()):
        shown = ", ".join(f"'{p}'" for p, _ in maps)
        if what:
            raise SelectionError(
                f"no variable of '{checkpoint.prefix}' uses {what}: nothing to rename"
                + (f" (patterns: {shown})" if verbose else ""))
        if len(shown) > 120 and not verbose:
            shown = f"({len(maps)} patterns; --verbose shows them)"
        raise SelectionError(f"the renames {shown} change no variable of '{checkpoint.prefix}'; "
                             "'ckptsurgery inspect' lists the names")
    seen: dict[str, str] = {}
    for k, t in targets.items():
        if not t:
            raise UserError(f"renaming '{k}' gives an empty name; change the replacement")
        if t in seen:
            raise SelectionError(f"renaming gives '{seen[t]}' and '{k}' the same name '{t}'; "
                                 "make the patterns more specific")
        seen[t] = k
    return RewritePlan("rename", targets, rename=rename)


def plan_strip(checkpoint, *, optimizer_slots: bool = False, drop: Sequence[str] = (),
               keep: Sequence[str] = ()) -> RewritePlan:
    """Plan keeping only some variables.

    Args:
        optimizer_slots: drop optimizer slots (``Adam``, ``Momentum``...) and optimizer state
            (``beta1_power``...); the step counter stays.
        drop: regexes (``re.search``) of keys to drop.
        keep: regexes of keys to keep; when given, everything else is dropped.

    Raises:
        SelectionError: a regex matches nothing, or nothing would be left.
    """
    keys = _keys(checkpoint)
    drops, keeps = compile_patterns(drop, "--drop"), compile_patterns(keep, "--keep")
    for p in keeps:
        _require_match(p, keys, "--keep", checkpoint.prefix)
    for p in drops:
        _require_match(p, keys, "--drop", checkpoint.prefix)
    roles = classify(keys, checkpoint.meta_graph) if optimizer_slots else {}
    targets: dict[str, str | None] = {}
    for k in keys:
        gone = ((keeps and not any(p.search(k) for p in keeps))
                or any(p.search(k) for p in drops)
                or (optimizer_slots and roles[k].kind in TRAINING_STATE))
        targets[k] = None if gone else k
    if not any(t is not None for t in targets.values()):
        raise SelectionError(f"nothing of '{checkpoint.prefix}' would be kept; loosen --keep "
                             "or --drop")
    return RewritePlan("strip", targets)


def plan_cast(checkpoint, dtype: str, *, only: str | None = None) -> RewritePlan:
    """Plan casting floating-point variables to ``dtype``.

    Integer, bool and string variables, and step counters, stay as they are.

    Raises:
        UserError: ``dtype`` is not a floating dtype.
        SelectionError: ``only`` matches no variable.
    """
    if dtype not in FLOAT_DTYPES:
        raise UserError(f"cannot cast to '{dtype}'; choose one of {', '.join(FLOAT_DTYPES)}")
    keys = _keys(checkpoint)
    pattern = compile_patterns([only], "--only")[0] if only else None
    if pattern is not None:
        _require_match(pattern, keys, "--only", checkpoint.prefix)
    roles = classify(keys, checkpoint.meta_graph)
    casts = {}
    for k in keys:
        info = checkpoint.variables[k]
        if (info.dtype in FLOAT_DTYPES and info.dtype != dtype and roles[k].kind != "step"
                and (pattern is None or pattern.search(k))):
            casts[k] = dtype
    return RewritePlan("cast", {k: k for k in keys}, casts=casts)


def rewrite_checkpoint(checkpoint, plan: RewritePlan, out: str, *, force: bool = False,
                       with_meta: bool = True, max_batch_bytes: int | None = None,
                       progress: bool = True) -> RewriteResult:
    """Write the checkpoint ``plan`` describes at ``out``, streaming one batch at a time.

    The input's parsed ``.meta`` (``checkpoint.meta_graph``) becomes the output's: it is
    rewritten in place, not copied (a graph can be 100s of MB), and dropped from ``checkpoint``,
    which parses its file again if asked. A ``meta_graph`` taken before the call must not be
    used after it.

    Args:
        checkpoint: the opened input checkpoint.
        plan: from :func:`plan_rename`, :func:`plan_strip` or :func:`plan_cast`.
        out: output prefix.
        force: replace an existing output.
        with_meta: write a rewritten ``.meta`` when the input has one.
        max_batch_bytes: bound of one read/write batch (default
            :data:`~ckptsurgery.formats.stream.DEFAULT_BATCH_BYTES`).
        progress: progress bar on stderr (when it is a terminal).

    Raises:
        OutputError: ``out`` exists (no ``force``) or is the input.
        UserError: the ``.meta`` cannot be made consistent (see
            :func:`~ckptsurgery.graphdef.metarewrite.rewrite_meta_graph`).
    """
    return _write(checkpoint, _prepare(checkpoint, plan, out, force, with_meta), progress,
                  max_batch_bytes)


@dataclass
class _Prepared:
    """A rewrite ready to write: the plan, the output prefix, and the rewritten ``.meta``,
    serialised (no graph is held while tensors are copied), with what its saver restores."""

    plan: RewritePlan
    prefix: str
    meta: object = None  # a WrittenMeta
    meta_info: object = None
    note: str = ""


def _prepare(checkpoint, plan: RewritePlan, out: str, force: bool, with_meta: bool) -> _Prepared:
    from ..formats.output import check_output_prefix

    prefix = check_output_prefix(out, inputs=checkpoint.files.paths, force=force)
    prepared = _Prepared(plan, prefix)
    if checkpoint.files.meta and with_meta:
        from ..safety.verify import WrittenMeta

        with frozen(checkpoint.meta_graph):  # joins the planner's block (plan_and_rewrite)
            meta, prepared.meta_info = _rewrite_meta(checkpoint, plan)
        prepared.meta = WrittenMeta(meta.SerializeToString(deterministic=True), prepared.meta_info.restored)
    elif checkpoint.files.meta:
        prepared.note = "not written (--no-meta)"
    return prepared


def _write(checkpoint, prepared: _Prepared, progress: bool,
           max_batch_bytes: int | None) -> RewriteResult:
    from ..formats.metafile import write_meta_bytes
    from ..formats.stream import DEFAULT_BATCH_BYTES, CopySpec, copy_tensors
    from ..safety.staging import staged_checkpoint

    checkpoint.drop_meta_graph()  # the input's graph is not needed any more
    plan, prefix = prepared.plan, prepared.prefix
    specs = [CopySpec(plan.values_from.get(k, k), t, plan.casts.get(k))
             for k, t in plan.targets.items() if t is not None]
    extra = _object_graph(checkpoint, plan)
    written = prepared.meta
    known = written if written is not None and written.restored is not None else None
    read_back: dict = {}  # what the writing reads back as it goes, not read again
    with staged_checkpoint(prefix, verify=lambda tmp: _verify(tmp, specs, extra),
                           meta=known, read_back=read_back) as tmp:  # .meta: compared, not parsed
        if written is not None:
            write_meta_bytes(written.data, tmp + ".meta")
        stats = copy_tensors(checkpoint, tmp, specs, progress=progress, extra=extra,
                             max_batch_bytes=max_batch_bytes or DEFAULT_BATCH_BYTES,
                             fsync=False, read_back=read_back)  # the staging fsyncs
    from ..formats import storage

    folder, base = storage.dirname(prefix), storage.basename(prefix)
    files = sorted(storage.join(folder, f) for f in storage.listdir(folder)
                   if f.startswith(base + ".") and not f.endswith(".shards"))
    return RewriteResult(prefix, files, plan, stats.bytes_read, prepared.meta_info, prepared.note,
                         stats.overflowed, stats.bytes_written)


def plan_salvage(checkpoint, *, drop_unregistered: bool = False) -> RewritePlan:
    """Plan a copy of ``checkpoint`` whose ``.meta`` imports on this TensorFlow: devices cleared,
    stale collection entries dropped, and with ``drop_unregistered`` the ops it no longer
    registers removed with what depends on them (see
    :func:`~ckptsurgery.graphdef.salvage.salvage_meta_graph`). The tensors are copied as they are.

    Raises:
        UserError: the checkpoint has no ``.meta``, or a variable depends on a removed op.
    """
    from ..graphdef.salvage import salvage_meta_graph

    if checkpoint.meta_graph is None:
        raise UserError(f"checkpoint '{checkpoint.prefix}' has no .meta file; there is no graph "
                        "to salvage")
    meta, info = salvage_meta_graph(checkpoint.meta_graph, drop_unregistered=drop_unregistered)
    return RewritePlan("salvage", {k: k for k in _keys(checkpoint)}, meta=meta,
                       notes=info.lines())


def plan_ema(checkpoint) -> RewritePlan:
    """Plan a checkpoint whose weights are their ``ExponentialMovingAverage`` shadows: each
    averaged weight takes its shadow's value, the shadows (and the ops that update them) go,
    so the ``.meta`` restores the averaged weights where the model reads its weights: what
    serving or grafting wants from a model trained with moving averages.

    Raises:
        UserError: the checkpoint has no moving-average shadows.
    """
    keys = _keys(checkpoint)
    roles = classify(keys, checkpoint.meta_graph)
    shadows = {k: r.primary for k, r in roles.items() if r.kind == "ema" and r.primary in keys}
    if not shadows:
        raise UserError(f"'{checkpoint.prefix}' has no ExponentialMovingAverage shadows of its "
                        "weights; nothing to swap in")
    targets = {k: (None if k in shadows else k) for k in keys}
    values_from = {primary: shadow for shadow, primary in shadows.items()}
    notes = [f"{p} takes the value of {s}" for p, s in sorted(values_from.items())]
    return RewritePlan("ema", targets, values_from=values_from, notes=notes)


def ema_checkpoint(path: str, out: str, **options) -> RewriteResult:
    """Write the checkpoint at ``path`` with its weights replaced by their moving averages
    (see :func:`plan_ema`)."""
    return _run(path, plan_ema, out, options)


def salvage_checkpoint(path: str, out: str, *, drop_unregistered: bool = False,
                       **options) -> RewriteResult:
    """Write a copy of the checkpoint at ``path`` whose ``.meta`` imports (see
    :func:`plan_salvage`)."""
    return _run(path, lambda c: plan_salvage(c, drop_unregistered=drop_unregistered), out,
                options)


def rename_checkpoint(path: str, maps: Sequence[tuple[str, str]], out: str,
                      **options) -> RewriteResult:
    """Rename the variables of the checkpoint at ``path`` (see :func:`plan_rename`) into
    ``out``; ``options`` go to :func:`rewrite_checkpoint`."""
    return _run(path, lambda c: plan_rename(c, maps), out, options)


def strip_checkpoint(path: str, out: str, *, optimizer_slots: bool = False,
                     drop: Sequence[str] = (), keep: Sequence[str] = (),
                     **options) -> RewriteResult:
    """Keep only some variables of the checkpoint at ``path`` (see :func:`plan_strip`)."""
    return _run(path, lambda c: plan_strip(c, optimizer_slots=optimizer_slots, drop=drop,
                                           keep=keep), out, options)


def cast_checkpoint(path: str, dtype: str, out: str, *, only: str | None = None,
                    **options) -> RewriteResult:
    """Cast the floating variables of the checkpoint at ``path`` (see :func:`plan_cast`)."""
    return _run(path, lambda c: plan_cast(c, dtype, only=only), out, options)


def _run(path: str, make_plan, out: str, options: dict) -> RewriteResult:
    from ..formats.checkpoint import open_checkpoint

    return plan_and_rewrite(open_checkpoint(path), make_plan, out, **options)[1]


def plan_and_rewrite(checkpoint, make_plan: Callable, out: str | None, *, force: bool = False,
                     with_meta: bool = True, max_batch_bytes: int | None = None,
                     progress: bool = True) -> tuple[RewritePlan, RewriteResult | None]:
    """``make_plan(checkpoint)`` and, unless ``out`` is None (a dry run), the rewrite it plans
    (:func:`rewrite_checkpoint`, whose options these are). Planning and rewriting ask the same
    questions of the input's graph (roles, the saver, who reads what); on a graph of 100,000s
    of nodes each answer costs a second, so they are computed once for both. A dry run reads
    the ``.meta`` only if its plan needs it (a rename's does not).

    Returns:
        ``(plan, result)``; result is None without ``out``.
    """
    with frozen(checkpoint.meta_graph if with_meta and out is not None else None):
        plan = make_plan(checkpoint)
        if out is None:
            return plan, None
        prepared = _prepare(checkpoint, plan, out, force, with_meta)
    return plan, _write(checkpoint, prepared, progress, max_batch_bytes)


def _rewrite_meta(checkpoint, plan: RewritePlan):
    from ..formats.dtypes import enum_of
    from ..graphdef.metarewrite import rewrite_meta_graph

    stored = {plan.targets[k]: enum_of(d) for k, d in plan.casts.items()}
    if plan.meta is not None:
        return rewrite_meta_graph(plan.meta, plan.targets, rename=plan.rename,
                                  stored_dtypes=stored)
    # The input's own graph is rewritten in place and handed over: the checkpoint parses its
    # .meta again if asked.
    meta = checkpoint.meta_graph
    checkpoint.drop_meta_graph()
    return rewrite_meta_graph(meta, plan.targets, rename=plan.rename, stored_dtypes=stored,
                              in_place=True)


def _object_graph(checkpoint, plan: RewritePlan) -> list[tuple[str, object]]:
    """A TF2 checkpoint's object graph with checkpoint keys renamed and dropped as planned."""
    import numpy as np

    if not checkpoint.has_tensor(_OBJECT_GRAPH):
        return []
    from ..formats.protos import message_class

    graph = message_class("tensorflow.TrackableObjectGraph")()
    graph.ParseFromString(checkpoint.read(_OBJECT_GRAPH).item())
    for node in graph.nodes:
        attrs = []
        for attr in node.attributes:
            target = plan.targets.get(attr.checkpoint_key, attr.checkpoint_key)
            if target is None:
                continue
            attr.checkpoint_key = target
            attrs.append(attr)
        del node.attributes[:]
        node.attributes.extend(attrs)
    return [(_OBJECT_GRAPH, np.array(graph.SerializeToString(), dtype=object))]


def _verify(tmp: str, specs: Sequence, extra: Sequence) -> None:
    """The staged output lists exactly the planned keys, in the planned dtypes."""
    from ..formats.checkpoint import open_checkpoint

    entries = open_checkpoint(tmp).bundle.entries
    expected = {s.target for s in specs} | {k for k, _ in extra}
    if set(entries) != expected:
        missing = sorted(expected - set(entries))[:3]
        raise CheckpointCorruptError(f"the rewritten checkpoint lacks {missing}; nothing written")
    for s in specs:
        if s.dtype is not None and entries[s.target].dtype_name != s.dtype:
            raise CheckpointCorruptError(
                f"'{s.target}' was written as {entries[s.target].dtype_name}, not {s.dtype}"
            )
