"""Training a classifier graph: loss, accuracy and optimizer ops, then a minibatch loop.

Works on any graph with a float input, integer labels and logits: a grafted one or the demo's
base model. Validation accuracy is measured after each epoch and the best epoch's weights are
kept. ``feed_point`` (a cut tensor) enables caching: the frozen part runs once over the data set
and the upper layers train on its fed outputs, as the original write-up does with hidden2.

Two loops train the same batches in the same order (``rng.permutation`` of the rows per epoch,
batches ``order[i:i + batch_size]``): the in-graph loop of :mod:`~ckptsurgery.train.loop`
(many steps per ``session.run``), and where it cannot apply (``--augment`` changes batches in
numpy, or a step it cannot copy) the write-up's :class:`FeedLoop`, one run per batch; ``fit``
says which and why.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import CkptSurgeryWarning, DataError, UserError
from ..graph.restore import assign
from ..graphdef.walk import reachable
from .augment import augment_batch
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = ["TrainConfig", "TrainingOps", "EpochResult", "History", "FeedLoop",
           "add_training_ops", "fit", "evaluate", "cache_features"]


@dataclass
class TrainConfig:
    """How to train: optimizer (``sgd``, ``momentum`` with 0.9, ``adam``), learning rate,
    epochs, batch size, seed of the shuffling, and whether to cache the frozen part's output.

    ``in_graph`` trains with the in-graph loop (:mod:`~ckptsurgery.train.loop`) where it applies,
    else with one ``session.run`` per batch. ``cache_memory_fraction``: the cache of the frozen
    part's output goes to a memory-mapped file when it is larger than this fraction of the
    memory available (``MemAvailable`` in ``/proc/meminfo``; 0 always maps a file)."""

    optimizer: str = "adam"
    lr: float = 0.001
    epochs: int = 5
    batch_size: int = 50
    seed: int = 42
    cache_frozen: bool = False
    progress: bool = True
    augment: tuple[str, ...] = ()  # shift, flip, rotate of training batches (image inputs)
    in_graph: bool = True
    cache_memory_fraction: float = 0.5

    def __post_init__(self) -> None:
        for option, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value < 1:
                raise UserError(f"{option} {value}: give a whole number of at least 1")
        if not self.lr > 0:
            raise UserError(f"--lr {self.lr:g}: the learning rate must be a positive number")


@dataclass
class TrainingOps:
    """The ops :func:`add_training_ops` adds: mean cross-entropy, accuracy, one training step;
    and what every run feeds besides inputs and labels (``feeds``: placeholder tensor ->
    :class:`~ckptsurgery.graphdef.feeds.Feed`; ``train_feeds``: overrides in training steps)."""

    inputs: object
    labels: object
    logits: object
    loss: object
    accuracy: object
    train_op: object
    var_list: list
    feed_point: object | None = None
    feeds: dict = field(default_factory=dict)
    train_feeds: dict = field(default_factory=dict)
    teacher_logits: object | None = None


@dataclass
class EpochResult:
    """One epoch: its number, validation accuracy, seconds, and mean training loss."""

    epoch: int
    valid_accuracy: float
    seconds: float
    train_loss: float = float("nan")

    def line(self, epochs: int) -> str:
        """``epoch 3/5: valid accuracy 0.9272, train loss 0.1964 (0.2s)``."""
        return (f"epoch {self.epoch}/{epochs}: valid accuracy {self.valid_accuracy:.4f}, "
                f"train loss {self.train_loss:.4f} ({self.seconds:.1f}s)")


@dataclass
class History:
    """Per-epoch results; the best epoch's weights are what the session holds after :func:`fit`."""

    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_accuracy: float = 0.0
    test_accuracy: float | None = None

    def result_line(self) -> str:
        """``best epoch 5: valid accuracy 0.9444, test accuracy 0.9310``."""
        return (f"best epoch {self.best_epoch}: valid accuracy {self.best_valid_accuracy:.4f}"
                + (f", test accuracy {self.test_accuracy:.4f}"
                   if self.test_accuracy is not None else ""))

    def brief(self) -> str:
        """Every epoch's validation accuracy and the result on one line."""
        accuracies = " ".join(f"{e.valid_accuracy:.4f}" for e in self.epochs)
        seconds = sum(e.seconds for e in self.epochs) / max(len(self.epochs), 1)
        return (f"valid accuracy per epoch {accuracies} ({seconds:.1f}s/epoch); "
                + self.result_line())

    def as_dict(self) -> dict:
        return {
            "valid_accuracy": [e.valid_accuracy for e in self.epochs],
            "seconds": [e.seconds for e in self.epochs],
            "train_loss": [e.train_loss for e in self.epochs],
            "best_epoch": self.best_epoch,
            "final_valid_accuracy": self.best_valid_accuracy,
            "test_accuracy": self.test_accuracy,
        }


def add_training_ops(inputs, labels, logits, var_list, config: TrainConfig,
                     feed_point=None, *, feeds=None, train_feeds=None,
                     update_ops=(), slower: tuple[list, float] | None = None,
                     distill: tuple[float, float] | None = None) -> TrainingOps:
    """Add loss (``loss/``), accuracy (``eval/``) and a training step (``train/``) to the graph
    of ``logits``; only ``var_list`` is trained. ``update_ops`` (batch-norm statistics) run
    with each step, as control dependencies of it. ``slower = (variables, lr)`` trains those
    of ``var_list`` at another learning rate (fine-tuning reused layers gently), with an
    optimizer of their own over the same gradients. ``distill = (temperature, alpha)`` adds a
    ``distill/teacher_logits`` placeholder (fed by :func:`fit`) and makes the loss
    ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * cross-entropy``.

    Raises:
        UserError: unknown optimizer, no label tensor, or nothing to train.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    if labels is None:
        raise UserError("the graph has no integer label placeholder; name it with --labels NAME")
    if not labels.dtype.is_integer:
        raise UserError(
            f"label tensor '{labels.name}' is {labels.dtype.name}; training needs integer class "
            "labels (a one-hot float placeholder cannot be fed from the data's labels); "
            "name an integer placeholder with --labels, or omit --labels and graft adds one"
        )
    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{config.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
    if not var_list:
        raise UserError("no variable would train; widen --train-scope")
    with logits.graph.as_default():
        teacher = None
        with tf1.name_scope("loss"):
            xentropy = tf1.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            loss = tf1.reduce_mean(xentropy, name="loss")
        if distill is not None:
            temperature, alpha = distill
            with tf1.name_scope("distill"):
                teacher = tf1.placeholder(logits.dtype, logits.shape, name="teacher_logits")
                soft = tf1.nn.softmax(teacher / temperature)
                log_student = tf1.nn.log_softmax(logits / temperature)
                kl = tf1.reduce_mean(tf1.reduce_sum(
                    soft * (tf1.log(soft + 1e-12) - log_student), axis=-1))
                loss = tf1.add(alpha * temperature ** 2 * kl, (1 - alpha) * loss,
                               name="loss")
        with tf1.name_scope("eval"):
            correct = tf1.nn.in_top_k(logits, labels, 1)
            accuracy = tf1.reduce_mean(tf1.cast(correct, tf1.float32), name="accuracy")
        with tf1.name_scope("train"):
            slow = {v.op.name for v in slower[0]} if slower else set()
            fast_vars = [v for v in var_list if v.op.name not in slow]
            slow_vars = [v for v in var_list if v.op.name in slow]
            with tf1.control_dependencies(list(update_ops)):
                if not slow_vars:
                    train_op = make_optimizer(config.optimizer, config.lr).minimize(
                        loss, var_list=var_list)
                else:
                    grads = tf1.gradients(loss, fast_vars + slow_vars)
                    # Every gradient before any update: a variable's read aliases its buffer.
                    with tf1.control_dependencies([g for g in grads if g is not None]):
                        grads = [g if g is None else tf1.identity(g) for g in grads]
                    steps = [make_optimizer(config.optimizer, lr).apply_gradients(
                                 [(g, v) for g, v in zip(part, vs, strict=True) if g is not None])
                             for vs, lr, part in ((fast_vars, config.lr, grads[:len(fast_vars)]),
                                                  (slow_vars, slower[1], grads[len(fast_vars):]))
                             if vs]
                    train_op = tf1.group(*steps, name="step")
        tf1.add_to_collection(tf1.GraphKeys.TRAIN_OP, train_op)
    return TrainingOps(inputs, labels, logits, loss, accuracy, train_op, list(var_list), feed_point,
                       dict(feeds or {}), dict(train_feeds or {}), teacher)


def evaluate(session, ops: TrainingOps, x: np.ndarray, y: np.ndarray, *, fed=None,
             batch: int = 5000) -> float:
    """Accuracy of the graph on ``(x, y)`` (``x``: rows, or
    :class:`~ckptsurgery.train.data.Columns` of a model with several inputs); ``fed`` holds
    cached feed-point values instead of x. An input with a fixed batch size is fed that many
    rows at a time."""
    single = not isinstance(ops.inputs, tuple)
    fixed = ops.inputs.shape[0] if single and ops.inputs.shape.rank else None
    batch = fixed or batch
    correct = 0.0
    for start in range(0, len(y), batch):
        feed = _feed(ops, x, y, fed, slice(start, start + batch))
        correct += session.run(ops.accuracy, feed) * len(y[start:start + batch])
    return float(correct / len(y))


def fit(session, ops: TrainingOps, data, config: TrainConfig,
        on_epoch: Callable[[EpochResult], None] | None = None,
        teacher_logits: np.ndarray | None = None,
        log: Callable[[str], None] | None = None) -> History:
    """Train with minibatches, validate each epoch, keep the best epoch's weights.

    Args:
        session: session of the graph, variables initialised or restored.
        ops: from :func:`add_training_ops`.
        data: a :class:`~ckptsurgery.train.data.Split`.
        config: the :class:`TrainConfig`; ``cache_frozen`` needs ``ops.feed_point``.
        on_epoch: called after each epoch (the CLI prints a line).
        teacher_logits: with distillation, the teacher's logits for each training row.
        log: where fit says which loop trains when it is not the in-graph one, and where a
            cache goes to a file (default: a :class:`CkptSurgeryWarning`).
    """
    from tqdm import tqdm

    say = log or _warn
    _check_data(ops, data, config.batch_size)
    fed = {}
    if config.cache_frozen:
        if ops.feed_point is None:
            raise UserError("--cache-frozen needs a cut (--cut-after REF): its output is what is cached")
        fed = cache_features(session, ops, {"train": data.x_train, "valid": data.x_valid,
                                            "test": data.x_test},
                             memory_fraction=config.cache_memory_fraction, log=say)
    if config.augment and (config.cache_frozen or isinstance(ops.inputs, tuple)
                           or data.x_train.ndim not in (3, 4)):
        raise UserError("--augment needs image inputs fed as images ([N, H, W(, C)]), not "
                        "flattened rows or cached features (--cache-frozen)")
    x_train = fed.get("train", data.x_train)
    n = len(data.y_train)
    trainer = _trainer(session, ops, config, n, say)
    rng = np.random.RandomState(config.seed)
    history = History()
    best = None
    try:
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            order = rng.permutation(n)
            bar = tqdm(total=-(-n // config.batch_size), desc=f"epoch {epoch}/{config.epochs}",
                       unit="batch", leave=False, disable=None if config.progress else True)
            total_loss = trainer.train_epoch(x_train, data.y_train, teacher_logits, order,
                                             bar.update)
            bar.close()
            acc = evaluate(trainer.session, trainer.ops, data.x_valid, data.y_valid,
                           fed=fed.get("valid"))
            result = EpochResult(epoch, acc, time.perf_counter() - start, total_loss / n)
            history.epochs.append(result)
            if best is None or acc > history.best_valid_accuracy:
                history.best_epoch, history.best_valid_accuracy = epoch, acc
                best = trainer.session.run(trainer.ops.var_list)
            if on_epoch:
                on_epoch(result)
    finally:
        trainer.finish(session, best)
    if data.x_test is not None:
        history.test_accuracy = evaluate(session, ops, data.x_test, data.y_test, fed=fed.get("test"))
    return history


class FeedLoop:
    """The write-up's loop: one ``session.run`` with a ``feed_dict`` per batch. Used where the
    in-graph loop does not apply; ``augment`` changes each training batch in numpy."""

    def __init__(self, session, ops: TrainingOps, config: TrainConfig):
        self.session, self.ops = session, ops
        self._config = config
        self._augment_rng = np.random.RandomState(config.seed + 1)

    def train_epoch(self, x: np.ndarray, y: np.ndarray, teacher: np.ndarray | None,
                    order: np.ndarray, progress: Callable[[int], None]) -> float:
        """Train on the batches ``order[i:i + batch_size]``; the sum of loss times rows.
        ``x`` holds inputs, or feed-point values when ``config.cache_frozen``."""
        ops, config = self.ops, self._config
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            feed = _feed(ops, x, y, x if config.cache_frozen else None, idx, training=True)
            if config.augment:
                feed[ops.inputs] = augment_batch(feed[ops.inputs], config.augment,
                                                 self._augment_rng)
            if ops.teacher_logits is not None:
                feed[ops.teacher_logits] = teacher[idx]
            _, loss = self.session.run([ops.train_op, ops.loss], feed)
            total += float(loss) * len(idx)
            progress(1)
        return total

    def finish(self, session, best: list | None) -> None:
        """Give the trained variables the best epoch's values."""
        if best is not None:
            for var, value in zip(self.ops.var_list, best, strict=True):
                assign(session, var, value)


def _trainer(session, ops: TrainingOps, config: TrainConfig, n: int, say):
    """The in-graph loop where it applies, else the feed loop (saying why)."""
    from .loop import LoopUnavailable, epoch_loop

    if not config.in_graph:
        return FeedLoop(session, ops, config)
    why = "--augment changes each batch in numpy" if config.augment else None
    if why is None:
        try:
            return epoch_loop(session, ops, batch_size=config.batch_size, n_rows=n,
                              cached=config.cache_frozen)
        except LoopUnavailable as e:
            why = str(e)
    say(f"training with one session.run per batch (the in-graph loop does not apply: {why})")
    return FeedLoop(session, ops, config)


def _warn(message: str) -> None:
    warnings.warn(message, CkptSurgeryWarning, stacklevel=3)


def _feed(ops, x, y, fed, idx, training: bool = False):
    labels = y[idx].astype(ops.labels.dtype.as_numpy_dtype)
    if fed is not None:
        return {ops.feed_point: fed[idx], ops.labels: labels}
    return {**_input_feed(ops.inputs, x[idx]), ops.labels: labels,
            **_switches(ops, len(labels), training)}


def _input_feed(inputs, x) -> dict:
    """``{input placeholder: rows}`` for ``inputs`` (a tensor, or a tuple of them for a model
    with several inputs, whose rows ``x`` are :class:`~ckptsurgery.train.data.Columns` named
    after the placeholders)."""
    if isinstance(inputs, tuple):
        return {t: x.arrays[t.op.name] for t in inputs}
    return {inputs: x}


def _switches(ops, n: int, training: bool) -> dict:
    """Values of the placeholders fed besides inputs and labels, for a batch of ``n`` rows."""
    from ..graphdef.feeds import feed_array

    out = {t: feed_array(f, n) for t, f in ops.feeds.items()}
    if training:
        out.update({t: np.asarray(v) for t, v in ops.train_feeds.items()})
    return out


def cache_features(session, ops: TrainingOps, inputs: dict, *, memory_fraction: float = 0.5,
                   log: Callable[[str], None] = print, chunk: int = 5000) -> dict:
    """The values of ``ops.feed_point`` for each array of ``inputs`` (``{name: x or None}``),
    computed in chunks of ``chunk`` rows.

    They are held in memory unless all of them together take more than ``memory_fraction`` of
    the memory available (``MemAvailable`` in ``/proc/meminfo``; where it cannot be read, in
    memory): then in memory-mapped files under the temporary folder (``tempfile``), unlinked
    at once so that nothing is left behind, and ``log`` says so.

    Returns:
        ``{name: array}`` for the names whose input is not None.
    """
    inputs = {k: x for k, x in inputs.items() if x is not None}
    first = {k: _feed_point_values(session, ops, x[:chunk]) for k, x in inputs.items()}
    row = next(iter(first.values()))[:1]
    size = sum(len(x) for x in inputs.values()) * row.nbytes
    available = _available_memory()
    mapped = available is not None and size > memory_fraction * available
    if mapped:
        log(f"caching {ops.feed_point.name} ({size / 2**20:,.1f} MB) in memory-mapped files "
            f"under {tempfile.gettempdir()}: more than {memory_fraction:.0%} of the "
            f"{available / 2**20:,.0f} MB of memory available")
    out = {}
    for name, x in inputs.items():
        shape = (len(x), *row.shape[1:])
        if mapped:
            with tempfile.NamedTemporaryFile(prefix=f"ckptsurgery-cache-{name}-") as file:
                values = np.memmap(file.name, dtype=row.dtype, mode="w+", shape=shape)
        else:
            values = np.empty(shape, row.dtype)
        values[:len(first[name])] = first[name]
        for i in range(chunk, len(x), chunk):
            values[i:i + chunk] = _feed_point_values(session, ops, x[i:i + chunk])
        out[name] = values
    return out


def _feed_point_values(session, ops, x) -> np.ndarray:
    return session.run(ops.feed_point, {**_input_feed(ops.inputs, x),
                                        **_switches(ops, len(x), False)})


def _available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_data(ops, data, batch_size: int) -> None:
    """Fail before training, with the fix, on data or graphs that cannot train."""
    want = ops.inputs.shape if not isinstance(ops.inputs, tuple) else None
    fixed = want[0] if want is not None and want.rank else None
    if fixed is not None:
        rows = {"training": len(data.y_train), "validation": len(data.y_valid)}
        if data.y_test is not None:
            rows["test"] = len(data.y_test)
        if batch_size != fixed or any(n % fixed for n in rows.values()):
            raise DataError(
                f"input '{ops.inputs.name}' takes exactly {fixed} rows at a time (the graph "
                f"fixes its batch size); pass --batch-size {fixed} and rows in multiples of it "
                f"(now {', '.join(f'{n:,} {what}' for what, n in rows.items())}: see "
                "--valid-size, --per-class)")
    for tensor, rows in _input_feed(ops.inputs, data.x_train).items():
        want, have = tensor.shape, rows.shape[1:]
        if want.rank is not None and (len(have) != want.rank - 1 or any(
                w is not None and w != h for w, h in zip(want.as_list()[1:], have, strict=True))):
            raise DataError(
                f"the data's rows are {list(have)} but input '{tensor.name}' takes "
                f"{want.as_list()[1:]} per row; use data that matches the model (load it with "
                "ckptsurgery.train.data.load_dataset(..., input_shape=...) to shape it)"
            )
    classes = ops.logits.shape[-1]
    top = int(max(data.y_train.max(), data.y_valid.max()))
    if classes is not None and top >= classes:
        raise DataError(
            f"labels go up to {top} but output '{ops.logits.name}' has {classes} units; "
            f"make the top layer at least {top + 1} wide (e.g. --dense logits:{top + 1})"
        )
    inputs = ops.inputs if isinstance(ops.inputs, tuple) else (ops.inputs,)
    fed = {t.op.name for t in (*inputs, ops.labels, *ops.feeds)}
    if ops.teacher_logits is not None:
        fed.add(ops.teacher_logits.op.name)
    if ops.feed_point is not None:
        fed.add(ops.feed_point.op.name)
    unfed = sorted(op.name for op in _placeholders_below(ops.train_op, fed))
    if unfed:
        raise UserError(
            f"training needs placeholder(s) {', '.join(unfed)} fed besides the inputs and "
            "labels (dropout or batch-norm switches?); graft above them or give them defaults"
        )


def _placeholders_below(op, stop: set[str]) -> list:
    """The ``Placeholder`` ops that ``op`` depends on, not looking below ops named in ``stop``."""
    ops = reachable([op], lambda o: [t.op for t in o.inputs] + list(o.control_inputs),
                    enter=lambda o: o.name not in stop)
    return [o for o in ops if o.type == "Placeholder"]
