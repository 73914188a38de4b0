"""Data sources: generated and installed images (phantoms, synthetic, MNI152, photos)."""

from __future__ import annotations

import numpy as np


def tiles(images: np.ndarray, size: int) -> np.ndarray:
    """Cut images (N, C, R, R) into their (R / size)^2 non-overlapping tiles of ``size``,
    (N * (R / size)^2, C, size, size): image by image, each in row-major order.

    A generator rendered at R = k * size and cut into tiles gives training images whose
    structures are k times larger in pixels than at ``size``, with edges as sharp (rendered, not
    interpolated): the scale at which a 256 or 512 px scan shows the same anatomy.
    """
    n, c, h, w = images.shape
    if h != w or h % size:
        raise ValueError(f"images of {h} x {w} do not cut into tiles of {size}")
    k = h // size
    out = images.reshape(n, c, k, size, k, size).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(out.reshape(n * k * k, c, size, size))
