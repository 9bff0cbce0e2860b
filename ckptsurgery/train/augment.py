"""Data augmentation for small sets of images: random small shifts, horizontal flips and small
rotations of each training batch, drawn from a seeded generator (the same seed, the same
augmented batches). Validation and test images are never augmented.

Only image inputs (rank 3 or 4: height, width, optional channels) are augmented; rows of
flattened pixels carry no geometry to shift. numpy only.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

__all__ = ["AUGMENTATIONS", "parse_augment", "augment_batch"]

#: What ``--augment`` takes, comma-separated.
AUGMENTATIONS = ("shift", "flip", "rotate")

_MAX_SHIFT = 0.1  # of the height and width
_MAX_DEGREES = 10.0


def parse_augment(text: str) -> tuple[str, ...]:
    """``shift,flip,rotate`` (any of them, in any order).

    Raises:
        UserError: an unknown name.
    """
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown or not names:
        raise UserError(f"--augment '{text}': use any of {', '.join(AUGMENTATIONS)}, "
                        "comma-separated")
    return names


def augment_batch(x: np.ndarray, kinds: tuple[str, ...], rng: np.random.RandomState) -> np.ndarray:
    """An augmented copy of the image batch ``x`` ([N, H, W] or [N, H, W, C]).

    Raises:
        UserError: ``x`` is not a batch of images.
    """
    if x.ndim not in (3, 4):
        raise UserError("--augment needs image inputs ([N, H, W] or [N, H, W, C]); these rows "
                        "are flattened pixels: graft on a model whose input is an image")
    out = x.copy()
    height, width = x.shape[1], x.shape[2]
    for i in range(len(out)):
        image = out[i]
        if "flip" in kinds and rng.rand() < 0.5:
            image = image[:, ::-1]
        if "rotate" in kinds:
            image = _rotate(image, rng.uniform(-_MAX_DEGREES, _MAX_DEGREES))
        if "shift" in kinds:
            dy = rng.randint(-int(height * _MAX_SHIFT), int(height * _MAX_SHIFT) + 1)
            dx = rng.randint(-int(width * _MAX_SHIFT), int(width * _MAX_SHIFT) + 1)
            image = _shift(image, dy, dx)
        out[i] = image
    return out


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by ``dy`` rows and ``dx`` columns, the uncovered border zero."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    src = image[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` rotated about its centre (nearest neighbour; outside pixels zero)."""
    h, w = image.shape[:2]
    theta = np.deg2rad(degrees)
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    sy = np.rint(np.cos(theta) * (ys - cy) - np.sin(theta) * (xs - cx) + cy).astype(int)
    sx = np.rint(np.sin(theta) * (ys - cy) + np.cos(theta) * (xs - cx) + cx).astype(int)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    out = np.zeros_like(image)
    out[inside] = image[sy[inside], sx[inside]]
    return out
