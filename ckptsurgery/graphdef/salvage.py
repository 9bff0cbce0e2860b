"""Salvaging a ``.meta`` that today's TensorFlow will not import.

Graphs written by TF 1.x fail to import for three reasons this fixes at the protobuf level:
ops pinned to devices that are not there (``/gpu:0``, ``/job:worker``), collection entries that
name ops the graph no longer has (TFLearn's), and op types this TensorFlow no longer registers
(``tf.contrib``, TPU replication, old summary ops). The first two are always safe to fix; the
last is fixed by removing the unregistered ops with everything that depends on them, which is
refused when a variable the checkpoint restores would go with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError
from .collections import drop_stale_collection_entries, variable_defs
from .metagraph import op_name, set_repeated, unregistered_ops
from .saver import VARIABLE_OPS, saver_nodes
from .walk import consumers, reachable

__all__ = ["Salvage", "salvage_meta_graph"]


@dataclass
class Salvage:
    """What :func:`salvage_meta_graph` did: devices cleared (node count), collections emptied,
    op types this TensorFlow does not register (with how many nodes use each), nodes removed
    with them, and op types still unregistered in the result."""

    devices_cleared: int = 0
    removed_collections: list[str] = field(default_factory=list)
    unregistered: dict[str, int] = field(default_factory=dict)
    removed_ops: list[str] = field(default_factory=list)
    still_unregistered: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"devices cleared on {self.devices_cleared} node(s)",
               "stale collections dropped: " + (", ".join(self.removed_collections) or "none")]
        if self.unregistered:
            out.append("unregistered op types: " + ", ".join(
                f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in self.unregistered.items()))
        if self.removed_ops:
            shown = ", ".join(self.removed_ops[:8])
            more = f", ... ({len(self.removed_ops)} in all)" if len(self.removed_ops) > 8 else ""
            out.append(f"removed with them: {shown}{more}")
        if self.still_unregistered:
            out.append("the result still uses " + ", ".join(self.still_unregistered)
                       + ": pass --drop-unregistered to remove them and what depends on them")
        return out

    def as_dict(self) -> dict:
        return {"devices_cleared": self.devices_cleared,
                "removed_collections": self.removed_collections,
                "unregistered": self.unregistered, "removed_ops": self.removed_ops,
                "still_unregistered": self.still_unregistered}


def salvage_meta_graph(meta, *, drop_unregistered: bool = False):
    """A copy of ``meta`` that imports on this TensorFlow, as far as it can be made to.

    Returns:
        ``(new_meta, Salvage)``.

    Raises:
        UserError: ``drop_unregistered`` would remove a variable, its initializer or read, or
            the saver (the message names what would go).
    """
    new = type(meta)()
    new.CopyFrom(meta)
    info = Salvage()
    for node in list(new.graph_def.node) + [n for f in new.graph_def.library.function
                                            for n in f.node_def]:
        if node.device:
            node.device = ""
            info.devices_cleared += 1
    missing = set(unregistered_ops(new))
    for node in new.graph_def.node:
        if node.op in missing:
            info.unregistered[node.op] = info.unregistered.get(node.op, 0) + 1
    if drop_unregistered and missing:
        removed = _dependents(new, {n.name for n in new.graph_def.node if n.op in missing})
        protected = {n.name for n in new.graph_def.node if n.op in VARIABLE_OPS} | saver_nodes(new)
        for vdef in variable_defs(new).values():  # a variable needs its initializer and read
            protected |= {op_name(r) for r in (vdef.initializer_name, vdef.snapshot_name) if r}
        hit = sorted(removed & protected)
        if hit:
            raise UserError(
                f"'{hit[0]}' depends on an op this TensorFlow does not register; removing those "
                "ops would remove it too, so the checkpoint could not be restored: salvage it "
                "with the TensorFlow version that wrote it")
        kept = [n for n in new.graph_def.node if n.name not in removed]
        set_repeated(new.graph_def.node, kept)
        for node in new.graph_def.node:  # control edges from removed nodes are cut
            inputs = [i for i in node.input if op_name(i) not in removed]
            if len(inputs) != len(node.input):
                set_repeated(node.input, inputs)
        info.removed_ops = sorted(removed)
    info.removed_collections = [k for k in drop_stale_collection_entries(new) if k != "savers"]
    info.still_unregistered = unregistered_ops(new)
    return new, info


def _dependents(meta, starts: set[str]) -> set[str]:
    """``starts`` and every node that reads one of them through a data edge, transitively."""
    readers = consumers(meta)
    return reachable(starts, lambda name: readers.get(name, ()))
