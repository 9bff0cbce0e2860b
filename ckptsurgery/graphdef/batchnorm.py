"""Batch-norm layers of a serialised graph: where they are, and which ops update their statistics.

A batch-norm layer is a scope holding ``moving_mean`` and ``moving_variance`` variables, whether
TensorFlow built it as the fused op (``FusedBatchNorm``, ``V2``, ``V3``) or as the unfused
pattern (``moments``, ``batchnorm/Rsqrt``...), by ``tf.layers``, ``tf.contrib.layers`` or
Keras. Its moving statistics change only when its update ops (``AssignMovingAvg``, listed in
the ``update_ops`` collection) run; fine-tuning with them forgotten, or run by accident, is the
classic TF1 transfer mistake, so a graft says for every layer which it does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .collections import variable_defs
from .metagraph import op_name

__all__ = ["BatchNormLayer", "batch_norm_layers"]

_STATISTICS = ("moving_mean", "moving_variance")


@dataclass(frozen=True)
class BatchNormLayer:
    """One batch-norm layer: its ``scope``, whether it is the ``fused`` op, its variables
    (``gamma``/``beta`` when it has them, and the two moving statistics) and the ``update_ops``
    that move the statistics (entries of the ``update_ops`` collection in its scope).
    ``batch_statistics`` says how the graph normalises: ``"switch"`` (a ``cond`` or ``where``
    picks batch or moving statistics), ``"always"`` (built with ``training=True``: batch
    statistics whatever is fed), ``"never"`` (built for inference) or ``"unknown"`` (its ops
    are under another name scope than its variables)."""

    scope: str
    fused: bool
    variables: tuple[str, ...]
    statistics: tuple[str, str]
    update_ops: tuple[str, ...]
    batch_statistics: str = "switch"


def batch_norm_layers(meta) -> list[BatchNormLayer]:
    """Every batch-norm layer of ``meta``, in graph order of its moving mean."""
    variables = list(variable_defs(meta)) or [
        n.name for n in meta.graph_def.node if n.op in ("VariableV2", "Variable", "VarHandleOp")]
    known = set(variables)
    updates = []
    if "update_ops" in meta.collection_def and \
            meta.collection_def["update_ops"].HasField("node_list"):
        updates = [op_name(v) for v in meta.collection_def["update_ops"].node_list.value]
    layers = []
    for name in variables:
        if not name.endswith("/moving_mean"):
            continue
        scope = name[: -len("/moving_mean")]
        if f"{scope}/moving_variance" not in known:
            continue
        prefix = scope + "/"
        own_nodes = [n for n in meta.graph_def.node if n.name.startswith(prefix)]
        fused_modes = {n.attr["is_training"].b if "is_training" in n.attr else True
                       for n in own_nodes if n.op.startswith("FusedBatchNorm")}
        fused = bool(fused_modes)
        switch = any(n.op in ("Switch", "Merge", "Select", "SelectV2") for n in own_nodes)
        if fused:
            batch = "switch" if len(fused_modes) > 1 else ("always" if True in fused_modes
                                                           else "never")
        else:
            moments = any("/moments/" in n.name for n in own_nodes)
            normalises = any("/batchnorm/" in n.name for n in own_nodes)
            batch = ("switch" if moments and switch else "always" if moments
                     else "never" if normalises else "unknown")
        own = tuple(v for v in variables if v.startswith(prefix) and v.count("/") == scope.count("/") + 1)
        layers.append(BatchNormLayer(
            scope=scope, fused=fused, variables=own,
            statistics=(f"{scope}/moving_mean", f"{scope}/moving_variance"),
            update_ops=tuple(u for u in updates if u.startswith(prefix)),
            batch_statistics=batch))
    return layers
