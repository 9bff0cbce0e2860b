"""Leaving TF1 behind: a checkpoint exported as a SavedModel, a TFLite model or an ONNX model.

:func:`export_model` builds the serving graph (:mod:`ckptsurgery.graph.serving`: real inputs
only, switches and keep probabilities baked in, dropout off, batch dimension dynamic), writes
it under a temporary name, converts it (:mod:`ckptsurgery.graph.runtimes`), then checks it
before anything is moved into place: the export is loaded back by its own runtime, run on a
batch (random within each input's dtype and shape, or the arrays of ``check_data``) and
compared with the TF1 session of the checkpoint's graph. A largest difference above ``atol``
fails the export and writes nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from ..errors import DataError, UserError
from ..graphdef.metagraph import shape_text

__all__ = ["TARGETS", "DEFAULT_ATOL", "ModelExport", "export_model", "export_path"]

#: ``--to`` choices.
TARGETS = ("saved-model", "tflite", "onnx")

#: The largest difference from the TF1 session an export may have, per target.
DEFAULT_ATOL = {"saved-model": 1e-5, "tflite": 1e-4, "onnx": 1e-4}

#: With ``--quantize``, the default tolerance is this share of the largest reference value.
QUANTIZED_TOLERANCE = 0.05

_SUFFIX = {"saved-model": "_saved_model", "tflite": ".tflite", "onnx": ".onnx"}
_CHECK_ROWS = 100
_FREE_DIM = 8  # the size given to unknown dimensions other than the batch in a random batch


@dataclass
class ModelExport:
    """What :func:`export_model` wrote and how it was checked."""

    source: str
    target: str
    path: str
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    feeds: list = field(default_factory=list)
    dropout: list = field(default_factory=list)
    rows: int = 0
    check_source: str = "random"
    max_diff: dict = field(default_factory=dict)
    atol: float = 0.0
    quantize: str | None = None
    single_batch: bool = False

    def lines(self) -> list[str]:
        out = [f"source:  {self.source}"]
        for p in self.inputs:
            out.append(f"input    {p.key}: {p.dtype} {shape_text(p.shape)} ({p.tensor})")
        for p in self.outputs:
            out.append(f"output   {p.key}: {p.dtype} {shape_text(p.shape)} ({p.tensor})")
        if self.feeds:
            out.append(f"baked in: {', '.join(str(f) for f in self.feeds)}")
        if self.dropout:
            out.append(f"dropout off: {', '.join(s.scope for s in self.dropout)}")
        if self.single_batch:
            out.append("batch:   1 row per call (TFLite lowers a TF1 RNN's arrays only for a "
                       "known batch size)")
        worst = max(self.max_diff.values(), default=0.0)
        out.append(f"checked: {self.rows} rows ({self.check_source}) against the TF1 session: "
                   f"largest difference {worst:.3g} (atol {self.atol:.3g})")
        what = {"saved-model": "SavedModel", "tflite": "TFLite model",
                "onnx": "ONNX model"}[self.target]
        out.append(f"wrote {self.path} ({what}"
                   + (f", {self.quantize} quantization" if self.quantize else "") + ")")
        return out

    def as_dict(self) -> dict:
        return {
            "source": self.source, "target": self.target, "path": self.path,
            "inputs": [p.as_dict() for p in self.inputs],
            "outputs": [p.as_dict() for p in self.outputs],
            "feeds": [{"name": f.name, "value": f.value, "origin": f.origin} for f in self.feeds],
            "dropout_off": [s.scope for s in self.dropout],
            "check": {"rows": self.rows, "data": self.check_source,
                      "max_diff": self.max_diff, "atol": self.atol},
            "quantize": self.quantize, "single_batch": self.single_batch,
        }


def export_path(prefix: str, target: str) -> str:
    """Where ``graft --export`` puts an export of checkpoint ``prefix``: beside it."""
    return prefix + _SUFFIX[target]


def export_model(checkpoint: str, target: str, out: str, *, inputs: list[str] | None = None,
                 outputs: list[str] | None = None, feeds: dict[str, str] | None = None,
                 quantize: str | None = None, check_data: str | None = None,
                 atol: float | None = None, force: bool = False,
                 allow_unsafe_ops: bool = False) -> ModelExport:
    """Export ``checkpoint`` (prefix, file or folder; it needs its ``.meta``) to ``out``.

    Raises:
        UserError: the checkpoint has no ``.meta``, an input, output or feed is wrong, an op
            cannot be exported or converted (named), the output exists (no ``force``), the
            check data does not fit, or the export differs from the TF1 session by more than
            ``atol`` (nothing is written then).
    """
    from ..formats.checkpoint import open_checkpoint
    from ..formats.output import check_output_path, staged_path
    from ..graph.serving import serving_graph
    from ..safety.audit import check_graph_safe

    if target not in TARGETS:
        raise UserError(f"unknown export target '{target}'; choose one of {', '.join(TARGETS)}")
    if quantize and target != "tflite":
        raise UserError("--quantize applies to --to tflite only")
    source = open_checkpoint(checkpoint)
    if source.meta_graph is None:
        raise UserError(f"checkpoint '{source.prefix}' has no .meta file; export needs the "
                        f"graph ('{source.prefix}.meta')")
    out = check_output_path(out, inputs=source.files.paths, force=force)
    check_graph_safe(source, allow_unsafe=allow_unsafe_ops)
    serving = serving_graph(source.meta_graph, inputs=inputs, outputs=outputs, feeds=feeds)
    batch, where = _check_batch(serving, check_data)
    result = ModelExport(source.prefix, target, out, feeds=serving.feeds,
                         dropout=serving.dropout, rows=len(next(iter(batch.values()))),
                         check_source=where, quantize=quantize)

    def check(path: str) -> None:
        from ..graph.serving import run_reference

        expected = run_reference(serving, source, batch)
        got = _run(target, path, batch, serving, result.single_batch)
        result.atol = atol if atol is not None else (
            QUANTIZED_TOLERANCE * max(float(abs(v).max()) for v in expected.values())
            if quantize else DEFAULT_ATOL[target])
        for key, want in expected.items():
            diff = _max_diff(key, got.get(key), want)
            result.max_diff[key] = diff
            if not diff <= result.atol:
                raise UserError(
                    f"the {target} export's output '{key}' differs from the TF1 session's by "
                    f"{diff:.3g} (more than --atol {result.atol:g}) on {result.rows} rows; "
                    "nothing written")

    with staged_path(out, check=check) as tmp:
        _write(target, serving, source, tmp, quantize, result)
    result.inputs, result.outputs = serving.inputs, serving.outputs
    return result


def _write(target: str, serving, source, path: str, quantize: str | None,
           result: ModelExport) -> None:
    from ..graph.runtimes import to_onnx, to_tflite
    from ..graph.serving import write_saved_model

    if target == "saved-model":
        write_saved_model(serving, source, path)
        return
    scratch = tempfile.mkdtemp(prefix=".ckptsurgery-export-", dir=os.path.dirname(path))
    try:
        saved = os.path.join(scratch, "saved_model")
        if target == "tflite":
            from dataclasses import replace

            from ..graphdef.tensorarrays import has_tensor_arrays, tensor_arrays_as_lists

            lists = has_tensor_arrays(serving.meta)
            graph = replace(serving, meta=tensor_arrays_as_lists(serving.meta)) if lists \
                else serving
            write_saved_model(graph, source, saved)
            serving.inputs, serving.outputs = graph.inputs, graph.outputs
            result.single_batch = lists and _unknown_batch(serving)
            to_tflite(saved, path, quantize=quantize, single_batch=result.single_batch)
        else:
            write_saved_model(serving, source, saved)
            to_onnx(saved, path, [p.tensor for p in serving.inputs],
                    [p.tensor for p in serving.outputs])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(target: str, path: str, batch: dict, serving, single_batch: bool) -> dict:
    from ..graph.runtimes import run_onnx, run_saved_model, run_tflite

    if target == "saved-model":
        return run_saved_model(path, batch)
    if target == "tflite":
        return run_tflite(path, batch, single_batch=single_batch)
    return run_onnx(path, batch, (serving.inputs, serving.outputs))


def _unknown_batch(serving) -> bool:
    return any(p.shape is None or (p.shape and p.shape[0] is None) for p in serving.inputs)


def _max_diff(key: str, got, want) -> float:
    import numpy as np

    if got is None:
        raise UserError(f"the export has no output '{key}'")
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise UserError(f"the export's output '{key}' has shape {list(got.shape)}, the TF1 "
                        f"session's {list(want.shape)}")
    if got.dtype == bool or want.dtype == bool:
        return float((got != want).sum())
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0))


def _check_batch(serving, check_data: str | None) -> tuple[dict, str]:
    """``({input key: array}, where it came from)``: the arrays of ``check_data`` (named after
    the inputs' keys or placeholders; one array for one input), or random values."""
    import numpy as np

    if check_data:
        try:
            with np.load(check_data) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise DataError(f"--check-data '{check_data}' is not a readable .npz: {e}") from e
        batch = {}
        for p in serving.inputs:
            name = p.tensor.split(":")[0]
            value = arrays.get(p.key, arrays.get(name))
            if value is None and len(serving.inputs) == 1 and len(arrays) == 1:
                value = next(iter(arrays.values()))
            if value is None:
                raise DataError(f"--check-data '{check_data}' has no array '{p.key}' for input "
                                f"{p.tensor}; it has {', '.join(sorted(arrays)) or 'none'}")
            batch[p.key] = value.astype(p.dtype)
        return batch, os.path.basename(check_data)
    rng = np.random.default_rng(0)
    batch = {}
    for p in serving.inputs:
        if p.shape is None:
            raise UserError(f"input {p.tensor} has an unknown shape; give a batch of it with "
                            "--check-data FILE.npz")
        shape = [_CHECK_ROWS if i == 0 and d is None else (d if d is not None else _FREE_DIM)
                 for i, d in enumerate(p.shape)]
        if p.dtype == "bool":
            batch[p.key] = rng.random(shape) < 0.5
        elif p.dtype.startswith(("int", "uint")):
            batch[p.key] = rng.integers(0, 2, shape).astype(p.dtype)
        else:
            batch[p.key] = rng.random(shape).astype(p.dtype)
    return batch, "random"
