"""Metrics against direct scikit-image calls and hand formulas; coverage against its expectation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invdiff.eval.metrics import SSIM_CONVENTION, coverage, psnr, ssim, summary


def _images(seed: int, shape=(3, 1, 37, 31)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.1, 0.9, shape)
    return np.clip(ref + 0.05 * rng.standard_normal(shape), 0, 1), ref


def test_psnr_matches_skimage_per_image():
    x, ref = _images(0)
    pairs = zip(x, ref, strict=True)
    expected = [peak_signal_noise_ratio(r[0], e[0], data_range=1.0) for e, r in pairs]
    np.testing.assert_allclose(psnr(x, ref), expected, rtol=1e-12)


def test_psnr_of_constant_offset_is_minus_20_log10_offset():
    _, ref = _images(1)
    np.testing.assert_allclose(psnr(ref + 0.05, ref), -20 * math.log10(0.05), rtol=1e-9)


def test_psnr_clips_to_unit_range():
    ref = np.full((1, 1, 16, 16), 0.9)
    # 1.5 is clipped to 1, so the error is 0.1 everywhere: 20 dB.
    np.testing.assert_allclose(psnr(ref + 0.6, ref), 20.0, rtol=1e-9)


def test_torch_and_numpy_inputs_agree():
    x, ref = _images(2)
    np.testing.assert_allclose(psnr(torch.from_numpy(x), torch.from_numpy(ref)), psnr(x, ref))
    np.testing.assert_allclose(ssim(torch.from_numpy(x).float(), ref), ssim(x, ref), atol=1e-6)


def test_ssim_matches_skimage_with_the_stated_convention():
    x, ref = _images(3)
    expected = [
        structural_similarity(
            r[0],
            e[0],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for e, r in zip(x, ref, strict=True)
    ]
    np.testing.assert_allclose(ssim(x, ref), expected, rtol=1e-12)
    assert dict(SSIM_CONVENTION) == {
        "gaussian_weights": True,
        "sigma": 1.5,
        "use_sample_covariance": False,
        "data_range": 1.0,
    }


def test_ssim_rgb_uses_channel_axis():
    x, ref = _images(4, (2, 3, 24, 20))
    pairs = zip(x, ref, strict=True)
    expected = [structural_similarity(r, e, channel_axis=0, **SSIM_CONVENTION) for e, r in pairs]
    np.testing.assert_allclose(ssim(x, ref), expected, rtol=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    # Constant images have zero variances and covariance: SSIM = (2ab + C1) / (a^2 + b^2 + C1),
    # C1 = (0.01 * data_range)^2 (Wang et al. 2004, eq. 13).
    a, b, c1 = 0.4, 0.6, 1e-4
    x, ref = np.full((1, 1, 16, 16), a), np.full((1, 1, 16, 16), b)
    np.testing.assert_allclose(ssim(x, ref), (2 * a * b + c1) / (a**2 + b**2 + c1), rtol=1e-9)
    np.testing.assert_allclose(ssim(ref, ref), 1.0)


def test_metrics_reject_unbatched_or_mismatched_shapes():
    with pytest.raises(ValueError, match="B, C, H, W"):
        psnr(np.zeros((16, 16)), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="must match"):
        ssim(np.zeros((1, 1, 16, 16)), np.zeros((1, 1, 16, 15)))


def test_coverage_of_exact_gaussian_samples():
    # Truth and S samples are i.i.d. N(mu, s^2) per pixel, so each pixel is covered with
    # probability p = level (S - 1) / (S + 1) (see coverage's docstring), independently across
    # the N pixels: the covered fraction has standard deviation sqrt(p (1 - p) / N). We allow
    # 4 standard deviations (two-sided false-failure rate 6e-5).
    g = torch.Generator().manual_seed(5)
    shape, n_samples, level = (2, 1, 48, 48), 200, 0.9
    mu, s = torch.rand(shape, generator=g, dtype=torch.float64), 0.1
    truth = mu + s * torch.randn(shape, generator=g, dtype=torch.float64)
    samples = mu + s * torch.randn((n_samples, *shape), generator=g, dtype=torch.float64)
    p = level * (n_samples - 1) / (n_samples + 1)
    n_pixels = math.prod(shape)
    tol = 4 * math.sqrt(p * (1 - p) / n_pixels)
    per_image = coverage(samples, truth, level)
    assert per_image.shape == (2,)
    assert abs(per_image.mean() - p) < tol


def test_coverage_of_a_point_mass_away_from_the_truth_is_zero():
    truth = np.zeros((1, 1, 8, 8))
    assert coverage(np.ones((10, 1, 1, 8, 8)), truth)[0] == 0.0
    assert coverage(np.zeros((10, 1, 1, 8, 8)), truth)[0] == 1.0
    with pytest.raises(ValueError, match="samples must have shape"):
        coverage(np.ones((10, 1, 8, 8)), truth)


def test_summary():
    assert summary([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert summary(np.array([4.0])) == {"mean": 4.0, "std": 0.0, "n": 1}
