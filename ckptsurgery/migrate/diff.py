"""Comparing two checkpoints variable by variable (how a user proves frozen layers did not
move), and a checkpoint against the graph that should restore it (every mismatch at once).

Reads one tensor pair at a time, so memory stays at the largest variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CheckpointDiff", "diff_checkpoints", "MetaDiff", "diff_against_meta"]


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


def diff_checkpoints(a, b, *, atol: float = 0.0, only=None,
                     weights_only: bool = False) -> CheckpointDiff:
    """Compare checkpoints ``a`` and ``b`` (opened :class:`~ckptsurgery.formats.checkpoint.Checkpoint`s).

    Args:
        atol: largest absolute difference still counted as identical (0: bit-identical).
        only: optional predicate on variable names restricting the comparison.
        weights_only: leave out optimizer slots, optimizer state and step counters (each
            checkpoint's roles, :func:`~ckptsurgery.graphdef.roles.classify`): a fine-tuned
            checkpoint against its stripped copy is then all identical.
    """
    from ..graphdef.roles import classify
    from ..graphdef.slots import TRAINING_STATE

    va, vb = a.variables, b.variables
    names_a = {n for n in va if only is None or only(n)}
    names_b = {n for n in vb if only is None or only(n)}
    if weights_only:
        training = {"step", *TRAINING_STATE}
        for ckpt, names in ((a, names_a), (b, names_b)):
            roles = classify(list(ckpt.variables), ckpt.meta_graph)
            names -= {n for n in names if roles[n].kind in training}
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


@dataclass
class MetaDiff:
    """A checkpoint's data against what a ``.meta``'s saver expects: ``missing`` (the saver
    restores it, the data lacks it), ``extra`` (in the data, restored by nothing),
    ``reshaped`` / ``retyped`` (``{key: (expected, held)}``), ``renamed`` (likely renames:
    ``{expected key: held key}``, same shape and dtype, similar name) and how many ``matched``."""

    checkpoint: str = ""
    meta: str = ""
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    reshaped: dict[str, tuple] = field(default_factory=dict)
    retyped: dict[str, tuple] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.reshaped or self.retyped or self.renamed)

    def as_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "meta": self.meta, "ok": self.ok,
                "matched": self.matched, "missing": self.missing, "extra": self.extra,
                "reshaped": {k: [list(a), list(b)] for k, (a, b) in self.reshaped.items()},
                "retyped": {k: list(v) for k, v in self.retyped.items()},
                "renamed": self.renamed}

    def lines(self) -> list[str]:
        """The report for people: counts, then one line per mismatch with what to do."""
        out = [f"checkpoint {self.checkpoint}", f"against    {self.meta}",
               f"matched {self.matched}, missing {len(self.missing)}, extra {len(self.extra)}, "
               f"reshaped {len(self.reshaped)}, retyped {len(self.retyped)}, likely renamed "
               f"{len(self.renamed)}" + ("  (restores as it is)" if self.ok else "")]
        out += [f"  renamed   {held} -> {expected}  (ckptsurgery rename --map "
                f"'^{re.escape(held)}$={expected}')" for expected, held in self.renamed.items()]
        out += [f"  missing   {k}" for k in self.missing]
        out += [f"  extra     {k}" for k in self.extra]
        out += [f"  reshaped  {k}  expected {list(a)}, holds {list(b)}"
                for k, (a, b) in self.reshaped.items()]
        out += [f"  retyped   {k}  expected {a}, holds {b}" for k, (a, b) in self.retyped.items()]
        return out


def diff_against_meta(checkpoint, meta, meta_path: str = "") -> MetaDiff:
    """Compare ``checkpoint``'s tensors with what ``meta``'s saver restores (keys, shapes,
    dtypes), and pair missing with extra keys of the same shape and dtype whose names are alike
    (the renames of RNN cells in TF 1.2, a scope changed): every reason a restore would fail,
    not only TensorFlow's first."""
    import difflib

    from ..graphdef.saver import saver_tensors

    held = checkpoint.variables
    result = MetaDiff(checkpoint=checkpoint.prefix, meta=meta_path)
    expected = {key: (dtype, shape) for key, dtype, shape in saver_tensors(meta)}
    for key, (dtype, shape) in sorted(expected.items()):
        info = held.get(key)
        if info is None:
            result.missing.append(key)
        elif shape is not None and tuple(shape) != tuple(info.shape):
            result.reshaped[key] = (tuple(shape), tuple(info.shape))
        elif dtype != info.dtype:
            result.retyped[key] = (dtype, info.dtype)
        else:
            result.matched += 1
    result.extra = sorted(k for k in held if k not in expected)
    for key in list(result.missing):
        dtype, shape = expected[key]
        fits = [k for k in result.extra if held[k].dtype == dtype
                and (shape is None or tuple(held[k].shape) == tuple(shape))]
        best = difflib.get_close_matches(key, fits, n=1, cutoff=0.5)
        if best:
            result.renamed[key] = best[0]
            result.missing.remove(key)
            result.extra.remove(best[0])
    return result
