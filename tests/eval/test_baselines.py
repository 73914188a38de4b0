"""Classical baselines on problems with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from invdiff_operators.ct_sparse import CTSparse
from invdiff_operators.grayscale import Grayscale
from invdiff_operators.masking import Masking
from invdiff_operators.mri import MRI
from skimage.restoration import denoise_tv_chambolle

from invdiff.data.phantoms import make_phantoms
from invdiff.eval.baselines import (
    biharmonic_inpaint,
    fista_tv,
    lipschitz_constant,
    total_variation,
    tune_weight,
    tv_objective,
    tv_prox,
)
from invdiff.eval.metrics import psnr


def piecewise_constant(n: int) -> torch.Tensor:
    """Return a (1, 1, n, n) image of a disc and a rectangle on a gray background."""
    i, j = np.mgrid[:n, :n] / n
    disc = (i - 0.5) ** 2 + (j - 0.45) ** 2 < 0.1
    rect = (i > 0.55) & (i < 0.75) & (j > 0.3) & (j < 0.6)
    return torch.tensor(0.2 + 0.5 * disc + 0.2 * rect, dtype=torch.float32)[None, None]


def smooth_image(h: int, w: int, channels: int = 1) -> torch.Tensor:
    """Return a (1, C, h, w) band-limited image in [0.2, 0.8]."""
    i, j = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    chans = [
        0.5 + 0.2 * np.sin(2 * np.pi * i + c) * np.cos(3 * np.pi * j) + 0.1 * i
        for c in range(channels)
    ]
    return torch.tensor(np.stack(chans), dtype=torch.float64)[None]


def test_tv_prox_uses_weight_as_the_prox_parameter():
    # denoise_tv_chambolle(v, w) should minimise 1/2 ||u - v||^2 + w TV(u) with our TV: its output
    # must score better on that objective than its outputs for w / 2 and 2 w.
    g = torch.Generator().manual_seed(0)
    v = piecewise_constant(24).double() + 0.1 * torch.randn(1, 1, 24, 24, generator=g).double()
    w = 0.05

    def objective(u):
        return float(0.5 * ((u - v) ** 2).sum() + w * total_variation(u).sum())

    best = objective(tv_prox(v, w))
    for other in (w / 2, 2 * w):
        assert best < objective(tv_prox(v, other))
    chan = v[0, 0].numpy()
    np.testing.assert_allclose(tv_prox(v, w)[0, 0].numpy(), denoise_tv_chambolle(chan, weight=w))


def test_lipschitz_constant_matches_the_dense_spectral_norm():
    op = CTSparse((1, 12, 10), views=9, noise_std=0.0)
    basis = torch.eye(120, dtype=torch.float64).reshape(120, 1, 12, 10)
    dense = op.forward(basis).reshape(120, -1).numpy().T
    largest = np.linalg.eigvalsh(dense.T @ dense)[-1]
    assert largest <= lipschitz_constant(op) <= 1.011 * largest
    assert lipschitz_constant(MRI((1, 16, 16), acceleration=4)) == pytest.approx(1.01)


def test_fista_tv_recovers_a_piecewise_constant_image_from_full_ct():
    # 180 views of a 32 x 32 image: A has full column rank, so for a small weight the TV
    # minimiser is close to the truth, and F(x_hat) <= F(truth) = weight TV(truth) up to the
    # solver's tolerance. With restart the objective decreases at every step except for
    # round-off-sized bumps (relative <= 1e-6 measured) from the inexact Chambolle prox.
    truth = piecewise_constant(32)
    op = CTSparse((1, 32, 32), views=180, noise_std=0.0)
    y, weight, history = op.measure(truth), 0.01, []
    x = fista_tv(op, y, weight, 300, history=history)
    objective = np.array([float(h) for h in history])
    assert psnr(x, truth)[0] > 40
    assert objective[-1] <= 1.001 * float(tv_objective(op, truth.double(), y.double(), weight))
    assert objective[-1] < 1e-4 * objective[0]
    assert np.all(np.diff(objective) <= 1e-5 * objective[:-1])


def test_fista_tv_beats_zero_filling_on_undersampled_problems():
    truth = piecewise_constant(32)
    for op, weight, gain in (
        (Masking((1, 32, 32), fraction=0.5, mask_seed=1, noise_std=0.0), 0.01, 10.0),
        (MRI((1, 32, 32), acceleration=4, noise_std=0.0), 1e-3, 10.0),
    ):
        y = op.measure(truth)
        assert (
            psnr(fista_tv(op, y, weight, 200), truth)[0]
            > psnr(op.pseudo_inverse(y), truth)[0] + gain
        )


def test_fista_tv_is_batch_invariant():
    truth = torch.cat([piecewise_constant(24), smooth_image(24, 24).float()])
    op = MRI((1, 24, 24), acceleration=4, noise_std=0.0)
    y = op.measure(truth)
    both = fista_tv(op, y, 1e-3, 30)
    for k in range(2):
        torch.testing.assert_close(both[k : k + 1], fista_tv(op, y[k : k + 1], 1e-3, 30))
    assert both.dtype == torch.float32


def test_fbp_with_many_views_approaches_the_image():
    # Measured on make_phantoms(4, 64, seed=3): 23 views ~29 dB, 180 views 34-35.3 dB, and 360
    # views adds < 0.05 dB (the limit is the discrete projector and ramp filter, not the views).
    # 32 dB leaves a 2 dB margin and is still 3 dB above what 23 views give.
    truth = torch.from_numpy(make_phantoms(4, 64, seed=3)[0])
    many = CTSparse((1, 64, 64), views=180, noise_std=0.0)
    few = CTSparse((1, 64, 64), views=23, noise_std=0.0)
    assert np.all(psnr(many.fbp(many.measure(truth)), truth) > 32)
    assert (
        psnr(many.fbp(many.measure(truth)), truth).mean()
        > psnr(few.fbp(few.measure(truth)), truth).mean() + 3
    )


def test_zero_filled_is_exact_when_fully_sampled():
    truth = smooth_image(20, 17).float()
    op = MRI((1, 20, 17), acceleration=1, noise_std=0.0)
    torch.testing.assert_close(op.baseline(op.measure(truth))[1], truth, atol=1e-5, rtol=0)


def test_biharmonic_inpainting_of_a_smooth_image_is_accurate():
    # A smooth image with 70 % of pixels missing: measured max error 0.038 (gray) on 32 x 32.
    gray, rgb = smooth_image(32, 32), smooth_image(32, 29, channels=3)
    for truth in (gray, rgb):
        op = Masking(tuple(truth.shape[1:]), fraction=0.7, mask_seed=2, noise_std=0.0)
        x = biharmonic_inpaint(op, op.measure(truth))
        assert float((x - truth).abs().max()) < 0.06
        assert psnr(x, truth)[0] > 40
        torch.testing.assert_close(biharmonic_inpaint(op.mask, op.measure(truth)), x)


def test_tune_weight_picks_the_validation_optimum():
    # fn offsets the truth by 0.01 + |log10(w / 0.1)| / 10: the best grid point is w = 0.1, and the
    # refinement finds a point between grid points closer to an off-grid optimum.
    g = torch.Generator().manual_seed(4)
    truths = 0.2 + 0.6 * torch.rand(3, 1, 16, 16, generator=g)

    def make_fn(optimum):
        return lambda ys, w: ys + 0.01 + abs(np.log10(w / optimum)) / 10

    grid = np.geomspace(1e-3, 1e1, 5)
    best, table = tune_weight(make_fn(0.1), truths, truths, grid)
    assert best == pytest.approx(0.1)
    assert [w for w, _ in table] == pytest.approx(list(grid))
    assert max(table, key=lambda row: row[1])[0] == best
    best, table = tune_weight(make_fn(0.25), truths, truths, grid, refine=3)
    assert len(table) == 5 + 6 and best == pytest.approx(0.1 * 10**0.5)


def test_each_operator_supplies_its_classical_baseline():
    truth = smooth_image(16, 16).float()
    ct = CTSparse((1, 16, 16), views=8, noise_std=0.0)
    label, x = ct.baseline(ct.measure(truth))
    assert label == "FBP"
    torch.testing.assert_close(x, ct.fbp(ct.measure(truth)))
    mri = MRI((1, 16, 16), acceleration=4, noise_std=0.0)
    assert mri.baseline(mri.measure(truth))[0] == "zero-filled"
    mask = Masking((1, 16, 16), fraction=0.5, noise_std=0.0)
    assert mask.baseline(mask.measure(truth))[0] == "biharmonic"
    colour = smooth_image(16, 16, channels=3).float()
    gray = Grayscale((3, 16, 16), weights="luma", noise_std=0.0)
    label, x = gray.baseline(gray.measure(colour))
    assert label == "gray replicated" and x.shape == colour.shape
    torch.testing.assert_close(gray(x), gray.measure(colour))
    label, x = (mri @ mask).baseline((mri @ mask).measure(truth))
    assert label == "pseudo-inverse" and x.shape == truth.shape
    from invdiff.core.operator import Operator

    assert Operator.baseline(ct, ct.measure(truth)) is None  # a non-linear plugin's default
