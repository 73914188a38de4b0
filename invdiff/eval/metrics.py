"""Image quality metrics: PSNR, SSIM, credible-interval coverage, and summaries.

All functions take batches of shape (B, C, H, W), as torch tensors or numpy arrays, and return
one value per image (a float64 numpy array of shape (B,)). Images are compared on the range
[0, 1]: both arguments are clipped to it first, so a reconstruction that overshoots is scored on
what a display would show, and ``data_range`` is 1.

PSNR = 10 log10(1 / MSE), MSE the mean over all C H W entries; identical images give +inf.

SSIM (Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 2004, eq. 13) through ``skimage.metrics.structural_similarity``
with the parameters in ``SSIM_CONVENTION``: an 11 x 11 Gaussian window of sigma 1.5 (truncated
at 3.5 sigma), population (not sample) covariances, K1 = 0.01, K2 = 0.03, data_range 1, the mean
of the SSIM map over the valid region (skimage crops (win_size - 1) / 2 = 5 pixels at each
border), and for C > 1 the mean over channels (``channel_axis``). SSIM of the same pair differs
across libraries by several hundredths (see FACTS.md), so quote this convention with the number.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

#: The SSIM parameters used everywhere in invdiff (Wang et al. 2004's Gaussian-window variant).
SSIM_CONVENTION = MappingProxyType(
    {
        "gaussian_weights": True,
        "sigma": 1.5,
        "use_sample_covariance": False,
        "data_range": 1.0,
    }
)


SSIM_MIN_SIDE = 11  # the side of SSIM's Gaussian window: smaller images have no SSIM


def as_batch(images, name: str = "images") -> np.ndarray:
    """Return images as a float64 numpy array of shape (B, C, H, W); accept torch or numpy."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4:
        raise ValueError(
            f"{name}: expected a batch of shape (B, C, H, W), got shape {arr.shape}; "
            "add the missing axes, e.g. x[None, None] for one gray image"
        )
    return arr


def _pair(x, ref) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_batch(x, "x"), as_batch(ref, "ref")
    if a.shape != b.shape:
        raise ValueError(f"x has shape {a.shape} but ref has {b.shape}; they must match")
    return np.clip(a, 0.0, 1.0), np.clip(b, 0.0, 1.0)


def psnr(x, ref) -> np.ndarray:
    """Return the PSNR (dB) of each image of x against ref: data_range 1, both clipped to [0, 1]."""
    pairs = zip(*_pair(x, ref), strict=True)
    return np.array([peak_signal_noise_ratio(r, e, data_range=1.0) for e, r in pairs])


def ssim(x, ref) -> np.ndarray:
    """Return the SSIM of each image of x against ref with ``SSIM_CONVENTION`` (module docstring).

    Images must be at least 11 x 11 pixels (the Gaussian window).
    """
    a, b = _pair(x, ref)
    if min(a.shape[2:]) < SSIM_MIN_SIDE:
        raise ValueError(f"ssim needs images of at least 11 x 11 pixels, got {a.shape[2:]}")
    out = []
    for e, r in zip(a, b, strict=True):
        if e.shape[0] == 1:
            out.append(structural_similarity(r[0], e[0], **SSIM_CONVENTION))
        else:
            out.append(structural_similarity(r, e, channel_axis=0, **SSIM_CONVENTION))
    return np.array(out)


def coverage(samples, truth, level: float = 0.9) -> np.ndarray:
    """Return, per image, the fraction of pixels whose truth lies in the central credible interval.

    ``samples`` has shape (S, B, C, H, W): S posterior samples of each of the B images in
    ``truth`` (B, C, H, W). The per-pixel interval is [q_lo, q_hi] with q_lo, q_hi the empirical
    (1 - level) / 2 and (1 + level) / 2 quantiles of the S samples (``numpy.quantile``, linear
    interpolation between order statistics), bounds included. No clipping is applied.

    For exact posterior samples the expected coverage is level (S - 1) / (S + 1), not level: the
    interpolated quantiles sit at ranks 1 + (S - 1) (1 -+ level) / 2 among S + 1 exchangeable
    values (truth and samples), and E F(X_(r)) = r / (S + 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"coverage level must lie in (0, 1), got {level}")
    t = as_batch(truth, "truth")
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 5 or s.shape[1:] != t.shape:
        raise ValueError(
            f"samples must have shape (S, *truth.shape) = (S, {', '.join(map(str, t.shape))}), "
            f"got {s.shape}"
        )
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2], axis=0)
    inside = (lo <= t) & (t <= hi)
    return inside.reshape(t.shape[0], -1).mean(axis=1)


def summary(values) -> dict[str, float]:
    """Return the mean, the sample standard deviation (ddof 1; 0 for one value) and n."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("summary of no values; pass at least one")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.size)}
