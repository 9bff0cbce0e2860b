"""The in-graph training loop: an epoch's training steps in a few ``session.run`` calls.

The write-up's loop (:class:`~ckptsurgery.train.fit.FeedLoop`) runs one ``session.run`` with a
``feed_dict`` per batch; on small models that per-run cost is most of the time. Here the graph's
own training step (forward pass, loss, gradients, optimizer and batch-norm updates: everything
``ops.train_op`` and ``ops.loss`` depend on) is copied into a ``tf.while_loop`` that slices its
batches from rows fed once per chunk, so one run trains up to :data:`CHUNK_BYTES` of data.

Why a copy: the model is an imported meta-graph, whose ops cannot be moved into a loop body.
The step's sub-``GraphDef`` is imported again inside the body with ``input_map`` rewiring its
inputs, labels, teacher logits and switches to the batch's slices and its variables to the
loop's variables: the same kernels do the same math (ref or resource variables, any optimizer
``add_training_ops`` made, batch-norm updates), no gradient is rebuilt. Each loop iteration runs
:data:`STEPS_PER_ITERATION` steps of static batch shape, chained by control dependencies (a
step reads weights only after the previous one wrote them); the last short batch has a step of
its own. Everything lives in a second graph with its own session (one inter-op thread for a
small step, whose ops are a chain), so the user's graph and what is exported from it stay as
they were; the variables are copied in before training and out after it (the copy holds the
model's variables a second time while it trains).

Not covered, so :func:`epoch_loop` raises :class:`LoopUnavailable` and ``fit`` uses the feed
loop: a step with a while loop of its own (an RNN), stateful ops other than variables (tables,
queues), variables outside the graph's collections, zeros fed to a placeholder.

May import: everything below ``train`` and ``train`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..errors import first_line
from ..graphdef.metagraph import set_repeated

__all__ = ["LoopUnavailable", "EpochLoop", "epoch_loop", "STEPS_PER_ITERATION", "CHUNK_BYTES"]

#: Training steps per loop iteration (the loop's own ops cost as much as a small step).
STEPS_PER_ITERATION = 4
#: At most this many bytes of training rows are fed per ``session.run``.
CHUNK_BYTES = 32 << 20
#: Steps whose variables hold fewer values than this run their ops on one thread.
SMALL_STEP = 100_000
_VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")
_LOOP_OPS = ("Enter", "RefEnter", "Exit", "RefExit", "NextIteration", "RefNextIteration",
             "LoopCond")


class LoopUnavailable(Exception):
    """The training step cannot be copied into a loop; the message says why."""


class EpochLoop:
    """A copy of a training graph in which one ``session.run`` trains on a chunk of rows.

    ``session`` and ``ops`` (a :class:`~ckptsurgery.train.fit.TrainingOps` of the copy) serve
    evaluation and reading the weights as the originals would.
    """

    def __init__(self, session, ops, variables: list, trained: list[str], graph_parts: dict,
                 batch_size: int, chunk_bytes: int):
        self.session = session
        self.ops = ops
        self._variables = variables  # the original graph's, in the order of the copies below
        self._trained = trained  # the names of ops.var_list's variables
        self._parts = graph_parts
        self._batch_size = batch_size
        self._chunk_bytes = chunk_bytes

    def train_epoch(self, x: np.ndarray, y: np.ndarray, teacher: np.ndarray | None,
                    order: np.ndarray, progress: Callable[[int], None]) -> float:
        """Train on the batches ``order[i:i + batch_size]`` in order; the sum over batches of
        loss times rows. ``progress(batches)`` is called after each chunk."""
        p, bs = self._parts, self._batch_size
        row_bytes = max(1, x[:1].nbytes + (teacher[:1].nbytes if teacher is not None else 0))
        per_run = max(1, self._chunk_bytes // (row_bytes * bs)) * bs
        total = 0.0
        for start in range(0, len(order), per_run):
            rows = order[start:start + per_run]
            feed = {p["x"]: x[rows], p["y"]: y[rows].astype(p["y"].dtype.as_numpy_dtype)}
            if teacher is not None:
                feed[p["teacher"]] = teacher[rows]
            short = len(rows) % bs
            total += float(self.session.run(p["tails"][short] if short else p["total"], feed))
            progress(-(-len(rows) // bs))
        return total

    def finish(self, session, best: list | None) -> None:
        """Copy every variable the steps change into ``session`` (the original graph's), the
        trained ones (``ops.var_list``) from ``best`` when given; close the copy's session."""
        values = self.session.run(self._parts["reads"])
        if best is not None:
            trained = dict(zip(self._trained, best, strict=True))
            values = [trained.get(v.op.name, value)
                      for v, value in zip(self._variables, values, strict=True)]
        from ..graph.restore import assign

        for var, value in zip(self._variables, values, strict=True):
            assign(session, var, value)
        self.session.close()


def epoch_loop(session, ops, *, batch_size: int, n_rows: int, cached: bool,
               chunk_bytes: int | None = None,
               steps_per_iteration: int | None = None) -> EpochLoop:
    """Build the in-graph loop for ``ops`` (a :class:`~ckptsurgery.train.fit.TrainingOps`),
    its variables copied from ``session``. Nothing in ``ops``' graph changes.

    Args:
        session: the session holding the variables' values.
        ops: the training ops; with ``cached``, rows are fed at ``ops.feed_point``.
        batch_size: rows per step; ``n_rows``: training rows (the last batch may be short).
        chunk_bytes: at most this many bytes of rows per ``session.run`` (default
            :data:`CHUNK_BYTES`).
        steps_per_iteration: steps of a loop iteration (default :data:`STEPS_PER_ITERATION`).

    Raises:
        LoopUnavailable: the step cannot run in a loop (see the module's docstring).
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    steps_per_iteration = steps_per_iteration or STEPS_PER_ITERATION
    graph = ops.train_op.graph
    into = ops.feed_point if cached else ops.inputs
    if isinstance(into, tuple):
        raise LoopUnavailable("the model has several inputs (--cache-frozen makes one: the cut)")
    switches = _switch_values(ops)
    fed = {t.op.name for t in (into, ops.labels, ops.teacher_logits, *switches) if t is not None}
    step_ops = _ancestors(graph, [ops.train_op, ops.loss.op], stop=fed)
    _check_step(step_ops)
    by_name = {v.op.name: v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
               + graph.get_collection(tf1.GraphKeys.LOCAL_VARIABLES)}
    used = [op.name for op in step_ops
            | _ancestors(graph, [ops.accuracy.op], stop=fed) if op.type in _VARIABLE_OPS]
    missing = sorted(n for n in used if n not in by_name)
    if missing:
        raise LoopUnavailable(f"variable(s) {', '.join(missing[:3])} are in no variable "
                              "collection, so their values cannot be copied")
    variables = [by_name[n] for n in sorted(set(used))]
    full = graph.as_graph_def()
    keep = {op.name for op in step_ops} - fed - set(used)
    step_def = _step_graph_def(full, keep, _unused(step_ops, {ops.train_op, ops.loss.op}))

    copy = tf.Graph()
    v2 = tf1.control_flow_v2_enabled()
    # The v1 while loop: its body is part of the graph, so an imported step reads the ref or
    # resource variables outside it directly (a v2 body is a function, which cannot hold refs).
    tf1.disable_control_flow_v2()
    try:
        with copy.as_default():
            tf1.import_graph_def(full, name="")
            parts = _build(copy, step_def, ops, into, switches, variables, batch_size,
                           n_rows % batch_size, steps_per_iteration)
    except (ValueError, TypeError, KeyError) as e:  # what import_graph_def raises
        raise LoopUnavailable(f"the step does not import into a loop: {first_line(e)}") from e
    finally:
        if v2:
            tf1.enable_control_flow_v2()
    # A small step is a chain of tiny ops: one thread runs it with no hand-offs between
    # threads (0.09-0.11 s an epoch against 0.12-0.13 s with two on the cached demo step); a
    # large one gains from running a layer's two gradient products at once (1.5-2.1 s against
    # 1.9-3.2 s with one on the full network; bench/README.md). The pool is the session's
    # own: TF's global one is sized by the first session of the process.
    small = sum(v.shape.num_elements() or 0 for v in variables) < SMALL_STEP
    config = tf1.ConfigProto(inter_op_parallelism_threads=1 if small else 0,
                             use_per_session_threads=True)
    loop_session = tf1.Session(graph=copy, config=config)
    values = session.run(variables)
    loop_session.run(parts["loads"], dict(zip(parts["values"], values, strict=True)))

    def there(t):
        return None if t is None else copy.get_tensor_by_name(t.name)

    copied = replace(ops, inputs=there(ops.inputs), labels=there(ops.labels),
                     logits=there(ops.logits), loss=there(ops.loss),
                     accuracy=there(ops.accuracy), train_op=copy.get_operation_by_name(
                         ops.train_op.name), feed_point=there(ops.feed_point),
                     teacher_logits=there(ops.teacher_logits),
                     feeds={there(t): f for t, f in ops.feeds.items()},
                     train_feeds={there(t): v for t, v in ops.train_feeds.items()},
                     var_list=[parts["read_of"][v.op.name] for v in ops.var_list])
    return EpochLoop(loop_session, copied, variables, [v.op.name for v in ops.var_list], parts,
                     batch_size, chunk_bytes)


def _switch_values(ops) -> dict:
    """``{placeholder: numpy value}`` fed in training steps besides inputs and labels."""
    from ..graphdef.feeds import feed_array

    values = {}
    for t, f in ops.feeds.items():
        if f.value is None and t not in ops.train_feeds:
            raise LoopUnavailable(f"placeholder '{f.name}' is fed zeros of the batch's size")
        values[t] = np.asarray(ops.train_feeds[t]) if t in ops.train_feeds else feed_array(f, 1)
    return values


def _ancestors(graph, starts: list, stop: set[str]) -> set:
    """The ops ``starts`` depend on, not looking below variables or ops named in ``stop``."""
    from ..graphdef.walk import reachable

    def inputs(op):
        if op.name in stop or op.type in _VARIABLE_OPS:
            return []
        return [t.op for t in op.inputs] + list(op.control_inputs)

    return reachable(starts, inputs)


def _check_step(step_ops: set) -> None:
    for op in sorted(step_ops, key=lambda o: o.name):
        if op.type in _LOOP_OPS:
            raise LoopUnavailable(f"the training step has a while loop of its own ('{op.name}')")
        if op.type in _VARIABLE_OPS or op.type == "Placeholder":
            continue
        if op.op_def.is_stateful and not op.inputs and op.type != "PlaceholderWithDefault":
            raise LoopUnavailable(f"the training step uses {op.type} '{op.name}', state a copy "
                                  "of the step would not share")


def _unused(step_ops: set, fetched: set) -> set[str]:
    """The stateless ops of the step whose outputs no op of it reads, only waits for (the
    gates of ``tf.gradients`` wait for every gradient of an op's inputs, the first layer's
    gradient with respect to the data included: a third of a full MLP's arithmetic). Their
    values are dropped, so the copy leaves them out: no value it computes changes, and the
    stateful ops keep their order (the ``NoOp`` gates stay). None in a step with a v1 ``cond``:
    there a control edge from a branch's pivot also carries whether the branch runs."""
    if any(op.type in ("Switch", "RefSwitch") for op in step_ops):
        return set()
    readers: dict = {op: 0 for op in step_ops}
    for op in step_ops:
        for t in op.inputs:
            if t.op in readers:
                readers[t.op] += 1

    def droppable(op) -> bool:
        return (readers[op] == 0 and bool(op.outputs) and op not in fetched
                and not op.op_def.is_stateful and op.type not in _VARIABLE_OPS
                # ApplyAdam and Assign write through a ref input without being "stateful"
                and not any(arg.is_ref for arg in op.op_def.input_arg))

    unused: set[str] = set()
    stack = [op for op in step_ops if droppable(op)]
    while stack:
        op = stack.pop()
        if op.name in unused:
            continue
        unused.add(op.name)
        for t in op.inputs:
            if t.op in readers:
                readers[t.op] -= 1
                if droppable(t.op):
                    stack.append(t.op)
    return unused


def _step_graph_def(full, keep: set[str], unused: set[str]):
    """The part of ``GraphDef`` ``full`` named in ``keep`` (the step but its variables and fed
    placeholders, rewired at import) but not in ``unused``, colocation and devices cleared
    (they name ops the step does not hold)."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(full.versions)
    out.library.CopyFrom(full.library)
    for node in full.node:
        if node.name in keep and node.name not in unused:
            added = out.node.add()
            added.CopyFrom(node)
            added.device = ""
            if "_class" in added.attr:
                del added.attr["_class"]
            kept = [i for i in added.input if not (i.startswith("^") and i[1:] in unused)]
            if len(kept) < len(added.input):
                set_repeated(added.input, kept)
    return out


def _build(copy, step_def, ops, into, switches: dict, variables: list, batch_size: int,
           short: int, k: int) -> dict:
    """The loop's placeholders, loops and variable copies in graph ``copy``."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    x = tf1.placeholder(into.dtype, [None, *into.shape.as_list()[1:]], name="loop/rows")
    y = tf1.placeholder(ops.labels.dtype, [None], name="loop/labels")
    teacher = None if ops.teacher_logits is None else tf1.placeholder(
        ops.teacher_logits.dtype, [None, *ops.teacher_logits.shape.as_list()[1:]],
        name="loop/teacher_logits")
    handles = {v.op.name: copy.get_tensor_by_name(v.op.name + ":0") for v in variables}
    # The references of the step to what it does not hold, as its nodes spell them.
    present = {n.name for n in step_def.node}
    outside = {ref if ref.startswith("^") or ":" in ref else ref + ":0"
               for node in step_def.node for ref in node.input
               if ref.lstrip("^").split(":")[0] not in present}

    def step(first, size: int, after):
        """One training step on rows ``first:first + size``; (train op, loss times rows)."""
        def rows(t):
            begin = tf1.concat([[first], tf1.zeros([t.shape.rank - 1], tf.int32)], 0)
            return tf1.slice(t, begin, [size] + [-1] * (t.shape.rank - 1))

        mapping = {into.name: rows(x), ops.labels.name: rows(y)}
        if teacher is not None:
            mapping[ops.teacher_logits.name] = rows(teacher)
        mapping.update({t.name: tf1.constant(v, t.dtype) for t, v in switches.items()})
        mapping.update({f"{n}:0": h for n, h in handles.items()})
        mapping.update({f"^{n}": h.op for n, h in handles.items()})
        unmapped = sorted(outside - set(mapping))
        if unmapped:
            raise LoopUnavailable(f"the training step reads '{unmapped[0]}', which the loop "
                                  "does not provide")
        mapping = {ref: mapping[ref] for ref in outside}
        with tf1.control_dependencies([after] if after is not None else []):
            train, loss = tf1.import_graph_def(step_def, input_map=mapping, name="loop/step",
                                               return_elements=[ops.train_op.name,
                                                                ops.loss.name])
        return train, tf1.cast(loss, tf.float64) * float(size)

    def steps(first, count: int, total):
        after = None
        for j in range(count):
            after, loss = step(first + j * batch_size, batch_size, after)
            total = total + loss
        with tf1.control_dependencies([after]):
            return tf1.identity(total)

    n_full = tf1.shape(x)[0] // batch_size
    zero = tf1.constant(0.0, tf.float64)
    # k steps per iteration, then one per iteration for the batches left over.
    done, total = tf1.while_loop(
        lambda i, _: i + k <= n_full,
        lambda i, t: (i + k, steps(i * batch_size, k, t)),
        [tf1.constant(0), zero], parallel_iterations=1, back_prop=False, name="loop/steps")
    _, total = tf1.while_loop(
        lambda i, _: i < n_full,
        lambda i, t: (i + 1, steps(i * batch_size, 1, t)),
        [done, total], parallel_iterations=1, back_prop=False, name="loop/rest")
    tails = {}
    if short:
        with tf1.control_dependencies([total]):
            train, loss = step(n_full * batch_size, short, None)
        with tf1.control_dependencies([train]):
            tails[short] = tf1.identity(total + loss)
    values, loads, reads = [], [], []
    for v in variables:
        handle = handles[v.op.name]
        value = tf1.placeholder(v.dtype.base_dtype, v.shape)
        values.append(value)
        if handle.dtype == tf.resource:
            loads.append(tf.raw_ops.AssignVariableOp(resource=handle, value=value))
            reads.append(tf.raw_ops.ReadVariableOp(resource=handle, dtype=v.dtype.base_dtype))
        else:
            loads.append(tf1.assign(handle, value, validate_shape=False))
            reads.append(tf1.identity(handle))
    return {"x": x, "y": y, "teacher": teacher, "total": total, "tails": tails,
            "values": values, "loads": loads, "reads": reads,
            "read_of": {v.op.name: r for v, r in zip(variables, reads, strict=True)}}
