"""Generate CT-like thorax phantoms with anatomy that total variation alone does not capture.

Each phantom is an axial chest slice in [0, 1] (attenuation, arbitrary units): a body outline with a
subcutaneous fat layer, two lungs with branching vessels, a mediastinum with heart and aorta, a
vertebra with a denser cortex, ribs, a liver dome on one side, and smooth low-frequency intensity
variation inside every soft tissue (so images are not piecewise constant). Optionally a small round
lesion sits in a lung or in the liver; its presence is returned as a label (1 present, 0 absent).

Everything is drawn from one ``numpy.random.Generator`` per image, so image k depends only on
(seed, k); train / validation / test sets use the fixed seeds in ``SPLIT_SEEDS``. The lesion is
the last random draw of a phantom, so :func:`lesion_twins` can render the same anatomy with and
without it: paired data for training and judging lesion classifiers.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Fixed, documented seeds for the standard splits (see README, "Data").
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}

# Attenuation levels (soft tissue ~0.5, fat a little darker, air/lung dark, bone bright).
FAT, TISSUE, BLOOD, LUNG, BONE, MARROW = 0.38, 0.52, 0.6, 0.06, 0.95, 0.7


def _ellipse(gx, gy, cx, cy, a, b, angle=0.0, edge=0.6):
    """Return a soft indicator (values in [0, 1]) of an ellipse, edge width in pixels."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((gx - cx) * c + (gy - cy) * s) / a
    v = (-(gx - cx) * s + (gy - cy) * c) / b
    r = np.sqrt(u * u + v * v)
    # Signed distance approximated in pixels along the minor radius.
    d = (1.0 - r) * min(a, b)
    return np.clip(0.5 + d / (2 * edge), 0.0, 1.0)


def _paint(img, mask, value):
    """Blend ``value`` into ``img`` where ``mask`` is on (in place)."""
    img *= 1.0 - mask
    img += mask * value


def _smooth_field(rng, size, scale, amplitude):
    """Return a zero-mean low-frequency random field with the given peak amplitude."""
    f = gaussian_filter(rng.standard_normal((size, size)), sigma=scale * size, mode="wrap")
    f /= np.abs(f).max() + 1e-12
    return amplitude * f


def _vessels(rng, gx, gy, lung_mask, n):
    """Return a field of thin bright segments (vessels) clipped to the lungs."""
    out = np.zeros_like(gx)
    ys, xs = np.nonzero(lung_mask > 0.5)
    for _ in range(n if len(xs) else 0):
        i = rng.integers(len(xs))
        x0, y0 = gx[ys[i], xs[i]], gy[ys[i], xs[i]]
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.12, 0.35)
        width = rng.uniform(0.02, 0.045)
        x1, y1 = x0 + length * np.cos(ang), y0 + length * np.sin(ang)
        # Distance from each pixel to the segment.
        px, py = gx - x0, gy - y0
        dx, dy = x1 - x0, y1 - y0
        t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0, 1)
        dist = np.hypot(px - t * dx, py - t * dy)
        out = np.maximum(out, np.clip(1.0 - dist / width, 0, 1) * rng.uniform(0.6, 1.0))
    return out * lung_mask


def thorax_phantom(rng: np.random.Generator, size: int, lesion: bool) -> np.ndarray:
    """Draw one size x size thorax phantom in [0, 1] (float32)."""
    g = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    gx, gy = np.meshgrid(g, g)
    px = 2.0 / size  # one pixel in these units
    edge = 0.7 * px
    img = np.zeros((size, size))
    jit = lambda s: rng.uniform(-s, s)  # noqa: E731

    # Body outline: a wide ellipse, slightly flattened at the back, with a fat layer.
    bx, by = jit(0.03), jit(0.03) + 0.02
    ba, bb = 0.86 + jit(0.06), 0.64 + jit(0.06)
    rot = jit(0.08)
    body = _ellipse(gx, gy, bx, by, ba, bb, rot, edge)
    body *= np.clip(0.5 + (0.78 + jit(0.05) - (gy - by)) / (2 * edge), 0, 1)  # flat back
    fat_w = rng.uniform(0.04, 0.09)
    inner = _ellipse(gx, gy, bx, by, ba - fat_w, bb - fat_w, rot, edge)
    _paint(img, body, FAT)
    _paint(img, inner, TISSUE)

    # Lungs: two large ellipses left and right of the mediastinum.
    lungs = np.zeros_like(img)
    for side in (-1, 1):
        lx = bx + side * (0.4 + jit(0.04)) * ba
        ly = by - 0.05 + jit(0.04)
        la, lb = (0.26 + jit(0.04)) * ba / 0.86, (0.43 + jit(0.05)) * bb / 0.64
        lungs = np.maximum(lungs, _ellipse(gx, gy, lx, ly, la, lb, side * (0.25 + jit(0.1)), edge))
    lungs *= inner

    # Liver dome reaching into the lower part of one lung.
    liver_side = rng.choice([-1, 1])
    liver = _ellipse(
        gx, gy, bx + liver_side * 0.35, by + 0.48 + jit(0.05), 0.36, 0.22 + jit(0.04), 0, edge
    )
    lungs = lungs * (1 - liver)
    _paint(img, lungs, LUNG)
    _paint(img, liver * inner, TISSUE + 0.06)

    # Lung texture and vessels.
    img += lungs * _smooth_field(rng, size, 0.05, 0.03)
    img += _vessels(rng, gx, gy, lungs, int(rng.integers(6, 14))) * (BLOOD - LUNG)

    # Mediastinum: heart and aorta.
    heart = _ellipse(
        gx,
        gy,
        bx + jit(0.06) - 0.05,
        by + 0.05 + jit(0.05),
        0.2 + jit(0.03),
        0.17 + jit(0.03),
        jit(0.5),
        edge,
    )
    _paint(img, heart * inner, BLOOD - 0.02)
    aorta = _ellipse(gx, gy, bx + 0.1 + jit(0.03), by + 0.3 + jit(0.03), 0.07, 0.07, 0, edge)
    _paint(img, aorta * inner, BLOOD + 0.04)

    # Vertebra (cortex + marrow) and spinous process at the back.
    vx, vy = bx + jit(0.02), by + bb * 0.72
    vert = _ellipse(gx, gy, vx, vy, 0.11, 0.09, 0, edge)
    _paint(img, vert, BONE)
    _paint(img, _ellipse(gx, gy, vx, vy, 0.075, 0.06, 0, edge), MARROW)
    _paint(img, _ellipse(gx, gy, vx, vy + 0.13, 0.03, 0.06, 0, edge) * body, BONE)

    # Ribs: small bright ovals along the inside of the body wall.
    for k in range(int(rng.integers(6, 11))):
        ang = np.pi * (0.15 + 0.7 * rng.uniform()) * (1 if k % 2 else -1) - np.pi / 2
        r = 1 - fat_w / 2 / min(ba, bb) - 0.05
        rx = bx + r * (ba - fat_w) * np.cos(ang)
        ry = by + r * (bb - fat_w) * np.sin(ang)
        _paint(img, _ellipse(gx, gy, rx, ry, 0.035, 0.025, ang, edge) * inner, BONE - 0.1)

    # Smooth intensity variation inside soft tissue (not piecewise constant).
    soft = inner * (1 - lungs)
    img += soft * _smooth_field(rng, size, 0.08, 0.07)

    # Optional lesion: a small round nodule in a lung, or a darker spot in the liver.
    if lesion:
        r = rng.uniform(0.04, 0.08)
        where = liver * inner if rng.uniform() < 0.3 else lungs
        ys, xs = np.nonzero(where > 0.9)
        if len(xs):
            i = rng.integers(len(xs))
            cx, cy = g[xs[i]], g[ys[i]]
            nod = _ellipse(gx, gy, cx, cy, r, r * rng.uniform(0.8, 1.2), jit(1.0), edge)
            value = TISSUE - 0.15 if where is not lungs else TISSUE + 0.05
            _paint(img, nod * where, value)

    # Mild scanner-like blur keeps edges band-limited.
    img = gaussian_filter(img, sigma=0.4)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def make_phantoms(
    n: int, size: int = 64, seed: int = 0, lesion_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` phantoms of shape (n, 1, size, size) in [0, 1] and their lesion labels.

    Image k is drawn from ``numpy.random.default_rng([seed, k])`` alone.
    """
    if n < 1 or size < 16:
        raise ValueError("need n >= 1 and size >= 16")
    images = np.empty((n, 1, size, size), np.float32)
    labels = np.empty(n, np.int64)
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        labels[k] = int(rng.uniform() < lesion_fraction)
        images[k, 0] = thorax_phantom(rng, size, bool(labels[k]))
    return images, labels


def lesion_twins(
    n: int, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return n phantoms with a lesion, the same phantoms without it, and the lesion masks.

    The twins are the phantoms of ``make_phantoms(., size, seed)`` that carry a lesion (label 1
    at lesion_fraction 0.5), in order, rendered a second time without the lesion; the rare ones
    whose lesion found no room are skipped. Shapes (n, 1, size, size); masks are boolean
    (|difference| > 0.02).
    """
    present, absent, masks, k = [], [], [], 0
    while len(present) < n:
        rng = np.random.default_rng([seed, k])
        k += 1
        if rng.uniform() >= 0.5:  # make_phantoms' label draw at lesion_fraction 0.5
            continue
        state = rng.bit_generator.state
        a = thorax_phantom(rng, size, True)
        rng.bit_generator.state = state
        b = thorax_phantom(rng, size, False)
        if np.abs(a - b).max() > 0.02:  # a lesion was actually drawn
            present.append(a), absent.append(b), masks.append(np.abs(a - b) > 0.02)
    return tuple(np.stack(v)[:, None] for v in (present, absent, masks))  # type: ignore[return-value]
