"""Transfer strategies: which reused layers train, by the data-size x similarity chart.

* ``feature-extract``: everything below ``--at`` frozen by a cut (small data, similar task);
* ``fine-tune-top[:N]``: the top N reused layers (default 1) train with the new ones, the rest
  frozen (large and similar; small and dissimilar with more layers and augmentation);
* ``fine-tune-all``: everything trains, reused layers at a lower learning rate than new ones
  (large and dissimilar).

A "layer" is a layer as the graph computes it (:mod:`ckptsurgery.graphdef.layergroups`: the
``MatMul`` or ``Conv2D`` reading a weight, with its bias, batch norm and activation), scoped or
not, ordered by how far below ``--at`` it is. What trains is spelled out as exact variable names,
so the plan lists exactly what moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..errors import UserError, some
from ..graphdef.collections import collection_items
from ..graphdef.layergroups import Layer, layers_below

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


def reused_layers(meta, at: str, inputs: Iterable[str] = ()) -> list[Layer]:
    """The layers ``at`` depends on (below it and above the fed ``inputs``) that have
    trainable variables, nearest to it first, each with only those variables (a batch norm's
    moving statistics do not train)."""
    trainable = set(collection_items(meta, "trainable_variables")) \
        if "trainable_variables" in meta.collection_def else None
    layers = []
    for layer in layers_below(meta, at, inputs):
        variables = tuple(v for v in layer.variables if trainable is None or v in trainable)
        if variables:
            layers.append(replace(layer, variables=variables))
    return layers


def apply_strategy(spec, meta, at: str, inputs: Iterable[str] = ()):
    """``spec`` with what ``spec.strategy`` trains and freezes spelled out as the options
    that do it (``cut_after``; ``train_variables``: the exact reused variables that train), and
    ``{"trained": [...], "frozen": [...], "slower": [...]}`` reused layer names for the plan.

    Raises:
        UserError: the strategy is combined with ``cut_after`` or ``train_scope``, or asks for
            more layers than ``at`` reuses.
    """
    strategy = parse_strategy(spec.strategy)
    if spec.cut_after or spec.train_scope:
        raise UserError(f"--strategy {strategy} decides what trains and what is frozen; drop "
                        "--cut-after and --train-scope")
    layers = reused_layers(meta, at, inputs)
    names = [layer.name for layer in layers]
    if strategy.name == "feature-extract":
        return replace(spec, cut_after=spec.at), {"trained": [], "frozen": names, "slower": []}
    if strategy.name == "fine-tune-all":
        every = tuple(v for layer in layers for v in layer.variables)
        return replace(spec, train_variables=every), {"trained": names, "frozen": [], "slower": names}
    if strategy.top > len(layers):
        raise UserError(f"--strategy {strategy}: '{spec.at}' reuses {len(layers)} layer(s) "
                        f"({some(reversed(names)) or 'none'}); ask for at most "
                        f"{len(layers)}")
    top = layers[: strategy.top]
    trained = tuple(v for layer in top for v in layer.variables)
    return replace(spec, train_variables=trained), {"trained": names[: strategy.top],
                                                    "frozen": names[strategy.top:],
                                                    "slower": []}
