"""Transfer strategies: which reused layers train, by the data-size x similarity chart.

* ``feature-extract``: everything below ``--at`` frozen by a cut (small data, similar task);
* ``fine-tune-top[:N]``: the top N reused layers (default 1) train with the new ones, the rest
  frozen (large and similar; small and dissimilar with more layers and augmentation);
* ``fine-tune-all``: everything trains, reused layers at a lower learning rate than new ones
  (large and dissimilar).

A "layer" is a group of trainable variables under one name scope (``hidden3/kernel``,
``hidden3/bias``), ordered by how far below ``--at`` the graph reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import UserError
from ..graphdef.collections import collection_items
from ..graphdef.walk import by_distance

__all__ = ["STRATEGIES", "Strategy", "parse_strategy", "reused_layers", "apply_strategy"]

#: The strategies ``--strategy`` takes (``fine-tune-top`` with an optional ``:N``).
STRATEGIES = ("feature-extract", "fine-tune-top", "fine-tune-all")


@dataclass(frozen=True)
class Strategy:
    """A parsed ``--strategy``: its ``name`` and, for ``fine-tune-top``, how many layers."""

    name: str
    top: int = 1

    def __str__(self) -> str:
        return f"{self.name}:{self.top}" if self.name == "fine-tune-top" else self.name


def parse_strategy(text: str) -> Strategy:
    """``feature-extract``, ``fine-tune-top``, ``fine-tune-top:N`` or ``fine-tune-all``.

    Raises:
        UserError: anything else, or N below 1.
    """
    name, _, count = text.partition(":")
    if name not in STRATEGIES or (count and name != "fine-tune-top"):
        raise UserError(f"--strategy '{text}': use feature-extract, fine-tune-top[:N] or "
                        "fine-tune-all")
    if count and (not count.isdigit() or int(count) < 1):
        raise UserError(f"--strategy '{text}': N is a number of layers, 1 or more")
    return Strategy(name, int(count) if count else 1)


def reused_layers(meta, at: str) -> list[str]:
    """The name scopes of the trainable variables ``at`` depends on, nearest to it first."""
    trainable = set(collection_items(meta, "trainable_variables")) \
        if "trainable_variables" in meta.collection_def else set()
    layers: list[str] = []
    for name in by_distance(meta, at):
        for suffix in ("/read", "/Read/ReadVariableOp", "/ReadVariableOp"):
            if name.endswith(suffix) and name[: -len(suffix)] in trainable:
                name = name[: -len(suffix)]
        if name in trainable:
            layer = name.rsplit("/", 1)[0] if "/" in name else name
            if layer not in layers:
                layers.append(layer)
    return layers


def apply_strategy(spec, meta, at: str):
    """``spec`` with what ``spec.strategy`` trains and freezes spelled out as the options
    that do it (``cut_after``, ``train_scope``), and ``{"trained": [...], "frozen": [...],
    "slower": [...]}`` reused layers for the plan.

    Raises:
        UserError: the strategy is combined with ``cut_after`` or ``train_scope``, or asks for
            more layers than ``at`` reuses.
    """
    strategy = parse_strategy(spec.strategy)
    if spec.cut_after or spec.train_scope:
        raise UserError(f"--strategy {strategy} decides what trains and what is frozen; drop "
                        "--cut-after and --train-scope")
    layers = reused_layers(meta, at)
    if strategy.name == "feature-extract":
        return replace(spec, cut_after=spec.at), {"trained": [], "frozen": layers, "slower": []}
    if strategy.name == "fine-tune-all":
        return spec, {"trained": layers, "frozen": [], "slower": layers}
    if strategy.top > len(layers):
        raise UserError(f"--strategy {strategy}: '{spec.at}' reuses {len(layers)} layer(s) "
                        f"({', '.join(reversed(layers)) or 'none'}); ask for at most "
                        f"{len(layers)}")
    top = layers[: strategy.top]
    names = top + [layer.name for layer in spec.layers]
    scope = "^(" + "|".join(re.escape(n) for n in names) + ")/"
    return replace(spec, train_scope=scope), {"trained": top, "frozen": layers[strategy.top:],
                                              "slower": []}
