"""Score SDEs of Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021.

Every SDE here is linear in x with x-independent diffusion, dx = f(t) x dt + g(t) dw, so its
marginal is Gaussian, x_t = alpha_t x_0 + sigma_t z (eqs. 29-33 of the paper), and the transition
from s < t is Gaussian too: x_t = a x_s + sqrt(sigma_t^2 - a^2 sigma_s^2) z, a = alpha_t / alpha_s.
The base class derives the exact discretisation, prior and reverse drifts from ``coefficients`` and
``drift_diffusion``; subclasses state only their schedules.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from invdiff.core.linalg import bc

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "bc", "randn", "sde_from_config"]


def randn(generators: Sequence[torch.Generator], shape: Sequence[int], like: Tensor) -> Tensor:
    """Draw one standard normal tensor of ``shape`` per generator and stack them (B, *shape).

    Sample k uses generators[k] alone, so its noise does not depend on the batch it is in.
    """
    return torch.stack(
        [
            torch.randn(tuple(shape), generator=g, device=like.device, dtype=like.dtype)
            for g in generators
        ]
    )


class SDE(ABC):
    """A forward SDE dx = f(t) x dt + g(t) dw on t in [0, 1] with Gaussian marginals."""

    name: str = ""
    t_min: float = 1e-5  # smallest time the samplers integrate to (the paper's epsilon)

    @abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return (alpha_t, sigma_t) of the marginal x_t = alpha_t x_0 + sigma_t z."""

    @abstractmethod
    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return the drift f(x, t) (shaped like x) and the diffusion g(t) (shape (B,))."""

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Return the standard deviation of the prior N(0, prior_std^2 I) at t = 1."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Return the keyword arguments that rebuild this SDE (with ``name``)."""

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return the mean (shaped like x0) and std (B,) of p_t(x_t | x_0)."""
        alpha, sigma = self.coefficients(t)
        return bc(alpha, x0) * x0, sigma

    def time_of_ratio(self, ratio: Tensor, iters: int = 60) -> Tensor:
        """Return t in [t_min, 1] with sigma_t / alpha_t = ratio, clamped at the ends.

        The noise-to-signal ratio increases with t for every SDE here, so bisection finds it;
        used to draw training times from a distribution over noise levels (Karras et al. 2022).
        """
        lo = torch.full_like(ratio, self.t_min, dtype=torch.float64)
        hi = torch.ones_like(lo)
        target = ratio.double()
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            alpha, sigma = self.coefficients(mid)
            above = sigma / alpha > target
            hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
        return (0.5 * (lo + hi)).to(ratio.dtype)

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return (a, v): x_t = a x_s + sqrt(v) z exactly, for s <= t."""
        alpha_s, sigma_s = self.coefficients(s)
        alpha_t, sigma_t = self.coefficients(t)
        a = alpha_t / alpha_s
        return a, (sigma_t**2 - a**2 * sigma_s**2).clamp_min(0.0)

    def discretize(self, x: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Return (f, G) of the forward chain x_t = x_s + f + G z with s < t, evaluated at x.

        The exact Gaussian transition: for VE this is SMLD's sqrt(sigma_t^2 - sigma_s^2), for VP
        DDPM's beta = 1 - alpha_t^2 / alpha_s^2 (Song et al. 2021, Appendix E, eqs. 46-47).
        """
        a, v = self.transition(s, t)
        return (bc(a, x) - 1.0) * x, v.sqrt()

    def prior_sample(
        self, shape: Sequence[int], generators: Sequence[torch.Generator], like: Tensor
    ) -> Tensor:
        """Draw x_1 ~ N(0, prior_std^2 I), one generator per sample; ``shape`` excludes batch."""
        return self.prior_std * randn(generators, shape, like)

    def prior_logp(self, z: Tensor) -> Tensor:
        """Return log N(z; 0, prior_std^2 I) per sample."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor, ode: bool = False) -> Tensor:
        """Return the drift of the reverse SDE f - g^2 score, or of the probability-flow ODE
        f - g^2 score / 2 (Song et al. 2021, eqs. 6 and 13)."""
        f, g = self.drift_diffusion(x, t)
        return f - bc(g**2, x) * score * (0.5 if ode else 1.0)


class VESDE(SDE):
    """Variance exploding: sigma(t) = sigma_min (sigma_max / sigma_min)^t (SMLD, eq. 30).

    The marginal std is sigma(t) itself, as in the paper: x_0 is taken to carry sigma_min of noise.
    """

    name = "ve"
    t_min = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class VPSDE(SDE):
    """Variance preserving: beta(t) = beta_min + t (beta_max - beta_min) (DDPM, eqs. 32-33)."""

    name = "vp"
    t_min = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError("need 0 < beta_min < beta_max")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        """Return log alpha_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        la = self.log_alpha(t)
        return la.exp(), (-torch.expm1(2 * la)).sqrt()

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * bc(beta, x) * x, beta.sqrt()

    @property
    def prior_std(self) -> float:
        return 1.0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


class SubVPSDE(VPSDE):
    """Sub-VP: VP's drift, g(t)^2 = beta(t) (1 - alpha_t^4), so sigma_t = 1 - alpha_t^2 (eq. 34)."""

    name = "subvp"
    t_min = 1e-3

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        la = self.log_alpha(t)
        return la.exp(), -torch.expm1(2 * la)

    def drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        g2 = beta * (-torch.expm1(4 * self.log_alpha(t)))
        return -0.5 * bc(beta, x) * x, g2.sqrt()


SDES: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def sde_from_config(config: dict[str, Any]) -> SDE:
    """Rebuild an SDE from :meth:`SDE.config`."""
    config = dict(config)
    name = config.pop("name")
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; expected one of {sorted(SDES)}")
    return SDES[name](**config)


def max_pairwise_distance(images: Tensor, max_images: int = 2000) -> float:
    """Return the largest Euclidean distance between two training images.

    Song & Ermon 2020 (Technique 1) choose the VE sigma_max as this distance.
    """
    flat = images[:max_images].flatten(1).double()
    return float(torch.cdist(flat, flat).max())
