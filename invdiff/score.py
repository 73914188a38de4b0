"""Score functions: the one thing every sampler consumes.

A ScoreFn maps (x_t, t) to grad_x log p_t(x_t). A trained network (:class:`ScoreModel`), the closed
form score of a Gaussian (:class:`GaussianScore`) and, later, posterior scores are all ScoreFns.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from invdiff.nets import UNet
from invdiff.sde import SDE, bc


@runtime_checkable
class ScoreFn(Protocol):
    """Anything with ``score(x, t) -> Tensor`` (same shape as x); t has shape (B,)."""

    def score(self, x: Tensor, t: Tensor) -> Tensor: ...


def tweedie(sde: SDE, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
    """Return E[x_0 | x_t] = (x_t + sigma_t^2 score) / alpha_t (Tweedie's formula; Efron 2011)."""
    alpha, sigma = sde.coefficients(t)
    return (x + bc(sigma**2, x) * score) / bc(alpha, x)


class ClippedScore:
    """A prior score whose denoised estimate is clipped to the data range.

    score'(x, t) = (alpha_t clip(x0_hat, lo, hi) - x) / sigma_t^2 with x0_hat the Tweedie estimate
    of ``prior``: the score of the Gaussian p(x_t | x_0 = clip(x0_hat)). This is DDPM's clipping
    of the predicted x_0 during sampling (Ho et al., NeurIPS 2020, their code's clip_denoised;
    "static thresholding" in Saharia et al., NeurIPS 2022, Sec. 2.3), written for any SDE. The
    images of the model live in [lo, hi], so the clip only removes the part of x0_hat no image can
    have. Why it matters here: with noise prediction, an error d in z_hat at noise level sigma
    moves x0_hat by sigma d, and a reverse VE run accumulates about 2 sigma_max d of drift; a small
    bias at high noise sends whole samples out of range (measured on the shipped models: without
    the clip 3 of 8 phantom samples came out empty and RGB samples spanned [-2.5, 2.8]; see
    BENCHMARKS.md).
    """

    def __init__(self, prior: ScoreFn, sde: SDE, lo: float = 0.0, hi: float = 1.0) -> None:
        self.prior, self.sde, self.lo, self.hi = prior, sde, float(lo), float(hi)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.sde.coefficients(t)
        x0 = tweedie(self.sde, x, t, self.prior.score(x, t)).clamp(self.lo, self.hi)
        return (bc(alpha, x) * x0 - x) / bc(sigma**2, x)


def data_range_prior(model: ScoreModel, config: dict, clip: bool = True) -> ScoreFn:
    """Return ``model`` or, when ``clip``, its :class:`ClippedScore` on the checkpoint's range."""
    if not clip:
        return model
    lo, hi = config.get("image", {}).get("range", (0.0, 1.0))
    return ClippedScore(model, model.sde, lo, hi)


class ScoreModel(nn.Module):
    """Wrap a noise-predicting network into a score for its SDE.

    The single place where network output becomes a score: with x_t = alpha_t x_0 + sigma_t z the
    network sees x_t scaled to unit variance, c_in x_t with c_in = 1 / sqrt(alpha_t^2 s_d^2 +
    sigma_t^2) (Karras et al. 2022, Table 1), and the log noise-to-signal ratio, and predicts z;
    then score = -z_hat / sigma_t. Training with ||z_hat - z||^2 is denoising score matching
    with the sigma^2 weighting (Song et al. 2021, eq. 7 with lambda(t) = sigma_t^2).
    """

    def __init__(self, net: UNet, sde: SDE, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """Return the predicted normalised noise z_hat(x_t, t)."""
        alpha, sigma = self.sde.coefficients(t)
        c_in = torch.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2)
        c_noise = 0.25 * torch.log(sigma / alpha)
        return self.net(x * bc(c_in, x), c_noise)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        _, sigma = self.sde.coefficients(t)
        return -self.eps(x, t) / bc(sigma, x)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Return z_hat: the training target, so DistributedDataParallel can wrap the model."""
        return self.eps(x, t)


class GaussianScore:
    """Exact score of p_t when x_0 ~ N(mean, cov) on flattened vectors of dimension d.

    x_t ~ N(alpha_t mean, alpha_t^2 cov + sigma_t^2 I), so score = -Sigma_t^{-1} (x - alpha_t mean).
    """

    def __init__(self, sde: SDE, mean: Tensor, cov: Tensor) -> None:
        self.sde, self.mean, self.cov = sde, mean, cov

    def marginal_cov(self, t: Tensor) -> Tensor:
        """Return Sigma_t for each t, shape (B, d, d)."""
        alpha, sigma = self.sde.coefficients(t)
        eye = torch.eye(len(self.mean), dtype=self.cov.dtype, device=self.cov.device)
        return alpha[:, None, None] ** 2 * self.cov + sigma[:, None, None] ** 2 * eye

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, _ = self.sde.coefficients(t)
        r = x.flatten(1) - alpha[:, None] * self.mean
        s = -torch.linalg.solve(self.marginal_cov(t), r.unsqueeze(-1)).squeeze(-1)
        return s.reshape(x.shape)
