"""Data-consistency steps (the PC loop's project hook) and predictor steps that carry their own
guidance (DPS, DiffPIR)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from invdiff.core.linalg import conjugate_gradient, image_gradient, image_gradient_adjoint
from invdiff.core.operator import real_inner
from invdiff.core.samplers import (
    ancestral_mean,
    time_vector,
)
from invdiff.core.score import tweedie
from invdiff.core.sde import SDE, bc, randn
from invdiff.guidance.posteriors import Measurement

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


#: Finite-difference step of :func:`likelihood_step`'s curvature, as an RMS change per pixel in
#: image units (the priors' images live in [0, 1]).
CURVATURE_STEP = 1e-3


def likelihood_step(x0: Tensor, measurements: Sequence[Measurement]) -> Tensor:
    """Return d = g / c, the normalised data step on the denoised estimate x0 (B, C, H, W).

    With l_k(x) = -log p(y_k | x) (each operator's ``log_likelihood``; see
    :meth:`Measurement.negative_log_likelihood`) and g = grad sum_k w_k l_k(x0), c is the
    curvature of the unweighted sum along g, c = u^T H u with u = g / ||g|| and H the Hessian of
    sum_k l_k at x0, from a forward difference of gradients (one more gradient of the operators,
    none of the network). x0 - d minimises the local quadratic model along -g: the step of
    steepest descent with exact line search, alpha = g^T g / g^T H g (Nocedal & Wright,
    "Numerical Optimization", 2nd ed., Sec. 3.3; the Cauchy point of Sec. 4.1 with the trust
    region inactive).

    For y = A x + s n, g = A^T (A x0 - y) / s^2 and c = ||A u||^2 / s^2: the scale of A and y,
    and s, cancel, and on a mask or MRI d replaces the measured coefficients of x0 by y. Weights
    act relative to each other and to 1 (the curvature is unweighted), so one measurement of
    weight w takes w times the step. Per sample; d = 0 where g = 0 or c = 0, and |c| is used
    where the negative log-likelihood curves downwards along g (c < 0).
    """
    with torch.enable_grad():
        xa = x0.detach().requires_grad_(True)
        grads = [
            torch.autograd.grad(m.negative_log_likelihood(xa).sum(), xa)[0] for m in measurements
        ]
        g = sum(m.weight * gk for m, gk in zip(measurements, grads, strict=True))
        size = g.flatten(1).norm(dim=1)
        u = g / bc(size.clamp_min(torch.finfo(g.dtype).tiny), g)
        h = CURVATURE_STEP * math.sqrt(g[0].numel())
        xb = (x0.detach() + h * u).requires_grad_(True)
        nll = sum(m.negative_log_likelihood(xb) for m in measurements)
        (gb,) = torch.autograd.grad(nll.sum(), xb)
    curvature = (real_inner(u, gb - sum(grads)) / h).abs()
    ok = (size > 0) & (curvature > 0) & torch.isfinite(curvature)
    scale = torch.where(ok, 1.0 / torch.where(ok, curvature, 1.0), 0.0)
    return bc(scale, g) * g


def dps_step(x, t, s, *, sde, score, generators, measurements, zeta: float = 1.0):
    """Diffusion posterior sampling step (Chung et al., ICLR 2023, Alg. 1 and 2, lines 3-10),
    with a step size normalised so that one zeta serves every operator.

    One network evaluation gives the Tweedie estimate x0 = E[x_0 | x_t] used both for the
    ancestral step to s and for the measurement gradient:

        x_s = ancestral(x_t, x0) - zeta * (dx0 / dx_t)^T d(x0),

    with d = g / c of :func:`likelihood_step`, g the gradient of sum_k -w_k log p(y_k | x0) in x0.
    Chung et al. approximate grad log p(y | x_t) by grad_{x_t} log p(y | x0(x_t)) (Sec. 3.2;
    Gaussian noise: -grad ||y - A(x0)||^2 / s^2) and replace the 1 / s^2 by a step
    zeta_i = zeta' / ||y - A(x0)|| whose zeta' they tune per task. That step length
    carries the scale of the measurement: ||A^T r|| / ||r|| grows with ||A||, so a zeta' good for
    MRI (||A|| = 1) is far too large for a 64 px sinogram (||A|| of order 50). Here the step is
    instead the Cauchy step of the negative log-likelihood in x0, invariant to scaling A, y, the
    noise std or the log-likelihood itself: zeta = 1 moves x0 to the minimiser of the local
    quadratic model along the gradient (the data for masks and MRI), mapped back to x_t by the
    network's vector-Jacobian product (one per step). Operators may define their own likelihood
    (``log_likelihood``, e.g. Poisson counts); non-linear operators work through autograd.
    The default zeta = 1 was chosen on validation images only (:func:`solve_dps`).
    """
    tt = time_vector(t, x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = tweedie(sde, xg, tt, score.score(xg, tt))
        d = likelihood_step(x0.detach(), measurements)
        (grad,) = torch.autograd.grad(x0, xg, d)
    x_mean, std = ancestral_mean(x, x0.detach(), t, s, sde=sde)
    x_mean = x_mean - zeta * grad
    return x_mean + bc(std, x) * randn(generators, x.shape[1:], x), x_mean


#: ADMM iterations of :func:`data_proximal` with a TV term, sharing its CG budget. A few are
#: needed for the term to act: 3 and 6 moved MRI 4x on the suite's validation images by +0.62
#: and +0.95 dB over no TV (docs/models.md, "Sampler defaults", --tv).
ADMM_ITERS = 4


def data_proximal(
    x0: Tensor,
    measurements: Sequence[Measurement],
    rho: Tensor,
    iters: int,
    rtol: float = 0.0,
    tv: Tensor | float | None = None,
) -> Tensor:
    """Return argmin_x sum_k w_k ||y_k - A_k x||^2 / s_k^2 + rho (||x - x0||^2 + 2 tv TV(x)):
    without TV exactly (up to CG), by CG from x0 (at most ``iters`` iterations, fewer once the
    residual fell by ``rtol``); with TV approximately, by ADMM_ITERS ADMM iterations.

    ``tv`` (None: no TV term; else > 0, image units, a float or one per sample) adds isotropic
    total variation (Rudin,
    Osher, Fatemi 1992) with the weight a TV denoiser of x0 would use (scikit-image's convention,
    1/2 ||x - x0||^2 + tv TV(x)), solved by ADMM on the split z = D x (Boyd et al., "Distributed
    optimization and statistical learning via ADMM", 2011, Sec. 6.4.1, with penalty rho):
    x-update by CG on (sum_k p_k A_k^T A_k + rho I + rho D^T D) x = sum_k p_k A_k^T y_k + rho x0 +
    rho D^T (z - u), z-update by soft-thresholding |D x + u| per pixel by ``tv``, u += D x - z;
    ADMM_ITERS iterations from z = D x0, u = 0, splitting the ``iters`` CG iterations among them
    (each also evaluates the data residual once). It is the TV-augmented
    data step with which Chung, Ryu, McCann, Klasky, Ye ("Solving 3D inverse problems using
    pre-trained 2D diffusion models", CVPR 2023) couple a diffusion prior to a global sparsity
    prior (their TV is along z; here in the image plane).
    """
    ms = measurements
    precisions = [m.precision() for m in ms]
    with_tv = tv is not None
    pen = bc(rho, x0)

    def normal(d: list[Tensor]) -> list[Tensor]:
        ata = sum(p * m.op.adjoint(m.op(d[0])) for m, p in zip(ms, precisions, strict=True))
        out = ata + pen * d[0]
        return [out + pen * image_gradient_adjoint(image_gradient(d[0])) if with_tv else out]

    def data_residual(x: Tensor) -> Tensor:  # minus the data term's gradient, halved
        return sum(p * m.op.adjoint(m.y - m.op(x)) for m, p in zip(ms, precisions, strict=True))

    if not with_tv:
        return x0 + conjugate_gradient(normal, [data_residual(x0)], iters, rtol)[0]
    thresh = bc(torch.as_tensor(tv, dtype=x0.dtype, device=x0.device).expand(len(x0)), x0)
    x, z = x0, image_gradient(x0)
    u = torch.zeros_like(z)
    for i in range(ADMM_ITERS):  # x-update: CG on the normal equations' residual at x
        dx = z - u - image_gradient(x)
        rhs = data_residual(x) + pen * (x0 - x + image_gradient_adjoint(dx))
        budget = iters // ADMM_ITERS + (i < iters % ADMM_ITERS)
        x = x + conjugate_gradient(normal, [rhs], budget, rtol)[0]
        v = image_gradient(x) + u
        size = v.norm(dim=0, keepdim=True)
        z = v * (1 - thresh / size.clamp_min(torch.finfo(v.dtype).tiny)).clamp_min(0)
        u = v - z
    return x


def inflated_tweedie(sde: SDE, score, x: Tensor, t: Tensor, kappa: float = 1.0) -> Tensor:
    """Return the denoised estimate of x_t, the denoiser told that the noise-to-signal ratio is
    kappa x sigma_t / alpha_t (kappa 1: plain Tweedie).

    A sampler's state is not exactly x_0 + noise at its nominal level: what earlier steps got
    wrong is left in it (the exposure bias of Ning et al., "Elucidating the exposure bias in
    diffusion models", ICLR 2024). Li, Qu, Yao, Sun, Moens ("Alleviating exposure bias in
    diffusion models through sampling with shifted time steps", ICLR 2024) therefore evaluate
    the network at a later time step whose noise level matches the state's actual variance;
    here the shift is a fixed factor on the noise level. The state is rescaled to that time
    (x_t / alpha_t x alpha_t'), which leaves VE states as they are.
    """
    if kappa == 1:
        return tweedie(sde, x, t, score.score(x, t))
    alpha, sigma = sde.coefficients(t)
    t2 = sde.time_of_ratio(kappa * sigma.double() / alpha.double()).to(t)
    alpha2, _ = sde.coefficients(t2)
    x2 = x * bc(alpha2 / alpha, x)
    return tweedie(sde, x2, t2, score.score(x2, t2))


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
    cg_rtol: float = 0.0,
    tv: float = 0.0,
    kappa: float = 1.0,
    relax: float = 1.0,
):
    """DiffPIR step (Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image
    Restoration", CVPR Workshops 2023, Alg. 1).

    Denoise, solve the data subproblem, re-noise:
      x0 = Tweedie(x_t);  x0 <- argmin sum_k w_k ||y_k - A_k x||^2 / s_k^2 + rho_t ||x - x0||^2
      with rho_t = lam / sigmabar_t^2, sigmabar_t = sigma_t / alpha_t (their rho_t =
      lam s^2 / sigmabar_t^2 after multiplying through by s^2);
      eps = (x_t - alpha_t x0) / sigma_t;  x_s = alpha_s x0 + sigma_s (sqrt(1 - zeta) eps +
      sqrt(zeta) z). One NFE per step; the data subproblem costs operator calls only.

    ``tv`` > 0 adds a total-variation term to the data subproblem with the weight of a TV
    denoiser at tv x sigmabar_t (:func:`data_proximal`): strong while the estimate is noisy,
    vanishing as it sharpens; it lends the local prior TV's global preference for sparse edges.

    ``kappa`` > 1 denoises as if the noise level were kappa x sigmabar_t (:func:`inflated_tweedie`):
    x_t is the last data-consistent estimate plus fresh noise, so it also carries that
    estimate's own error, which the denoiser should remove with the noise.

    ``relax`` in (0, 2] over-relaxes the data step: x0 <- x0 + relax (prox(x0) - x0), the relaxed
    projection T = I + lambda (P - I), 0 < lambda < 2, of Youla & Webb ("Image restoration by the
    method of convex projections: part 1", IEEE TMI 1982) and the over-relaxation of
    Douglas-Rachford / ADMM (Eckstein & Bertsekas, Math. Programming 55, 1992). 1 is DiffPIR's
    step; more than 1 steps past the data's minimiser, so fewer denoise / data alternations reach
    the same agreement with the data.
    """
    tt, ss = time_vector(t, x), time_vector(s, x)
    alpha_t, sigma_t = sde.coefficients(tt)
    alpha_s, sigma_s = sde.coefficients(ss)
    x0 = inflated_tweedie(sde, score, x, tt, kappa)
    rho = lam * (alpha_t / sigma_t) ** 2
    weight = tv * sigma_t / alpha_t if tv > 0 else None
    fitted = data_proximal(x0, measurements, rho, cg_iters, cg_rtol, weight)
    x0 = fitted if relax == 1 else x0 + relax * (fitted - x0)
    eps = (x - bc(alpha_t, x) * x0) / bc(sigma_t, x)
    x_mean = bc(alpha_s, x) * x0 + bc(sigma_s * (1 - zeta) ** 0.5, x) * eps
    z = randn(generators, x.shape[1:], x)
    return x_mean + bc(sigma_s * zeta**0.5, x) * z, x_mean
