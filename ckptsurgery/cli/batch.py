"""Running a command on many checkpoints: in parallel processes or on a Dask cluster, resumable.

The commands that take several checkpoints (the rewrite verbs, ``inspect``, ``verify``,
``audit``) go through :func:`run_batch` when given more than one, a folder of them, a glob, a
state file, or ``--out-dir``. Each checkpoint is one task (:func:`run_task`: the command's own
``run`` on that checkpoint, its JSON result and its error line captured), run by a process pool
(``--jobs``) or by a Dask scheduler (``--dask ADDRESS``, through ``dask.distributed.Client``:
no scheduler of our own). A failure is reported and the others go on; the exit code is 0 only
when all succeeded. With ``--out-dir`` the outputs mirror the inputs' relative layout and a
manifest there (:mod:`ckptsurgery.safety.manifest`) makes a rerun skip what was finished.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import threading
import warnings

__all__ = ["PRELOAD", "add_batch_options", "is_batch", "check_single", "run_batch", "run_task"]

#: Options of the batch itself, not of the command run on each checkpoint.
_BATCH_ONLY = ("checkpoint", "out", "out_dir", "jobs", "dask", "json", "quiet", "force",
               "debug", "verbose", "_run", "_batch", "_check", "_output_name", "_preload",
               "command", "dry_run")


#: What every batch's tasks import (see :func:`_preload`).
PRELOAD = ("numpy", "ckptsurgery.formats.reader")


def add_batch_options(p: argparse.ArgumentParser, *, writes: bool,
                      preload: tuple[str, ...] = ()) -> None:
    """Add ``--jobs`` and ``--dask`` (and ``--out-dir`` for a command that ``writes``);
    ``preload``: the modules its tasks import, besides :data:`PRELOAD`. A command whose
    ``run`` first checks its options sets ``_check`` to that check, which a batch runs once
    before any task."""
    p.set_defaults(_batch=True, _preload=PRELOAD + preload)
    g = p.add_argument_group("many checkpoints (several CKPTs, folders, globs, state files)")
    if writes:
        g.add_argument("--out-dir", metavar="DIR",
                       help="write each checkpoint's output under DIR, mirroring the inputs' "
                            "relative layout; a manifest there makes a rerun skip what is done")
    g.add_argument("--jobs", type=_positive, default=os.cpu_count() or 1, metavar="N",
                   help="checkpoints processed at once, in parallel processes (default: the "
                        "number of cores)")
    g.add_argument("--dask", metavar="ADDRESS",
                   help="send the per-checkpoint tasks to this Dask scheduler "
                        "(tcp://host:8786; needs ckptsurgery[dask], and ckptsurgery on the workers)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}': give a number of processes, at least 1")
    return value


def is_batch(args) -> bool:
    """Whether the command line asks for a batch."""
    from ..formats.discovery import is_many

    return bool(getattr(args, "out_dir", None) or args.dask or is_many(args.checkpoint))


def check_single(args) -> None:
    """A command that writes, run on one checkpoint, needs ``--out``."""
    from ..errors import UserError

    if hasattr(args, "out_dir") and not args.out and not args.dry_run:
        raise UserError("give --out for the output (or --out-dir DIR to process many "
                        "checkpoints)")


#: A task captures this process's stdout: a Dask worker running several threads runs the
#: tasks it gets one at a time (give workers one thread each and several processes).
_ONE_AT_A_TIME = threading.Lock()


def run_task(task: dict) -> dict:
    """One checkpoint of a batch, in whatever process runs it: the command's ``run`` on
    ``task["input"]`` (output ``task["output"]``), its stdout and error captured.

    Returns:
        ``{"input", "output", "code", "result" (the command's JSON), "error" (its line)}``.
    """
    from ..errors import exit_status

    args = argparse.Namespace(**task["args"])
    args.checkpoint, args.json, args.quiet = task["input"], True, True
    if task["output"] is not None:
        args.out, args.force = task["output"], task["force"]
    out, err = io.StringIO(), io.StringIO()
    with _ONE_AT_A_TIME, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code, line = int(args._run(args) or 0), ""
        except Exception as e:
            code, line = exit_status(e)
    try:
        result = json.loads(out.getvalue()) if out.getvalue().strip() else None
    except ValueError:
        result = None
    return {"input": task["input"], "relative": task["relative"], "output": task["output"],
            "code": code, "result": result, "error": line}


def run_batch(args) -> int:
    """Run ``args``' command on every checkpoint its CKPTs name; print one line per checkpoint
    and a summary (or one JSON object); return 0 when all succeeded, else the worst code."""
    from ..errors import UserError
    from ..formats import storage
    from ..formats.discovery import find_checkpoints

    if getattr(args, "_check", None) is not None:  # the command's own argument errors, once
        args._check(args)
    writes = hasattr(args, "out_dir")
    if writes and args.out:
        raise UserError("--out names one output; with several checkpoints give --out-dir DIR")
    if writes and not args.out_dir and not args.dry_run:
        raise UserError("several checkpoints: give --out-dir DIR for their outputs")
    found = find_checkpoints(args.checkpoint)
    options = {k: v for k, v in vars(args).items() if k not in ("checkpoint", "json", "quiet")}
    command = {"command": args.command,
               **{k: v for k, v in vars(args).items() if k not in _BATCH_ONLY}}
    tasks, skipped, manifest = [], [], None
    if writes and args.out_dir and not args.dry_run:
        from ..safety.manifest import Manifest, files_identity

        out_dir = storage.normpath(args.out_dir)
        name = getattr(args, "_output_name", None) or (lambda args, relative: relative)
        outputs = {f.prefix: storage.join(out_dir, name(args, f.relative)) for f in found}
        _check_distinct(outputs)
        manifest = Manifest(out_dir)
        started = []
        for f in found:
            identity = files_identity(f.prefix)
            if manifest.finished(f.prefix, identity, command, outputs[f.prefix]):
                skipped.append(f)
                continue
            force = args.force or manifest.owns(outputs[f.prefix])
            tasks.append(_task(options, f, outputs[f.prefix], force))
            started.append((f.prefix, identity, command, outputs[f.prefix]))
        if started:
            manifest.start(started)
    else:
        tasks = [_task(options, f, None, False) for f in found]
    results = []
    for f in skipped:
        results.append({"input": f.prefix, "relative": f.relative, "skipped": True, "code": 0})
    with _bar(len(tasks), getattr(args, "quiet", False)) as bar:
        for result in _run_all(tasks, args):
            if manifest is not None and result["code"] == 0:
                manifest.finish(result["input"])
            results.append(result)
            if not args.json:
                bar.write(_line(result), file=sys.stdout)
            bar.update(1)
    order = {f.prefix: i for i, f in enumerate(found)}
    results.sort(key=lambda r: order[r["input"]])  # lines came as they finished
    return _report(results, len(skipped), args.json)


def _task(options: dict, found, output: str | None, force: bool) -> dict:
    return {"args": options, "input": found.prefix, "relative": found.relative,
            "output": output, "force": force}


def _check_distinct(outputs: dict[str, str]) -> None:
    from ..errors import UserError

    seen: dict[str, str] = {}
    for source, out in outputs.items():
        if out in seen:
            raise UserError(f"'{seen[out]}' and '{source}' would both be written to '{out}'; "
                            "give them as separate batches or rename one")
        seen[out] = source


def _run_all(tasks: list[dict], args):
    """Each task's result, as they finish: in this process (one job), a process pool, or
    on a Dask cluster."""
    if not tasks:
        return
    if args.dask:
        yield from _run_dask(tasks, args.dask)
        return
    if args.jobs == 1 or len(tasks) == 1:
        yield from (run_task(t) for t in tasks)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    _preload(args)
    with ProcessPoolExecutor(min(args.jobs, len(tasks))) as pool:
        futures = {pool.submit(run_task, t): t for t in tasks}
        for future in as_completed(futures):
            yield _outcome(future, futures[future])


def _preload(args) -> None:
    """Import what the command's tasks import (its ``_preload`` modules) before the pool's
    processes are forked, so that they start with it: once here, instead of once per process
    (numpy, protobuf and the library's modules: about 0.15 s of processor time each)."""
    import importlib

    for name in getattr(args, "_preload", ()):
        importlib.import_module(name)


def _run_dask(tasks: list[dict], address: str):
    from ..errors import UserError

    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise UserError("--dask needs dask.distributed: pip install 'ckptsurgery[dask]'") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise UserError(f"cannot reach the Dask scheduler at '{address}': {e}; start one "
                        "('dask scheduler') or check the address") from None
    with client:
        futures = {client.submit(run_task, t, pure=False): t for t in tasks}
        for future in as_completed(futures):
            yield _outcome(future, futures[future])


def _outcome(future, task: dict) -> dict:
    """A finished future's result; a task whose process died is a failed result."""
    try:
        return future.result()
    except Exception as e:
        from ..errors import first_line

        return {"input": task["input"], "relative": task["relative"], "output": task["output"],
                "code": 1, "result": None,
                "error": f"internal error: the process running it died ({type(e).__name__}: "
                         f"{first_line(e)})"}


def _line(result: dict) -> str:
    where = result["input"]
    if result["code"] != 0:
        error = result["error"] or f"exit {result['code']}"
        return f"failed  {where}: {error}"
    note = f" -> {result['output']}" if result.get("output") else ""
    return f"ok      {where}{note}{_summary(result.get('result'))}"


def _summary(result) -> str:
    if not isinstance(result, dict):
        return ""
    if "bytes_written" in result:
        return f" ({result['bytes_written']:,} bytes of tensors)"
    if isinstance(result.get("variables"), list):
        return f" ({result.get('format', '')}, {len(result['variables'])} variables)"
    if "problems" in result:
        return f" ({len(result['problems'])} problem(s))"
    if "names" in result or "tensors" in result:  # convert: a file, a prefix, an hf folder
        tensors = len(result["names"]) if "names" in result else result["tensors"]
        return f" ({tensors} tensor(s), {result['bytes']:,} bytes)"
    return ""


def _report(results: list[dict], skipped: int, as_json: bool) -> int:
    failed = [r for r in results if r["code"] != 0]
    done = len(results) - len(failed) - skipped
    if as_json:
        print(json.dumps({"done": done, "skipped": skipped, "failed": len(failed),
                          "results": results}, indent=2))
    else:
        print(f"{done} done, {skipped} skipped (finished before), {len(failed)} failed")
    return max((r["code"] for r in failed), default=0)


@contextlib.contextmanager
def _bar(total: int, quiet: bool):
    """One progress bar of checkpoints for the whole batch (stderr, when it is a terminal);
    its ``write(line, file=sys.stdout)`` prints a result line above it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="checkpoints", unit="ckpt", file=sys.stderr,
               disable=quiet or not sys.stderr.isatty(), leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
