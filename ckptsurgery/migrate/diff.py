"""Comparing two checkpoints variable by variable: how a user proves frozen layers did not move.

Reads one tensor pair at a time, so memory stays at the largest variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CheckpointDiff", "diff_checkpoints"]


@dataclass
class CheckpointDiff:
    """Variables added (only in B), removed (only in A), reshaped (the shape differs), retyped
    (same shape, another dtype), changed (``{name: max abs difference}``) and identical (within
    ``atol``; bit-identical when ``atol`` is 0). ``a`` and ``b`` are the two prefixes;
    ``specs`` holds ``(shape, dtype)`` in A and in B of each reshaped or retyped variable."""

    a: str = ""
    b: str = ""
    atol: float = 0.0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)
    changed: dict[str, float] = field(default_factory=dict)
    identical: list[str] = field(default_factory=list)
    specs: dict[str, tuple] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "a": self.a, "b": self.b, "atol": self.atol,
            "added": self.added,
            "removed": self.removed,
            "reshaped": self.reshaped,
            "retyped": self.retyped,
            "changed": [{"name": n, "max_abs_diff": d} for n, d in self.changed.items()],
            "identical": self.identical,
        }

    def lines(self) -> list[str]:
        """The report for people: both prefixes, the counts, then one line per variable."""
        def spec(name: str) -> str:
            (sa, da), (sb, db) = self.specs[name]
            return f"{list(sa)} {da} -> {list(sb)} {db}"

        out = [f"A {self.a}", f"B {self.b}",
               f"identical {len(self.identical)}, changed {len(self.changed)}, reshaped "
               f"{len(self.reshaped)}, retyped {len(self.retyped)}, added {len(self.added)}, "
               f"removed {len(self.removed)}"]
        out += [f"  changed   {n}  max |A-B| = {d:.6g}" for n, d in self.changed.items()]
        out += [f"  reshaped  {n}  {spec(n)}" for n in self.reshaped]
        out += [f"  retyped   {n}  {spec(n)}" for n in self.retyped]
        out += [f"  added     {n}" for n in self.added]
        out += [f"  removed   {n}" for n in self.removed]
        out += [f"  identical {n}" for n in self.identical]
        return out


def diff_checkpoints(a, b, *, atol: float = 0.0, only=None) -> CheckpointDiff:
    """Compare checkpoints ``a`` and ``b`` (opened :class:`~ckptsurgery.formats.checkpoint.Checkpoint`s).

    Args:
        atol: largest absolute difference still counted as identical (0: bit-identical).
        only: optional predicate on variable names restricting the comparison.
    """
    va, vb = a.variables, b.variables
    names_a = {n for n in va if only is None or only(n)}
    names_b = {n for n in vb if only is None or only(n)}
    result = CheckpointDiff(a=a.prefix, b=b.prefix, atol=atol, added=sorted(names_b - names_a),
                            removed=sorted(names_a - names_b))
    for name in sorted(names_a & names_b):
        if va[name].shape != vb[name].shape or va[name].dtype != vb[name].dtype:
            kind = result.reshaped if va[name].shape != vb[name].shape else result.retyped
            kind.append(name)
            result.specs[name] = ((va[name].shape, va[name].dtype), (vb[name].shape, vb[name].dtype))
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
