"""Which transfer strategy fits: the data-size x similarity chart, turned into a command.

Small data is about 1,000 images or fewer. Small and similar: feature extraction (a new
classifier on frozen features); small and dissimilar: fine-tune more of the top, and augment
the data; large and similar: fine-tune the top; large and dissimilar: fine-tune everything,
reused layers at a lower learning rate. :func:`advise` counts the images per class, picks the
quadrant and writes the exact ``ckptsurgery graft`` command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..errors import UserError

__all__ = ["SMALL", "Advice", "advise"]

#: At most this many training images is "small" data.
SMALL = 1000

_CHART = {
    (True, True): ("feature-extract", "a small set of images like the ones the model learnt: "
                   "train only a new classifier on the frozen features (more would overfit)"),
    (True, False): ("fine-tune-top:2", "a small set unlike the model's: its top layers learnt "
                    "features of the other task, so two of them train with the new ones and the "
                    "rest stay frozen; augment the images (shifted copies) when the "
                    "model takes images"),
    (False, True): ("fine-tune-top:1", "a large set like the model's: the top reused layer "
                    "adapts with the new ones, the lower features are kept"),
    (False, False): ("fine-tune-all", "a large set unlike the model's: everything trains, the "
                     "reused layers at a tenth of the learning rate so they adapt, not restart"),
}


@dataclass
class Advice:
    """The quadrant of the chart, the strategy, why, and the ``graft`` command to run.

    ``images`` and ``per_class`` count the rows that will train: after ``--classes``, the
    validation rows and ``--per-class``, as ``graft`` draws them.
    """

    images: int
    per_class: dict[int, int]
    similar: bool
    strategy: str
    why: str
    command: list[str] = field(default_factory=list)
    valid_size: int = 0
    trained_layers: list[str] = field(default_factory=list)

    @property
    def quadrant(self) -> str:
        return (f"{'small' if self.images <= SMALL else 'large'} "
                f"({self.images:,} training images), {'similar' if self.similar else 'dissimilar'}")

    def lines(self) -> list[str]:
        counts = ", ".join(f"{k}: {n}" for k, n in sorted(self.per_class.items()))
        out = [f"data:     {self.images:,} training images in {len(self.per_class)} classes "
               f"({counts}), {self.valid_size:,} more for validation",
               f"quadrant: {self.quadrant}",
               f"strategy: {self.strategy}: {self.why}"]
        if self.trained_layers:
            out.append(f"trains:   reused layers {', '.join(self.trained_layers)} and the new one")
        return out + ["run:", "  " + shlex.join(self.command)]

    def as_dict(self) -> dict:
        return {"images": self.images, "per_class": {str(k): n for k, n in self.per_class.items()},
                "valid_size": self.valid_size, "similar": self.similar,
                "quadrant": self.quadrant, "strategy": self.strategy, "why": self.why,
                "trained_layers": self.trained_layers, "command": self.command}


def advise(checkpoint, data: str, *, similar: bool, at: str | None = None,
           out: str | None = None, classes: list[int] | None = None,
           per_class: int | None = None, valid_size: int | None = None,
           seed: int = 42) -> Advice:
    """The advice for grafting ``checkpoint`` (opened) to the data at ``data``.

    Args:
        similar: whether the new images look like the ones the model learnt from.
        at: where to graft (default: the first graft point ``inspect`` finds, with its flags).
        out: the command's output prefix (default ``<checkpoint>-<strategy>.ckpt`` beside it).
        classes, per_class, valid_size, seed: the rows to train on, as ``graft`` takes them;
            they are passed on in the command. Without ``valid_size``: a fifth of the rows up
            to 25,000 rows, else graft's 5,000.

    Raises:
        UserError: no ``.meta``, no graft point found and none given, or rows that do not
            split (the data error).
    """
    from ..graph.graftpoints import find_graft_points
    from ..graphdef.select import resolve_tensor
    from ..train.data import load_dataset, select_classes, split
    from .strategies import parse_strategy, reused_layers

    meta = checkpoint.meta_graph
    if meta is None:
        raise UserError(f"'{checkpoint.prefix}' has no .meta; advice needs the graph")
    dataset = load_dataset(data)
    if classes:
        dataset = select_classes(dataset, classes)
    rows = len(dataset.y_train)
    chosen_valid = valid_size if valid_size is not None else (
        max(1, rows // 5) if rows <= 5 * 5000 else 5000)
    parts = split(dataset, chosen_valid, seed=seed, per_class=per_class)
    counts = {k: t for k, (t, _) in parts.per_class().items() if t}
    images = len(parts.y_train)
    points, why_none = find_graft_points(meta)
    flags: list[str] = []
    if at is None:
        if not points:
            raise UserError(f"no graft point found ({why_none}); give one with --at")
        at, flags = points[0].at, list(points[0].flags)
    else:
        flags = next((list(p.flags) for p in points if p.at in (at, f"{at}:0")), [])
    strategy, why = _CHART[(images <= SMALL, similar)]
    parsed = parse_strategy(strategy)
    fed = [resolve_tensor(meta, flags[flags.index("--inputs") + 1])] if "--inputs" in flags \
        else []
    layers = [layer.name for layer in reused_layers(meta, resolve_tensor(meta, at), fed)]
    trained = layers if parsed.name == "fine-tune-all" else []
    if parsed.name == "fine-tune-top":
        if layers and parsed.top > len(layers):
            strategy = f"fine-tune-top:{len(layers)}"
        trained = layers[: parse_strategy(strategy).top]
    name = strategy.replace(":", "")
    out = out or f"{checkpoint.prefix}-{name}.ckpt"
    command = ["ckptsurgery", "graft", checkpoint.prefix, "--at", at, *flags,
               "--dense", f"new_logits:{int(parts.y_train.max()) + 1}", "--strategy", strategy,
               "--data", data, "--out", out]
    if strategy == "feature-extract":
        command.append("--cache-frozen")
    if images <= SMALL and not similar and _takes_images(meta, at, flags):
        command += ["--augment", "shift"]
    if classes:
        command += ["--classes", ",".join(map(str, classes))]
    if per_class is not None:
        command += ["--per-class", str(per_class)]
    command += ["--valid-size", str(chosen_valid)]
    if seed != 42:  # graft's default
        command += ["--seed", str(seed)]
    return Advice(images, counts, similar, strategy, why, command, chosen_valid,
                  list(reversed(trained)))


def _takes_images(meta, at: str, flags: list[str]) -> bool:
    """Whether the input a graft at ``at`` trains from is an image (rank 3 or 4)."""
    from ..graphdef.metagraph import placeholder_shape
    from ..graphdef.select import find_placeholder, resolve_tensor
    from ..graphdef.walk import ancestors

    named = flags[flags.index("--inputs") + 1] if "--inputs" in flags else None
    try:
        inputs = find_placeholder(meta, named, "inputs", "float",
                                  among=ancestors(meta, [resolve_tensor(meta, at)]))
    except UserError:
        return False
    if inputs is None or ":" not in inputs:
        return False
    shape = placeholder_shape(meta, inputs.rpartition(":")[0])
    return shape is not None and len(shape) in (3, 4)
