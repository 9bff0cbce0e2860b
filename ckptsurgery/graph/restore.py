"""Restoring a selection of graph variables from a checkpoint, with a report.

The report follows PyTorch's ``load_state_dict``: matched, missing (in the selection, not in the
checkpoint), unexpected (in the checkpoint, not selected) and mismatched (shape or dtype, both
named). Strict mode raises with the whole report; lenient mode restores what matches.
Values are loaded one variable at a time, so memory stays at the largest tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RestoreError

__all__ = ["RestoreReport", "restore", "assign", "checkpoint_key"]


@dataclass
class RestoreReport:
    """What a restore did. ``mismatched`` holds ``(name, checkpoint (shape, dtype), graph (shape,
    dtype))`` triples."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def __str__(self) -> str:
        lines = [f"restored {len(self.matched)} variable(s)"]
        if self.missing:
            lines.append(f"missing from checkpoint ({len(self.missing)}): {', '.join(self.missing)}")
        for name, (cs, cd), (gs, gd) in self.mismatched:
            lines.append(f"mismatch: {name}: checkpoint {list(cs)} {cd}, graph {list(gs)} {gd}")
        if self.unexpected:
            lines.append(f"in checkpoint, not restored ({len(self.unexpected)}): "
                         + ", ".join(self.unexpected[:8])
                         + (" ..." if len(self.unexpected) > 8 else ""))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [
                {"name": n, "checkpoint": {"shape": list(cs), "dtype": cd},
                 "graph": {"shape": list(gs), "dtype": gd}}
                for n, (cs, cd), (gs, gd) in self.mismatched
            ],
        }


def restore(session, variables, checkpoint, *, strict: bool = True,
            sources: dict[str, str] | None = None) -> RestoreReport:
    """Load ``variables`` (graph variables) from ``checkpoint`` (a :class:`Checkpoint`) by name.

    Args:
        session: a session of the variables' graph; their initialisers need not have run.
        variables: the selection to restore; the checkpoint key of each is its op name.
        checkpoint: the source.
        strict: raise :class:`RestoreError` unless every selected variable was restored.
        sources: ``{checkpoint key: key to read instead}`` (``--use-ema``: a weight's moving
            average); keys read that way count as used.

    Returns:
        The :class:`RestoreReport` (in lenient mode, what matched was loaded, the rest skipped).
    """
    saved = checkpoint.variables
    report = RestoreReport()
    plan = []
    used = set()
    for var in variables:
        name = var.op.name
        key, full_shape, part = _checkpoint_slot(var)
        used.add(key)
        if sources and key in sources:
            key = sources[key]
            used.add(key)
        info = saved.get(key)
        if info is None:
            report.missing.append(name)
            continue
        graph_dtype = var.dtype.base_dtype.name
        if info.shape != full_shape or info.dtype != graph_dtype:
            report.mismatched.append((name, (info.shape, info.dtype), (full_shape, graph_dtype)))
            continue
        report.matched.append(name)
        plan.append((var, key, part))
    report.unexpected = sorted(set(saved) - used)
    if strict and not report.ok:
        raise RestoreError(
            f"cannot restore from '{checkpoint.prefix}': "
            + "; ".join(str(report).splitlines()[1:])
            + " (use a narrower --restore-scope, or --lenient to restore what matches)",
            report,
        )
    for var, key, part in plan:
        value = checkpoint.read(key)
        assign(session, var, value if part is None else value[part])
    return report


def checkpoint_key(var) -> str:
    """The key ``var`` is saved under (a partitioned variable's whole name for each part)."""
    return _checkpoint_slot(var)[0]


def _checkpoint_slot(var):
    """Where ``var`` lives in a checkpoint: ``(key, full shape, slice or None)``.

    A partitioned variable (``kernel/part_0``, as Estimators make them) is saved as a slice of
    the whole variable under the whole variable's name.
    """
    shape = tuple(var.shape.as_list())
    proto = var.to_proto()
    if proto.HasField("save_slice_info_def"):
        info = proto.save_slice_info_def
        part = tuple(slice(o, o + n) for o, n in zip(info.var_offset, info.var_shape, strict=True))
        return info.full_name, tuple(info.full_shape), part
    return var.op.name, shape, None


def assign(session, variable, value) -> None:
    """Set ``variable`` to ``value`` by feeding its initialiser: no new ops, ref or resource."""
    session.run(variable.initializer, {variable.initializer.inputs[1]: value})
