"""Training batches of random crops: zoom, the eight symmetries of the square, intensity changes.

A network without normalisation layers or attention is local and translation-equivariant, so it can
be trained on small crops and applied to whole images of any size. :func:`random_crops` cuts each
crop from a window of ``crop * zoom`` pixels resampled to ``crop`` (antialiased), so one data set
teaches the network features at several scales; then applies one of the 8 rotations/flips, a gamma
curve and, sometimes, intensity inversion. Every draw comes from the generator passed in, so a
batch is a function of that generator alone (exact resume, see :mod:`invdiff.training.train`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass(frozen=True)
class CropConfig:
    """How training crops are drawn; stored in the checkpoint."""

    size: int = 32  # crop side in pixels (what the network sees in training)
    zoom_max: float = 4.0  # window side up to size * zoom_max, resampled to size
    p_zoom: float = 0.5  # probability of a zoomed-out crop (else the native scale)
    gamma: float = 0.5  # gamma = exp(U(-g, g))
    p_invert: float = 0.15  # probability of x -> 1 - x


def random_crops(images: Tensor, idx: Tensor, cfg: CropConfig, g: torch.Generator) -> Tensor:
    """Return crops (B, C, size, size) of ``images[idx]`` (images in [0, 1], N x C x H x W)."""
    _, _, h, w = images.shape
    out = []
    for i in idx.tolist():
        u = torch.rand(7, generator=g, dtype=torch.float64).tolist()
        zoom = math.exp(u[0] * math.log(cfg.zoom_max)) if u[1] < cfg.p_zoom else 1.0
        win = max(cfg.size, min(round(cfg.size * zoom), h, w))
        y, x = int(u[2] * (h - win + 1)), int(u[3] * (w - win + 1))
        crop = images[i : i + 1, :, y : y + win, x : x + win]
        if win != cfg.size:
            crop = F.interpolate(
                crop,
                size=(cfg.size, cfg.size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            ).clamp(0, 1)
        k = int(u[4] * 8)
        crop = torch.rot90(crop, k % 4, dims=(-2, -1))
        if k >= 4:
            crop = crop.flip(-1)
        crop = crop.clamp_min(0) ** math.exp(cfg.gamma * (2 * u[5] - 1))
        if u[6] < cfg.p_invert:
            crop = 1 - crop
        out.append(crop)
    return torch.cat(out)
