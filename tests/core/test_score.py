"""Score functions: the Gaussian score in closed form, Tweedie, and the network wrapper."""

from __future__ import annotations

import pytest
import torch

from invdiff.core.nets import UNetConfig, build_unet
from invdiff.core.score import ClippedScore, GaussianScore, ScoreFn, ScoreModel, tweedie
from invdiff.core.sde import VESDE, VPSDE, SubVPSDE

D64 = torch.float64


def _gaussian(gen, d=3):
    a = torch.randn(d, d, generator=gen, dtype=D64)
    return torch.randn(d, generator=gen, dtype=D64), a @ a.T / d + 0.1 * torch.eye(d, dtype=D64)


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE(), SubVPSDE()], ids=lambda s: s.name)
def test_gaussian_score_is_the_gradient_of_the_log_density(sde, gen):
    mean, cov = _gaussian(gen)
    fn = GaussianScore(sde, mean, cov)
    assert isinstance(fn, ScoreFn)
    t = torch.tensor([0.01, 0.3, 0.9], dtype=D64)
    x = torch.randn(3, 3, generator=gen, dtype=D64).requires_grad_(True)
    alpha, _ = sde.coefficients(t)
    dist = torch.distributions.MultivariateNormal(alpha[:, None] * mean, fn.marginal_cov(t))
    (grad,) = torch.autograd.grad(dist.log_prob(x).sum(), x)
    torch.testing.assert_close(fn.score(x.detach(), t), grad)


def test_tweedie_gives_the_gaussian_posterior_mean(gen):
    sde = VPSDE()
    mean, cov = _gaussian(gen)
    fn = GaussianScore(sde, mean, cov)
    t = torch.full((4,), 0.4, dtype=D64)
    x = torch.randn(4, 3, generator=gen, dtype=D64)
    alpha, _ = sde.coefficients(t)
    # E[x0 | xt] = m + alpha C Sigma_t^{-1} (xt - alpha m)
    sig = fn.marginal_cov(t)
    r = torch.linalg.solve(sig, (x - alpha[:, None] * mean).unsqueeze(-1)).squeeze(-1)
    expected = mean + alpha[:, None] * r @ cov
    torch.testing.assert_close(tweedie(sde, x, t, fn.score(x, t)), expected)


@pytest.mark.parametrize("channels,size", [(1, 32), (3, 32), (1, 64), (3, 128)])
def test_unet_shapes(channels, size, gen):
    cfg = UNetConfig(channels=channels, base=8, mult=(1, 2, 2), attn_resolutions=(size // 4,))
    net = build_unet(cfg, size)
    x = torch.randn(2, channels, size, size, generator=gen)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_unet_256_and_bad_sizes(gen):
    cfg = UNetConfig(channels=1, base=4, mult=(1, 1, 1, 1, 1))
    net = build_unet(cfg, 256)
    x = torch.randn(1, 1, 256, 256, generator=gen)
    assert net(x, torch.zeros(1)).shape == x.shape
    with pytest.raises(ValueError):
        build_unet(UNetConfig(mult=(1, 2, 2)), 30)  # not divisible by 4


def test_score_model_converts_noise_prediction_to_score(gen):
    sde = VESDE(0.01, 5.0)
    model = ScoreModel(build_unet(UNetConfig(base=8, mult=(1, 2)), 16), sde, sigma_data=0.3)
    x = torch.randn(2, 1, 16, 16, generator=gen)
    t = torch.tensor([0.2, 0.7])
    _, sigma = sde.coefficients(t)
    with torch.no_grad():
        torch.testing.assert_close(model.score(x, t), -model(x, t) / sigma[:, None, None, None])


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE()], ids=lambda s: s.name)
def test_clipped_score_clips_exactly_the_denoised_estimate(sde, gen):
    mean, cov = _gaussian(gen)
    prior = GaussianScore(sde, mean, cov)
    clipped = ClippedScore(prior, sde, -0.5, 0.5)
    t = torch.tensor([0.05, 0.3, 0.6, 0.9], dtype=D64)
    x = 2 * torch.randn(4, 3, generator=gen, dtype=D64)
    x0 = tweedie(sde, x, t, prior.score(x, t))
    x0c = tweedie(sde, x, t, clipped.score(x, t))
    torch.testing.assert_close(x0c, x0.clamp(-0.5, 0.5))
    inside = x0.abs() < 0.5  # per coordinate: the clip acts elementwise
    assert inside.any() and (~inside).any()  # both cases are exercised
    torch.testing.assert_close(clipped.score(x, t)[inside], prior.score(x, t)[inside])
