"""Score functions: the one thing every sampler consumes.

A ScoreFn maps (x_t, t) to grad_x log p_t(x_t). A trained network (:class:`ScoreModel`), the closed
form score of a Gaussian (:class:`GaussianScore`) and, later, posterior scores are all ScoreFns.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from invdiff.core.nets import UNet
from invdiff.core.sde import SDE, bc


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


PRECONDITIONINGS = ("eps", "edm")


class ScoreModel(nn.Module):
    """Wrap a network into a score for its SDE: the one place where network output becomes a score.

    With x_t = alpha_t x_0 + sigma_t z, write x~ = x_t / alpha_t, which carries noise
    s = sigma_t / alpha_t, and let the network see c_in x~ with c_in = 1 / sqrt(s_d^2 + s^2) and
    c_noise = log(s) / 4 (Karras et al. 2022, Table 1; s_d = ``sigma_data``). Two outputs:

    - ``precond="eps"``: the network predicts z, so D = x~ - s z_hat and score = -z_hat / sigma_t;
      training with ||z_hat - z||^2 is denoising score matching with the sigma^2 weighting (Song et
      al. 2021, eq. 7 with lambda(t) = sigma_t^2).
    - ``precond="edm"``: D = c_skip x~ + c_out F with c_skip = s_d^2 / (s^2 + s_d^2) and c_out =
      s s_d / sqrt(s^2 + s_d^2) (Karras et al. 2022, eq. 7 and Table 1); the training target of F
      is (x_0 - c_skip x~) / c_out, i.e. the loss lambda(s) ||D - x_0||^2 with lambda = 1 / c_out^2
      (their eq. 8). The network's error no longer grows with s at high noise.

    In both cases score = (alpha_t D - x_t) / sigma_t^2 (Tweedie). Images whose sides are not
    multiples of the network's downsampling factor are reflect-padded and cropped back.
    """

    def __init__(self, net: UNet, sde: SDE, sigma_data: float = 0.5, precond: str = "eps") -> None:
        super().__init__()
        if precond not in PRECONDITIONINGS:
            raise ValueError(f"unknown preconditioning {precond!r}; use one of {PRECONDITIONINGS}")
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)
        self.precond = precond

    def to_channels_last(self, enabled: bool = True) -> ScoreModel:
        """Store the convolution weights in NHWC memory layout (oneDNN's preferred one; the
        convolutions then run NHWC whatever the input's layout), or back in NCHW with
        ``enabled=False``. Outputs are NCHW either way and differ by float round-off only. On our
        2-core CPU NHWC made score calls 1.2 to 1.5x faster at 64 to 512 px, batch 1 and 8
        (benchmarks/bench_network.py, results/network.md); :func:`load_model` turns it on for
        CPU models (not measured on a GPU)."""
        self.net.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def _scales(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.sde.coefficients(t)
        return alpha, sigma / alpha

    def _net(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """Run the network, reflect-padding H and W up to a multiple of its downsampling."""
        k = self.net.config.downsampling
        h, w = x.shape[-2:]
        ph, pw = -h % k, -w % k
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
        return self.net(x, c_noise)[..., :h, :w].contiguous()  # NCHW out, even from NHWC weights

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Return the raw network output (z_hat or F), what training compares with
        :meth:`target`; DistributedDataParallel wraps this."""
        alpha, s = self._scales(t)
        c_in = torch.rsqrt(self.sigma_data**2 + s**2)
        return self._net(x / bc(alpha, x) * bc(c_in, x), 0.25 * torch.log(s))

    def target(self, x0: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Return what :meth:`forward` should output for x_t = alpha_t x_0 + sigma_t z."""
        if self.precond == "eps":
            return z
        _, s = self._scales(t)
        c_skip, c_out = self._skip_out(s)
        xs = x0 + bc(s, x0) * z  # x~ = x_t / alpha_t
        return (x0 - bc(c_skip, x0) * xs) / bc(c_out, x0)

    def _skip_out(self, s: Tensor) -> tuple[Tensor, Tensor]:
        d2 = self.sigma_data**2
        return d2 / (s**2 + d2), s * self.sigma_data * torch.rsqrt(s**2 + d2)

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Return D(x_t) = E[x_0 | x_t] as the network estimates it."""
        alpha, s = self._scales(t)
        out, xs = self(x, t), x / bc(alpha, x)
        if self.precond == "eps":
            return xs - bc(s, x) * out
        c_skip, c_out = self._skip_out(s)
        return bc(c_skip, x) * xs + bc(c_out, x) * out

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """Return the predicted normalised noise z_hat(x_t, t)."""
        if self.precond == "eps":
            return self(x, t)
        alpha, s = self._scales(t)
        return (x / bc(alpha, x) - self.denoise(x, t)) / bc(s, x)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        _, sigma = self.sde.coefficients(t)
        return -self.eps(x, t) / bc(sigma, x)


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
