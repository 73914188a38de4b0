"""Data-consistency steps (the PC loop's project hook) and predictor steps that carry their own
guidance (DPS, DiffPIR)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from invdiff.guidance.posteriors import Measurement
from invdiff.linalg import conjugate_gradient
from invdiff.operator import real_inner
from invdiff.samplers import (
    ancestral_mean,
    time_vector,
)
from invdiff.score import tweedie
from invdiff.sde import SDE, bc, randn

# Data-consistency steps (the PC loop's project hook) -------------------------------------------


def projection_hook(
    measurements: Sequence[Measurement],
    sde: SDE,
    generators: Sequence[torch.Generator],
    lam: float,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Return project(x, t) of Song, Shen, Xing, Ermon (ICLR 2022, Sec. 3).

    Their step x' = T^{-1}[lam Lambda y_t + (1 - lam) Lambda T x + (I - Lambda) T x] with
    y_t = alpha_t y + sigma_t A z: measured coefficients are blended towards the diffused
    measurement, unmeasured ones left alone. ``op.project(x, y_t, lam)`` = x + lam A^+(y_t - A x)
    is exactly this for masks and MRI (exact pseudo-inverse), approximately for CT (FBP).
    """
    for m in measurements:
        if not 0.0 <= lam * m.weight <= 1.0:
            raise ValueError(f"lam * weight must lie in [0, 1], got {lam} * {m.weight}")

    def project(x: Tensor, t: Tensor) -> Tensor:
        for m in measurements:
            x = m.op.project(x, m.noised(t, sde, generators), lam * m.weight)
        return x

    return project


def hard_projection(x: Tensor, measurements: Sequence[Measurement]) -> Tensor:
    """Return x + A^+(y - A x) for each measurement in turn: A x = y on exact pseudo-inverses."""
    for m in measurements:
        x = m.op.project(x, m.y, 1.0)
    return x


# Predictor steps that carry their own guidance -------------------------------------------------


def dps_step(x, t, s, *, sde, score, generators, measurements, zeta: float = 1.0):
    """Diffusion posterior sampling step (Chung et al., ICLR 2023, Alg. 1, lines 3-10).

    One network evaluation gives the Tweedie estimate x0 = E[x_0 | x_t] used both for the
    ancestral step to s and for the measurement gradient:

        x_s = ancestral(x_t, x0) - zeta * grad_{x_t} sum_k w_k ||y_k - A_k(x0(x_t))||_2.

    Norm convention: the gradient of the plain (not squared) Euclidean norm, as in the authors'
    code; this equals Alg. 1's zeta_i grad ||y - A(x0)||^2 with zeta_i = zeta / (2 ||y - A(x0)||).
    Works for non-linear operators (autograd through A); one VJP per step.
    """
    tt = time_vector(t, x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = tweedie(sde, xg, tt, score.score(xg, tt))
        tiny = torch.finfo(x.dtype).tiny
        loss = 0.0
        for m in measurements:
            r = m.y - m.op(x0)
            loss = loss + m.weight * real_inner(r, r).clamp_min(tiny).sqrt()
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    x_mean, std = ancestral_mean(x, x0.detach(), t, s, sde=sde)
    x_mean = x_mean - zeta * grad
    return x_mean + bc(std, x) * randn(generators, x.shape[1:], x), x_mean


def data_proximal(
    x0: Tensor, measurements: Sequence[Measurement], rho: Tensor, iters: int
) -> Tensor:
    """Return argmin_x sum_k w_k ||y_k - A_k x||^2 / s_k^2 + rho ||x - x0||^2 by CG from x0."""
    ms = measurements
    precisions = [m.precision() for m in ms]

    def normal(d: list[Tensor]) -> list[Tensor]:
        ata = sum(p * m.op.adjoint(m.op(d[0])) for m, p in zip(ms, precisions, strict=True))
        return [ata + bc(rho, d[0]) * d[0]]

    rhs = sum(p * m.op.adjoint(m.y - m.op(x0)) for m, p in zip(ms, precisions, strict=True))
    return x0 + conjugate_gradient(normal, [rhs], iters)[0]


def diffpir_step(
    x,
    t,
    s,
    *,
    sde,
    score,
    generators,
    measurements,
    lam: float = 7.0,
    zeta: float = 0.3,
    cg_iters: int = 10,
):
    """DiffPIR step (Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image
    Restoration", CVPR Workshops 2023, Alg. 1).

    Denoise, solve the data subproblem, re-noise:
      x0 = Tweedie(x_t);  x0 <- argmin sum_k w_k ||y_k - A_k x||^2 / s_k^2 + rho_t ||x - x0||^2
      with rho_t = lam / sigmabar_t^2, sigmabar_t = sigma_t / alpha_t (their rho_t =
      lam s^2 / sigmabar_t^2 after multiplying through by s^2);
      eps = (x_t - alpha_t x0) / sigma_t;  x_s = alpha_s x0 + sigma_s (sqrt(1 - zeta) eps +
      sqrt(zeta) z). One NFE per step; the data subproblem costs operator calls only.
    """
    tt, ss = time_vector(t, x), time_vector(s, x)
    alpha_t, sigma_t = sde.coefficients(tt)
    alpha_s, sigma_s = sde.coefficients(ss)
    x0 = tweedie(sde, x, tt, score.score(x, tt))
    x0 = data_proximal(x0, measurements, lam * (alpha_t / sigma_t) ** 2, cg_iters)
    eps = (x - bc(alpha_t, x) * x0) / bc(sigma_t, x)
    x_mean = bc(alpha_s, x) * x0 + bc(sigma_s * (1 - zeta) ** 0.5, x) * eps
    z = randn(generators, x.shape[1:], x)
    return x_mean + bc(sigma_s * zeta**0.5, x) * z, x_mean
