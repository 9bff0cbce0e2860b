"""A SavedModel converted to TFLite and ONNX, and each export run by its own runtime.

The conversions start from the SavedModel :mod:`.serving` writes: TFLite through
``tf.lite.TFLiteConverter.from_saved_model`` (float32, or ``dynamic`` / ``float16``
quantization), ONNX through tf2onnx (an optional dependency) from the same SavedModel. The
runners load what was written the way its users will: ``tf.saved_model.load`` in eager
TensorFlow 2 (no ``tf.compat.v1``), ``tf.lite.Interpreter``'s signature runner, an
``onnxruntime`` session; each takes and gives ``{signature key: array}``.
"""

from __future__ import annotations

import re

from ..errors import UserError, first_line
from .serving import SIGNATURE

__all__ = ["QUANTIZE", "to_tflite", "to_onnx", "run_saved_model", "run_tflite", "run_onnx",
           "ONNX_INSTALL"]

#: ``--quantize`` choices of a TFLite export.
QUANTIZE = ("dynamic", "float16")

#: What to run when tf2onnx or onnxruntime is missing.
ONNX_INSTALL = "pip install tf2onnx onnxruntime (or pip install 'ckptsurgery[onnx]')"

_REFUSED_RE = re.compile(r"""fused\["(\w+):", "([^"]+)"\][^\n]*?'tf\.(\w+)' op is neither""")


def to_tflite(saved_model: str, path: str, *, quantize: str | None = None,
              single_batch: bool = False) -> None:
    """Convert ``saved_model`` to a ``.tflite`` file at ``path`` with TFLite's built-in ops.

    ``single_batch``: the graph holds TensorLists of unknown batch size (a TF1 RNN's arrays),
    which TFLite lowers only for a batch of one; the model then takes one row at a time.

    Raises:
        UserError: TFLite has no built-in kernel for some ops (each named with its node), or
            the converter refuses the model for another reason (its first line).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model,
                                                         signature_keys=[SIGNATURE])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
    if single_batch:
        converter._experimental_default_to_single_batch_in_tensor_list_ops = True
    try:
        model = converter.convert()
    except Exception as e:  # ConverterError, and the converter's own ValueErrors
        text = str(e)
        refused = {}
        for op, node, _ in _REFUSED_RE.findall(text):
            refused.setdefault(op, node)
        if refused:
            listed = ", ".join(f"{op} (op '{node}')" for op, node in sorted(refused.items()))
            raise UserError(f"TFLite has no built-in kernel for {listed}; export --to "
                            "saved-model or --to onnx instead, or change the graph") from e
        raise UserError(f"the TFLite converter refuses the model: {first_line(e)}") from e
    with open(path, "wb") as f:
        f.write(model)


def to_onnx(saved_model: str, path: str, inputs: list[str], outputs: list[str]) -> None:
    """Convert ``saved_model`` to an ONNX file at ``path`` with tf2onnx; ``inputs`` and
    ``outputs`` are the graph's tensor names.

    Raises:
        UserError: tf2onnx is not installed (the message says how to install it), or it
            cannot convert the graph (its first line).
    """
    try:
        from tf2onnx import convert, tf_loader
    except ImportError:
        raise UserError(f"--to onnx needs tf2onnx, which is not installed: {ONNX_INSTALL}") \
            from None
    import logging

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # its notes on shape inference
    try:
        graph_def, ins, outs = tf_loader.from_saved_model(
            saved_model, inputs, outputs, tag="serve", signatures=[SIGNATURE])
        convert.from_graph_def(graph_def, input_names=ins, output_names=outs, output_path=path)
    except Exception as e:  # tf2onnx raises plain exceptions of many kinds
        raise UserError(f"tf2onnx cannot convert the model: {first_line(e)}") from e


def run_saved_model(path: str, batch: dict) -> dict:
    """Run ``serving_default`` of the SavedModel at ``path`` with ``tf.saved_model.load``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    result = loaded.signatures[SIGNATURE](**{k: tf.constant(v) for k, v in batch.items()})
    return {k: v.numpy() for k, v in result.items()}


def run_tflite(path: str, batch: dict, *, single_batch: bool = False) -> dict:
    """Run the ``.tflite`` at ``path`` in ``tf.lite.Interpreter`` (its signature runner),
    the whole batch at once, or row by row for a ``single_batch`` model."""
    import warnings

    import numpy as np
    import tensorflow as tf

    with warnings.catch_warnings():  # the interpreter's notice that LiteRT replaces it
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    if not single_batch:
        return runner(**batch)
    rows = len(next(iter(batch.values())))
    parts = [runner(**{k: v[i:i + 1] for k, v in batch.items()}) for i in range(rows)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_onnx(path: str, batch: dict, ports) -> dict:
    """Run the ONNX model at ``path`` in onnxruntime; ``ports`` are the export's inputs and
    outputs (:class:`~ckptsurgery.graph.serving.Port`), whose tensor names tf2onnx keeps."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"checking an ONNX export needs onnxruntime: {ONNX_INSTALL}") from None
    inputs, outputs = ports
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    values = session.run([p.tensor for p in outputs], {p.tensor: batch[p.key] for p in inputs})
    return {p.key: v for p, v in zip(outputs, values, strict=True)}
