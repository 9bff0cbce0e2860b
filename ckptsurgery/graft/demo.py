"""The MNIST transfer-learning workflow of the TF1 write-up, as six steps over the library.

``base`` trains the reference MLP (:mod:`~ckptsurgery.graph.models`, :mod:`~ckptsurgery.train.fit`,
:mod:`~ckptsurgery.graph.export`); every later step is a :class:`~ckptsurgery.graft.job.GraftJob` run by
:func:`~ckptsurgery.graft.job.run_graft`, the calls ``ckptsurgery graft`` makes, so the demo shows
and tests what a user gets from the toolkit. After each step its checkpoint is compared with the
base checkpoint by :func:`~ckptsurgery.migrate.diff.diff_checkpoints`: the frozen-layer check in the
report is read from the files, not claimed. The report (``report.json``, the state of an output
folder) is rewritten after each step, so a step can be run alone on an earlier run's folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from .job import GraftJob

__all__ = ["Step", "STEPS", "STEP_NAMES", "TRANSFER_STEPS", "DemoConfig", "MissingStepError",
           "graft_job", "frozen_check", "run_demo"]


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the demo: name, what it does, the checkpoint it writes, the steps whose
    outputs it needs, and how it trains."""

    name: str
    title: str
    checkpoint: str
    needs: tuple[str, ...]
    optimizer: str
    lr: float
    cache_frozen: bool = False


STEPS = (
    Step("base", "train the 784-300-50-50-50-50-10 ReLU MLP", "my_model.ckpt", (), "sgd", 0.01),
    Step("graft", "reuse hidden1-3, new hidden4 (20) + logits, all train",
         "my_new_model.ckpt", ("base",), "adam", 0.001),
    Step("freeze-varlist", "hidden1-3 restored, new hidden4 (20) + logits, only "
         "hidden[34]|logits train", "my_transfer_model.ckpt", ("base",), "sgd", 0.01),
    Step("freeze-stop-gradient", "as freeze-varlist, hidden1-2 frozen by a stop_gradient",
         "my_transfer_model2.ckpt", ("base",), "sgd", 0.01),
    Step("cache", "as freeze-stop-gradient, hidden2's outputs computed once and fed",
         "my_caching_model.ckpt", ("base",), "sgd", 0.01, cache_frozen=True),
    Step("fine-tune", "the best of the three above, everything trains, low rate",
         "my_finetuned_model.ckpt", ("freeze-varlist", "freeze-stop-gradient", "cache"),
         "adam", 0.0001),
    Step("distill", "as graft on 100 images per digit, with the base's soft targets "
         "(T 4, A 0.7) against labels alone, seeds 1-3", "my_distilled_model.ckpt", ("base",),
         "adam", 0.001),
)
STEP_NAMES = tuple(s.name for s in STEPS)
_BY_NAME = {s.name: s for s in STEPS}
#: The steps the fine-tune step chooses its starting model from.
TRANSFER_STEPS = ("freeze-varlist", "freeze-stop-gradient", "cache")
#: The layers of the reference MLP, compared with the base checkpoint after each step.
LAYERS = ("hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "logits")
REPORT_JSON = "report.json"
#: The distill step: images per digit of the student's data, and the seeds it compares over.
DISTILL_PER_CLASS = 100
DISTILL_SEEDS = (1, 2, 3)


class MissingStepError(UserError):
    """A step was asked for whose earlier steps' outputs are not in the output folder."""


@dataclasses.dataclass
class DemoConfig:
    """Where the data comes from (a path, ``'keras'``, or None for the built-in subset), where
    the outputs go, and the settings every step shares."""

    out: str
    data: str | None = None
    epochs: int = 5
    seed: int = 42
    batch_size: int = 50
    force: bool = False
    progress: bool = True
    logdir: str | None = None  # TensorBoard events, one sub-folder per step


def _logdir(config: DemoConfig, step: str) -> str | None:
    return os.path.join(config.logdir, step) if config.logdir else None


def graft_job(step: str, config: DemoConfig, source: str | None = None, *,
              seed: int | None = None, distill: bool = True) -> GraftJob:
    """The :class:`~ckptsurgery.graft.job.GraftJob` of a step after ``base``.

    Args:
        step: one of :data:`STEP_NAMES` but ``base``.
        config: the demo's settings.
        source: the checkpoint to start from; default the base checkpoint (fine-tune: required,
            the best transfer step's checkpoint).
        seed: instead of ``config.seed`` (the distill step runs several).
        distill: for the distill step, False trains the same student on the labels alone.
    """
    from ..graph.layers import DenseSpec
    from ..train.data import BUILTIN_SUBSET
    from ..train.fit import TrainConfig
    from .build import GraftSpec
    from .distill import Distillation
    from .job import GraftJob

    s = _BY_NAME[step]
    new_top = [DenseSpec("hidden4", 20, "relu"), DenseSpec("logits", 10)]
    specs = {
        "graft": GraftSpec(at="hiddens3", layers=new_top),
        "freeze-varlist": GraftSpec(at="hiddens3", layers=new_top, restore_scope="hidden[123]",
                                    train_scope="hidden[34]|logits"),
        "freeze-stop-gradient": GraftSpec(at="hiddens3", layers=new_top,
                                          restore_scope="hidden[123]", cut_after="hiddens2"),
        "cache": GraftSpec(at="hiddens3", layers=new_top, restore_scope="hidden[123]",
                           cut_after="hiddens2"),
        # The transfer models of the stop_gradient steps carry their cut; uncut removes it so
        # that hidden1-2 train too.
        "fine-tune": GraftSpec(at="logits", layers=[], uncut=True),
        "distill": GraftSpec(at="hiddens3", layers=new_top),
    }
    if step not in specs:
        raise UserError(f"step '{step}' is not a graft step; use one of {', '.join(specs)}")
    if source is None and step == "fine-tune":
        raise UserError("the fine-tune step needs the checkpoint of the best transfer step")
    seed = config.seed if seed is None else seed
    base = os.path.join(config.out, _BY_NAME["base"].checkpoint)
    return GraftJob(
        checkpoint=source or base,
        spec=dataclasses.replace(specs[step], seed=seed),
        out=os.path.join(config.out, s.checkpoint),
        data=config.data or BUILTIN_SUBSET,
        train=TrainConfig(optimizer=s.optimizer, lr=s.lr, epochs=config.epochs,
                          batch_size=config.batch_size, seed=seed,
                          cache_frozen=s.cache_frozen, progress=config.progress),
        per_class=DISTILL_PER_CLASS if step == "distill" else None,
        distill=Distillation(base) if step == "distill" and distill else None,
        force=config.force, logdir=_logdir(config, step), detail="brief",
    )


def run_demo(config: DemoConfig, steps: list[str] | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo's steps (default all) into ``config.out`` and write the report there.

    Everything is checked before anything is trained or written: the data loads, the earlier
    steps' outputs a step needs are in ``config.out``, and no output exists (unless ``force``).

    Returns:
        The report (the content of ``report.json``).

    Raises:
        MissingStepError: a step needs the outputs of an earlier step that is neither run now
            nor in ``config.out``.
        OutputError: an output exists and ``force`` is False.
        DataError: the data cannot be loaded.
    """
    from ..train.data import load_dataset, split
    from . import report as reports

    names = _requested(steps)
    run_all = list(names) == list(STEP_NAMES)
    previous = None if run_all else reports.load_report(config.out)
    _check_prerequisites(names, config, previous)
    data = split(load_dataset(config.data or _builtin_subset()))
    _check_outputs(names, config, report_files=run_all)

    source = config.data or "built-in MNIST subset"
    if config.data == "keras":
        source = "Keras's MNIST"
    report = reports.new_report(source, data, epochs=config.epochs, seed=config.seed,
                                batch_size=config.batch_size, previous=previous)
    for name in _stale(names, report):
        log(f"dropping the result of step '{name}' from the report: it was made from outputs "
            f"this run replaces; run 'ckptsurgery demo {name} --out {config.out} --force' again")
        del report["steps"][name]
    for i, name in enumerate(names, start=1):
        step = _BY_NAME[name]
        log(f"[{i}/{len(names)}] {name}: {step.title} ({step.optimizer} lr {step.lr})")
        started = time.perf_counter()
        entry = _run_step(step, config, data, report, _indented(log))
        entry["seconds_total"] = time.perf_counter() - started
        report["steps"][name] = entry
        report["steps"] = {n: report["steps"][n] for n in STEP_NAMES if n in report["steps"]}
        reports.write_report(report, config.out, force=True)
    return report


def _requested(steps: list[str] | None) -> list[str]:
    if not steps:
        return list(STEP_NAMES)
    unknown = [s for s in steps if s not in _BY_NAME]
    if unknown:
        raise UserError(f"unknown demo step '{unknown[0]}'; use one of {', '.join(STEP_NAMES)}")
    return [s for s in STEP_NAMES if s in steps]


def _builtin_subset() -> str:
    from ..errors import DataError
    from ..train.data import BUILTIN_SUBSET

    if not os.path.exists(BUILTIN_SUBSET):
        raise DataError(f"the built-in MNIST subset '{BUILTIN_SUBSET}' is missing from this "
                        "installation; reinstall ckptsurgery or pass --data PATH")
    return BUILTIN_SUBSET


def _check_prerequisites(names: list[str], config: DemoConfig, previous: dict | None) -> None:
    """Raise :class:`MissingStepError` naming the first missing earlier output."""
    done = set(names)
    for name in names:
        for need in _BY_NAME[name].needs:
            if need in done:
                continue
            prefix = os.path.join(config.out, _BY_NAME[need].checkpoint)
            missing = [p for p in (prefix + ".index", prefix + ".meta") if not os.path.exists(p)]
            if missing:
                raise MissingStepError(
                    f"step '{name}' needs the output of step '{need}', but '{missing[0]}' does "
                    f"not exist; run 'ckptsurgery demo {need} --out {config.out}' first, or "
                    f"'ckptsurgery demo --out DIR' for all steps"
                )
            if name == "fine-tune" and (previous is None or need not in previous.get("steps", {})):
                raise MissingStepError(
                    f"step 'fine-tune' starts from the best of {', '.join(TRANSFER_STEPS)}, but "
                    f"'{os.path.join(config.out, REPORT_JSON)}' has no result for step '{need}'; "
                    f"run 'ckptsurgery demo {need} --out {config.out} --force' first"
                )


def _check_outputs(names: list[str], config: DemoConfig, report_files: bool) -> None:
    from ..formats.output import check_output_file, check_output_prefix
    from .report import REPORT_FILES

    for name in names:
        check_output_prefix(os.path.join(config.out, _BY_NAME[name].checkpoint),
                            force=config.force)
    if report_files:
        for file in REPORT_FILES:
            check_output_file(os.path.join(config.out, file), force=config.force)


def _stale(names: list[str], report: dict) -> list[str]:
    """Steps in the report made from outputs that this run replaces (and not run again now)."""
    replaced = set(names)
    stale = []
    for step in STEPS:
        if step.name not in replaced and replaced & set(step.needs):
            replaced.add(step.name)
            if step.name in report["steps"]:
                stale.append(step.name)
    return stale


def _indented(log: Callable[[str], None]) -> Callable[[str], None]:
    def write(text: str) -> None:
        for line in str(text).splitlines():
            log("    " + line)
    return write


def _run_step(step: Step, config: DemoConfig, data, report: dict,
              log: Callable[[str], None]) -> dict:
    """Run one step; return its report entry."""
    from .job import run_graft

    source, frozen = None, []
    entry: dict = {"title": step.title, "checkpoint": step.checkpoint,
                   "optimizer": step.optimizer, "lr": step.lr, "epochs": config.epochs,
                   "seed": config.seed, "cache_frozen": step.cache_frozen,
                   "data": report["data"]["source"]}
    if step.name == "base":
        training, params = _train_base(config, data, log)
    else:
        if step.name == "fine-tune":
            best = max(TRANSFER_STEPS,
                       key=lambda n: report["steps"][n]["final_valid_accuracy"])
            source = os.path.join(config.out, _BY_NAME[best].checkpoint)
            log(f"starting from the best transfer step, {best} "
                f"(valid accuracy {report['steps'][best]['final_valid_accuracy']:.4f})")
            entry["started_from"] = best
        if step.name == "distill":
            entry["distill"] = _compare_distillation(config, log)
        result = run_graft(graft_job(step.name, config, source), log=log)
        training = result.training.as_dict()
        params = {key: sum(r.params for r in getattr(result.plan, key))
                  for key in ("trained", "frozen", "new", "reused")}
        frozen = [r.name for r in result.plan.frozen]
    entry["source"] = os.path.basename(source) if source else (
        None if step.name == "base" else _BY_NAME["base"].checkpoint)
    entry.update(training)
    entry["params"] = params
    entry["frozen_check"] = None if step.name == "base" else frozen_check(
        os.path.join(config.out, _BY_NAME["base"].checkpoint),
        os.path.join(config.out, step.checkpoint), frozen)
    return entry


def _compare_distillation(config: DemoConfig, log: Callable[[str], None]) -> dict:
    """The distill step's comparison: for each of :data:`DISTILL_SEEDS` (which draw the 100
    images per digit, the new layers' weights and the batches), the student trained on the
    labels alone and with the base's soft targets; their validation accuracies. These runs
    write no checkpoint; the step's own is the distilled student of ``config.seed``."""
    from .job import run_graft

    quiet = dataclasses.replace(config, progress=False)
    table: dict = {"seeds": list(DISTILL_SEEDS), "per_class": DISTILL_PER_CLASS,
                   "labels_alone": [], "distilled": []}
    for seed in DISTILL_SEEDS:
        for kind, soft in (("labels_alone", False), ("distilled", True)):
            job = dataclasses.replace(graft_job("distill", quiet, seed=seed, distill=soft),
                                      out=None, logdir=None, labels_only_accuracy=table[
                                          "labels_alone"][-1] if soft else None)
            table[kind].append(run_graft(job, log=lambda _: None).training.best_valid_accuracy)
        log(f"seed {seed}: labels alone {table['labels_alone'][-1]:.4f}, distilled "
            f"{table['distilled'][-1]:.4f}")
    return table


def _train_base(config: DemoConfig, data, log: Callable[[str], None]) -> tuple[dict, dict]:
    """Build, train and export the reference MLP (the one step that is not a graft)."""
    import tensorflow as tf

    from ..graph.export import export_checkpoint
    from ..graph.models import build_mlp
    from ..train.events import EventLog
    from ..train.fit import TrainConfig, add_training_ops, fit

    tf1 = tf.compat.v1
    step = _BY_NAME["base"]
    train = TrainConfig(optimizer=step.optimizer, lr=step.lr, epochs=config.epochs,
                        batch_size=config.batch_size, seed=config.seed, progress=config.progress)
    graph = tf.Graph()
    graph.seed = config.seed
    mlp = build_mlp(graph)
    variables = graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES)
    n_params = sum(v.shape.num_elements() for v in variables)
    log(f"model: {' -> '.join(str(h.shape[-1]) for h in [mlp.inputs, *mlp.hiddens, mlp.logits])}"
        f" ({len(variables)} variables, {n_params:,} parameters), {train.optimizer} "
        f"lr {train.lr}, batch {train.batch_size}")
    ops = add_training_ops(mlp.inputs, mlp.labels, mlp.logits, variables, train)
    events = EventLog(_logdir(config, "base"), graph) if config.logdir else None

    def on_epoch(e):
        if events:
            events.epoch(e)

    with tf1.Session(graph=graph) as sess:
        sess.run(tf1.global_variables_initializer())
        history = fit(sess, ops, data, train, on_epoch=on_epoch, log=log)
        if events:
            events.close()
        log(history.brief())
        exported = export_checkpoint(sess, graph, os.path.join(config.out, step.checkpoint),
                                     force=config.force)
    log(f"wrote {exported.prefix} ({exported.n_variables} variables)")
    params = {"trained": n_params, "frozen": 0, "new": n_params, "reused": 0}
    return history.as_dict(), params


_LAYER_VAR = re.compile(r"(?P<layer>[^/]+)/(kernel|bias)")


def frozen_check(base: str, prefix: str, frozen: Sequence[str] = ()) -> dict:
    """Compare the layers of checkpoint ``prefix`` with those of ``base``, bit for bit.

    Args:
        base: the base checkpoint's prefix.
        prefix: a later step's checkpoint.
        frozen: the variables the step froze (from its plan), which must be identical.

    Returns:
        ``layers``: per layer of :data:`LAYERS`, its ``status`` (``identical``, ``changed``,
        ``reshaped`` (a new layer of another shape), ``removed``, ``added``) and the largest
        absolute difference; ``hidden1_2``: ``identical`` when both hidden1 and hidden2 are,
        else ``changed``; ``frozen_identical``: whether every variable in ``frozen`` is
        identical (None when nothing was frozen).
    """
    from ..formats.checkpoint import open_checkpoint
    from ..migrate.diff import diff_checkpoints

    def ours(name: str) -> bool:
        m = _LAYER_VAR.fullmatch(name)
        return bool(m) and m["layer"] in LAYERS

    diff = diff_checkpoints(open_checkpoint(base), open_checkpoint(prefix), only=ours)
    status = {n: "identical" for n in diff.identical}
    status.update({n: "changed" for n in diff.changed})
    status.update({n: "reshaped" for n in diff.reshaped})
    status.update({n: "removed" for n in diff.removed})
    status.update({n: "added" for n in diff.added})
    layers = {}
    for layer in LAYERS:
        names = [n for n in status if n.startswith(layer + "/")]
        kinds = {status[n] for n in names}
        if not kinds:
            continue
        kind = next((k for k in ("reshaped", "removed", "added", "changed") if k in kinds),
                    "identical")
        deltas = [diff.changed[n] for n in names if n in diff.changed]
        layers[layer] = {"status": kind, "max_abs_diff": max(deltas, default=0.0)
                         if kind in ("identical", "changed") else None}
    pair = {layers.get(n, {}).get("status", "missing") for n in ("hidden1", "hidden2")}
    return {
        "against": os.path.basename(base),
        "layers": layers,
        "hidden1_2": "identical" if pair == {"identical"} else
        "changed" if pair <= {"identical", "changed"} else "/".join(sorted(pair)),
        "frozen_variables": list(frozen),
        "frozen_identical": all(status.get(n) == "identical" for n in frozen) if frozen else None,
    }
