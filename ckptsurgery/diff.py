"""Comparing two checkpoints variable by variable: how a user proves frozen layers did not move.

Reads one tensor pair at a time, so memory stays at the largest variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CheckpointDiff", "diff_checkpoints"]


@dataclass
class CheckpointDiff:
    """Variables added (only in B), removed (only in A), reshaped (shape or dtype differ),
    changed (``{name: max abs difference}``) and identical (within ``atol``; bit-identical
    when ``atol`` is 0)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    changed: dict[str, float] = field(default_factory=dict)
    identical: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "removed": self.removed,
            "reshaped": self.reshaped,
            "changed": [{"name": n, "max_abs_diff": d} for n, d in self.changed.items()],
            "identical": self.identical,
        }


def diff_checkpoints(a, b, *, atol: float = 0.0, only=None) -> CheckpointDiff:
    """Compare checkpoints ``a`` and ``b`` (opened :class:`~ckptsurgery.checkpoint.Checkpoint`s).

    Args:
        atol: largest absolute difference still counted as identical (0: bit-identical).
        only: optional predicate on variable names restricting the comparison.
    """
    va, vb = a.variables, b.variables
    names_a = {n for n in va if only is None or only(n)}
    names_b = {n for n in vb if only is None or only(n)}
    result = CheckpointDiff(added=sorted(names_b - names_a), removed=sorted(names_a - names_b))
    for name in sorted(names_a & names_b):
        if va[name].shape != vb[name].shape or va[name].dtype != vb[name].dtype:
            result.reshaped.append(name)
            continue
        x, y = a.read(name), b.read(name)
        if x.dtype.kind in "fc":
            # bitwise: -0.0 vs 0.0 and NaN payloads count; atleast_1d: a 0-d array has no view
            same = (np.array_equal(np.atleast_1d(x).view(np.uint8),
                                   np.atleast_1d(y).view(np.uint8)) if atol == 0 else None)
            delta = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
            if same is None:
                same = delta <= atol
        elif x.dtype.kind in "iub":
            delta = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
            same = delta <= atol
        else:
            same, delta = bool(np.array_equal(x, y)), float("nan")
        if same:
            result.identical.append(name)
        else:
            result.changed[name] = delta
    return result
