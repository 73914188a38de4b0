"""Predictor-corrector samplers and probability-flow ODE solvers (Song et al., ICLR 2021).

Every predictor and corrector is a short function with one signature,

    step(x, t, s, *, sde, score, generators) -> (x, x_mean),

that moves x from time t to s < t (a corrector stays at t, using s only for its step size). Knobs
(snr, number of corrector steps) are bound with ``functools.partial``. :func:`pc_sample` is the one
sampling loop; a ``project`` hook applied before every predictor and corrector step is where
data-consistency steps plug in. Noise comes from one torch.Generator per sample, so sample k
depends only on its own seed, whatever the batch it runs in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from invdiff.core.score import ScoreFn, tweedie
from invdiff.core.sde import SDE, bc, randn

Step = Callable[..., tuple[Tensor, Tensor]]
Project = Callable[[Tensor, Tensor], Tensor]


class CountingScore:
    """Wrap a ScoreFn and count network evaluations (NFE: one per batched call)."""

    def __init__(self, fn: ScoreFn) -> None:
        self.fn, self.nfe = fn, 0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.fn.score(x, t)


def time_vector(t: float | Tensor, x: Tensor) -> Tensor:
    """Return the time t as a per-sample vector (B,) on x's device, in x's dtype."""
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


_full = time_vector


def time_grid(sde: SDE, steps: int, t_start: float = 1.0) -> np.ndarray:
    """Return steps + 1 times from t_start down to sde.t_min, uniformly spaced (Song et al.
    2021; for the VE SDE uniform in t is uniform in log sigma)."""
    return np.linspace(t_start, sde.t_min, steps + 1)


def warm_start(
    sde: SDE,
    start: Tensor,
    sigma: float,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    like: Tensor,
) -> tuple[float, Tensor]:
    """Return (t0, x_t0): ``start`` diffused to the time t0 where sigma_t / alpha_t = ``sigma``.

    Chung, Sim, Ye, "Come-Closer-Diffuse-Faster" (CVPR 2022), eq. 6: x_t0 = alpha_t0 x_init +
    sigma_t0 z. Starting the reverse process there from a classical reconstruction (FBP,
    zero-filled, biharmonic) skips the steps above sigma that only re-create what it already
    holds. ``start`` has batch 1 or len(generators).
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"the start noise level must be a finite number > 0, got {sigma}")
    ratio = torch.tensor([float(sigma)], dtype=torch.float64)
    t0 = float(sde.time_of_ratio(ratio)[0])
    tt = torch.full((1,), t0, dtype=torch.float64)
    alpha, std = (float(v[0]) for v in sde.coefficients(tt))
    z = randn(generators, shape, like)
    return t0, alpha * start.to(z) + std * z


# Predictors ------------------------------------------------------------------------------------


def euler_maruyama(x, t, s, *, sde, score, generators):
    """Euler-Maruyama step of the reverse SDE dx = [f - g^2 score] dt + g dw-bar (eq. 6)."""
    tt = _full(t, x)
    dt = s - t  # negative
    drift = sde.reverse_drift(x, tt, score.score(x, tt))
    _, g = sde.drift_diffusion(x, tt)
    x_mean = x + drift * dt
    return x_mean + bc(g, x) * (-dt) ** 0.5 * randn(generators, x.shape[1:], x), x_mean


def reverse_diffusion(x, t, s, *, sde, score, generators):
    """Reverse-diffusion step x_s = x_t - f + G^2 score + G z (Song et al. 2021, eq. 46)."""
    tt = _full(t, x)
    f, g = sde.discretize(x, tt, _full(s, x))
    x_mean = x - f + bc(g**2, x) * score.score(x, tt)
    return x_mean + bc(g, x) * randn(generators, x.shape[1:], x), x_mean


def ancestral_mean(x, x0, t, s, *, sde):
    """Return the mean and std (B,) of q(x_s | x_t = x, x_0 = x0) (Ho et al. 2020, eqs. 6-7).

    With x_t = a x_s + sqrt(v) z the posterior is Gaussian with mean
    (alpha_s v / sigma_t^2) x0 + (a sigma_s^2 / sigma_t^2) x_t and variance
    v sigma_s^2 / sigma_t^2; for VE it is SMLD's x + (sigma_t^2 - sigma_s^2) score, for VP DDPM's.
    """
    tt, ss = _full(t, x), _full(s, x)
    a, v = sde.transition(ss, tt)
    alpha_s, sigma_s = sde.coefficients(ss)
    _, sigma_t = sde.coefficients(tt)
    x_mean = bc(alpha_s * v / sigma_t**2, x) * x0 + bc(a * sigma_s**2 / sigma_t**2, x) * x
    return x_mean, (v * sigma_s**2 / sigma_t**2).sqrt()


def ancestral(x, t, s, *, sde, score, generators):
    """Ancestral step: sample q(x_s | x_t, x_0 = Tweedie estimate), see :func:`ancestral_mean`."""
    tt = _full(t, x)
    x0 = tweedie(sde, x, tt, score.score(x, tt))
    x_mean, std = ancestral_mean(x, x0, t, s, sde=sde)
    return x_mean + bc(std, x) * randn(generators, x.shape[1:], x), x_mean


def no_step(x, t, s, *, sde, score, generators):
    """Leave x unchanged (corrector-only sampling, or no corrector)."""
    return x, x


# Corrector -------------------------------------------------------------------------------------


def langevin(x, t, s, *, sde, score, generators, snr: float = 0.16, n_steps: int = 1):
    """Langevin corrector with step 2 a (snr ||z|| / ||score||)^2 (Song et al. 2021, Alg. 4-5).

    a = (alpha_t / alpha_s)^2: 1 for VE, DDPM's alpha_i = 1 - beta_i for VP.
    """
    tt, ss = _full(t, x), _full(s, x)
    a = (sde.coefficients(tt)[0] / sde.coefficients(ss)[0]) ** 2
    x_mean = x
    for _ in range(n_steps):
        grad = score.score(x, tt)
        z = randn(generators, x.shape[1:], x)
        ratio = z.flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        eps = 2 * a * (snr * ratio) ** 2
        x_mean = x + bc(eps, x) * grad
        x = x_mean + bc((2 * eps).sqrt(), x) * z
    return x, x_mean


PREDICTORS: dict[str, Step] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": no_step,
}


def make_corrector(name: str, snr: float = 0.16, n_steps: int = 1) -> Step:
    """Return the corrector step ``name`` ('langevin' or 'none') with its knobs bound."""
    if name == "none" or n_steps == 0:
        return no_step
    if name == "langevin":
        return functools.partial(langevin, snr=snr, n_steps=n_steps)
    raise ValueError(f"unknown corrector {name!r}; expected 'langevin' or 'none'")


# The sampling loop -----------------------------------------------------------------------------


@dataclass
class SampleResult:
    """Samples, the network evaluations spent on them (NFE) and the backward passes through
    the network (vector-Jacobian products, VJP; guidance strategies only)."""

    x: Tensor
    nfe: int
    vjp: int = 0


def generators_for(seeds: Sequence[int], device: str | torch.device) -> list[torch.Generator]:
    """Return one generator per seed, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _finish(sde: SDE, counted, x: Tensor, t: float, result: Tensor | None) -> SampleResult:
    """Return the sampler's result: ``result`` when given, else the Tweedie estimate
    E[x_0 | x_t] at the last time t (one more NFE)."""
    if result is None:
        tt = _full(t, x)
        result = tweedie(sde, x, tt, counted.score(x, tt))
    return SampleResult(result, counted.nfe)


@torch.no_grad()
def pc_sample(
    score: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    predictor: Step = reverse_diffusion,
    corrector: Step = no_step,
    steps: int = 500,
    denoise: bool = True,
    project: Project | None = None,
    like: Tensor | None = None,
    callback: Callable[[int], None] | None = None,
    start: tuple[Tensor, float] | None = None,
) -> SampleResult:
    """Run the predictor-corrector loop from the prior at t = 1 to t_min (Song et al., Alg. 1).

    ``shape`` excludes the batch; len(generators) is the batch. ``project(x, t)``, if given, runs
    before every corrector and predictor step. With ``denoise`` the result is the Tweedie estimate
    E[x_0 | x_{t_min}] (one more NFE), else the last predictor mean. ``start = (image, sigma)``
    begins at the noise level sigma from that image instead (:func:`warm_start`).
    """
    like = like if like is not None else torch.empty(0)
    counted = CountingScore(score)
    if start is None:
        t0, x = 1.0, sde.prior_sample(shape, generators, like)
    else:
        t0, x = warm_start(sde, start[0], start[1], shape, generators, like)
    ts = time_grid(sde, steps, t0)
    kw = {"sde": sde, "score": counted, "generators": generators}
    x_mean = x
    for i in range(steps):
        t, s = float(ts[i]), float(ts[i + 1])
        if project is not None and corrector is not no_step:
            x = project(x, _full(t, x))
        x, x_mean = corrector(x, t, s, **kw)
        if project is not None:
            x = project(x, _full(t, x))
        x, x_mean = predictor(x, t, s, **kw)
        if callback is not None:
            callback(i)
    return _finish(sde, counted, x, float(ts[-1]), x_mean if not denoise else None)


@torch.no_grad()
def heun_ode_sample(
    score: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    steps: int = 100,
    denoise: bool = True,
    like: Tensor | None = None,
    callback: Callable[[int], None] | None = None,
) -> SampleResult:
    """Integrate the probability-flow ODE (eq. 13) with Heun's method (Karras et al. 2022, Alg. 1).

    Every step is a Heun step (2 NFE): unlike EDM our grid ends at t_min > 0 where sigma > 0, and a
    final Euler step there biased the variance of a Gaussian by ~10 % at 50 VP steps.
    """
    like = like if like is not None else torch.empty(0)
    counted = CountingScore(score)
    x = sde.prior_sample(shape, generators, like)
    ts = time_grid(sde, steps)

    def velocity(x: Tensor, t: float) -> Tensor:
        tt = _full(t, x)
        return sde.reverse_drift(x, tt, counted.score(x, tt), ode=True)

    for i in range(steps):
        t, s = float(ts[i]), float(ts[i + 1])
        d = velocity(x, t)
        x_euler = x + (s - t) * d
        x = x + (s - t) * 0.5 * (d + velocity(x_euler, s))
        if callback is not None:
            callback(i)
    return _finish(sde, counted, x, float(ts[-1]), None if denoise else x)


@torch.no_grad()
def rk45_ode_sample(
    score: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    denoise: bool = True,
    like: Tensor | None = None,
    callback: Callable[[int], None] | None = None,
) -> SampleResult:
    """Integrate the probability-flow ODE adaptively with scipy's RK45 (Dormand-Prince).

    Each sample is integrated on its own, so its adaptive steps (and result) do not depend on the
    other samples in the batch; NFE is the total over samples.
    """
    from scipy.integrate import solve_ivp

    like = like if like is not None else torch.empty(0)
    counted = CountingScore(score)
    x1 = sde.prior_sample(shape, generators, like)
    out = []
    for k in range(x1.shape[0]):
        xk = x1[k : k + 1]

        def fun(t: float, y: np.ndarray, xk: Tensor = xk) -> np.ndarray:
            x = torch.as_tensor(y, dtype=xk.dtype, device=xk.device).reshape(xk.shape)
            tt = _full(t, x)
            v = sde.reverse_drift(x, tt, counted.score(x, tt), ode=True)
            return v.flatten().double().cpu().numpy()

        y0 = xk.flatten().double().cpu().numpy()
        sol = solve_ivp(fun, (1.0, sde.t_min), y0, method="RK45", rtol=rtol, atol=atol)
        out.append(
            torch.as_tensor(sol.y[:, -1], dtype=xk.dtype, device=xk.device).reshape(xk.shape)
        )
        if callback is not None:
            callback(k)
    x = torch.cat(out)
    return _finish(sde, counted, x, sde.t_min, None if denoise else x)
