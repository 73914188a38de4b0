"""Image grids and PNG previews (imageio, installed with scikit-image, writes the file)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from invdiff.io import atomic_path


def grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile N x C x H x W images in [0, 1] into one H' x W' (x 3) array, clipped to [0, 1]."""
    n, c, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    out = np.ones((c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for k in range(n):
        r, q = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[:, y : y + h, x : x + w] = images[k]
    out = np.clip(out, 0.0, 1.0)
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_png(path: str | Path, image: np.ndarray, scale: int = 1) -> None:
    """Write a [0, 1] image (H x W or H x W x 3) as an 8-bit PNG, atomically."""
    import imageio.v3 as iio  # installed with scikit-image

    if scale > 1:
        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, (np.clip(image, 0, 1) * 255).round().astype(np.uint8), extension=".png")


def save_preview(path: str | Path, mean, truth=None, baseline=None, std=None, rows: int = 4):
    """Write a reconstruction preview PNG: one row per slice (the first ``rows``), columns truth
    (when known), baseline (when there is one), posterior mean and std divided by its maximum."""
    cols = [] if truth is None else [truth]
    cols += [mean] if baseline is None else [baseline, mean]
    if std is not None:
        cols.append(std / max(float(std.max()), 1e-12))
    n = min(len(mean), rows)
    tiles = np.stack([c[i] for i in range(n) for c in cols]).clip(0, 1)
    save_png(path, grid(tiles, ncols=len(cols)), scale=2)
