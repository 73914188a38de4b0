"""Image grids and PNG previews (imageio, installed with scikit-image, writes the file; Pillow,
which both depend on, draws the titles, so no plotting library is needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from invdiff.atomic import atomic_path

#: Preview layout, in pixels: the band of titles above the columns, the gap between tiles, the
#: narrowest column (tiles are enlarged to it so that a title fits) and the colour bar's width.
TITLE_H, PAD, MIN_COLUMN, BAR_W = 16, 4, 96, 10

# Anchors of the viridis colour map (perceptually uniform, readable in grey).
_VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.229, 0.322, 0.546],
        [0.128, 0.567, 0.551],
        [0.369, 0.789, 0.383],
        [0.993, 0.906, 0.144],
    ]
)


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
    with atomic_path(path) as tmp:  # encoded in memory, then written in one go: a full disk is
        # one OSError, never an imageio writer failing again when garbage-collected
        pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        tmp.write_bytes(iio.imwrite("<bytes>", pixels, extension=".png"))


def colour_map(values: np.ndarray) -> np.ndarray:
    """Return values in [0, 1] (any shape) as RGB (shape + (3,)) on the viridis colour map."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    return np.stack([np.interp(v[..., 0], anchors, _VIRIDIS[:, k]) for k in range(3)], -1)


def preview_columns(mean, truth=None, baseline=None, std=None, baseline_name: str = "baseline"):
    """Return the preview's columns [(title, N x H x W x 3 RGB in [0, 1])] and the std's maximum
    (None without std): truth, baseline, reconstruction, std (colour map), |error|."""

    def rgb(x: np.ndarray) -> np.ndarray:  # N x C x H x W -> N x H x W x 3
        x = np.clip(np.asarray(x, np.float32), 0.0, 1.0).transpose(0, 2, 3, 1)
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    cols = [] if truth is None else [("truth", rgb(truth))]
    if baseline is not None:
        cols.append((baseline_name, rgb(baseline)))
    cols.append(("reconstruction", rgb(mean)))
    top = None
    if std is not None:
        spread = np.asarray(std, np.float32).mean(1)  # one map for every channel
        top = max(float(spread.max()), 1e-12)
        cols.append(("std", colour_map(spread / top)))
    if truth is not None:
        cols.append(("|error|", rgb(np.abs(np.asarray(mean) - np.asarray(truth)))))
    return cols, top


def save_preview(
    path: str | Path,
    mean,
    truth=None,
    baseline=None,
    std=None,
    rows: int = 4,
    baseline_name: str = "baseline",
) -> None:
    """Write a reconstruction preview PNG: one row per slice (the first ``rows``) and one column,
    titled above, for each of: the truth (when known), the baseline (titled ``baseline_name``,
    when there is one), the reconstruction (posterior mean), the posterior std on a colour map
    with a colour bar from 0 to its maximum, and |reconstruction - truth| (when the truth is
    known; on the images' grey scale). Tiles are enlarged to at least ``MIN_COLUMN`` pixels."""
    from PIL import Image, ImageDraw, ImageFont

    cols, top = preview_columns(mean, truth, baseline, std, baseline_name)
    n, h, w = min(len(mean), rows), mean.shape[-2], mean.shape[-1]
    scale = max(2, math.ceil(MIN_COLUMN / w))
    th, tw = h * scale, w * scale
    font = ImageFont.load_default()
    bar = 0 if top is None else PAD + BAR_W + PAD + int(font.getlength(f"{top:.2g}")) + PAD
    width = PAD + len(cols) * (tw + PAD) + bar
    canvas = np.ones((TITLE_H + n * (th + PAD), width, 3), np.float32)
    for j, (_, tiles) in enumerate(cols):
        x = PAD + j * (tw + PAD)
        for i in range(n):
            y = TITLE_H + i * (th + PAD)
            canvas[y : y + th, x : x + tw] = np.repeat(np.repeat(tiles[i], scale, 0), scale, 1)
    if top is not None:  # the colour bar, beside the last column, as tall as one tile
        x = PAD + len(cols) * (tw + PAD) + PAD
        ramp = colour_map(np.linspace(1.0, 0.0, th))[:, None]
        canvas[TITLE_H : TITLE_H + th, x : x + BAR_W] = ramp
    image = Image.fromarray((canvas * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for j, (title, _) in enumerate(cols):
        while title and font.getlength(title) > tw:
            title = title[:-1]  # a long baseline name is cut to its column
        x = PAD + j * (tw + PAD) + (tw - font.getlength(title)) / 2
        draw.text((x, 2), title, fill=(0, 0, 0), font=font)
    if top is not None:
        x = PAD + len(cols) * (tw + PAD) + PAD + BAR_W + PAD
        draw.text((x, TITLE_H), f"{top:.2g}", fill=(0, 0, 0), font=font)
        draw.text((x, TITLE_H + th - 12), "0", fill=(0, 0, 0), font=font)
    save_png(path, np.asarray(image, np.float32) / 255)
