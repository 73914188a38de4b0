"""Likelihood scores of measurements: the posterior ScoreFns that wrap a prior score (Bayes' rule
for scores), and the Measurement record they read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.core.linalg import conjugate_gradient, largest_eigenvalue
from invdiff.core.operator import LinearOperator, Operator
from invdiff.core.score import ScoreFn, tweedie
from invdiff.core.sde import SDE, bc, randn


@dataclass(frozen=True)
class Measurement:
    """One measurement y = A(x_0) + noise_std * n of ``op``, with its likelihood weight."""

    op: Operator
    y: Tensor
    weight: float = 1.0

    def precision(self) -> float:
        """Return w / s^2, the weighted noise precision; raise if the measurement is noiseless."""
        if self.op.noise_std <= 0:
            raise ValueError(
                f"{self.op.name}: this strategy needs noise_std > 0; use 'projection' or "
                "'replacement' for noiseless measurements"
            )
        return self.weight / self.op.noise_std**2

    def negative_log_likelihood(self, x: Tensor) -> Tensor:
        """Return -log p(y | x) per sample (B,), from the operator's ``log_likelihood``.

        A noiseless measurement (noise_std = 0) of an operator with the default Gaussian
        likelihood counts as s = 1: its density is degenerate, and DPS's normalised step only needs
        the shape of the log-likelihood, not its scale (give noise_std to weigh several
        measurements against each other).
        """
        if self.op.noise_std <= 0 and self.op.gaussian_likelihood:
            return -self.op.log_likelihood(x, self.y, 1.0)
        return -self.op.log_likelihood(x, self.y)

    def noised(self, t: Tensor, sde: SDE, generators: Sequence[torch.Generator]) -> Tensor:
        """Return y_t = alpha_t y + sigma_t A z, y perturbed like x_t (Song et al. 2022, Sec. 3).

        z is image noise, one draw per generator, so y_t - A x_t has the law of x_t's noise.
        """
        if not isinstance(self.op, LinearOperator):
            raise ValueError(f"{self.op.name}: diffusing y needs a linear operator; use 'dps'")
        alpha, sigma = sde.coefficients(t)
        z = randn(generators, self.op.image_shape, t)
        az = self.op(z)
        return bc(alpha, az) * self.y + bc(sigma, az) * az


def operator_norm_sq(op: LinearOperator, like: Tensor, iters: int = 20) -> Tensor:
    """Return ||A||^2, the largest eigenvalue of A^T A, by power iteration (a 0-d tensor)."""
    apply = lambda v: op.adjoint(op(v))  # noqa: E731
    return largest_eigenvalue(apply, op.image_shape, iters, dtype=like.dtype, device=like.device)


# Likelihood scores (posterior ScoreFns) --------------------------------------------------------


class NoisyLikelihoodPosterior:
    """Prior score plus the likelihood score of y diffused like x (Song et al., ICLR 2021).

    Controllable generation (Sec. 5 and App. I.4): grad log p_t(x_t | y) ~ grad log p_t(x_t) +
    grad log p_t(y_t | x_t) with y_t = alpha_t y + sigma_t A z a fresh draw from p(y_t | y).
    We take p_t(y_t | x_t) = N(A x_t, v_t I), v_t = alpha_t^2 s^2 + sigma_t^2 ||A||^2, the
    variance of y_t - A x_t under a flat prior with A A^T replaced by its largest eigenvalue, so

        grad = w A^T (y_t - A x_t) / v_t,

    which tends to the true likelihood score w A^T (y - A x) / s^2 as t -> 0 and keeps explicit
    steps stable at large t. Approximate for any informative prior.
    """

    def __init__(
        self,
        prior: ScoreFn,
        sde: SDE,
        measurements: Sequence[Measurement],
        generators: Sequence[torch.Generator],
        like: Tensor,
    ) -> None:
        self.prior, self.sde, self.measurements, self.generators = (
            prior,
            sde,
            measurements,
            generators,
        )
        self.norms = [operator_norm_sq(m.op, like) for m in measurements]

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.prior.score(x, t)
        alpha, sigma = self.sde.coefficients(t)
        for m, norm in zip(self.measurements, self.norms, strict=True):
            v = alpha**2 * m.op.noise_std**2 + sigma**2 * norm
            r = m.noised(t, self.sde, self.generators) - m.op(x)
            out = out + bc(m.weight / v, x) * m.op.adjoint(r)
        return out


class MomentPosterior:
    """Prior score plus the likelihood of y under the Gaussian projection of p(x_0 | x_t).

    Tweedie Moment Projected Diffusions (Boys, Girolami, Pidstrigach, Reich, Mosca, Akyildiz,
    TMLR 2024, arXiv:2310.06721), full-covariance form: with m(x_t) = E[x_0 | x_t] (Tweedie) and
    C(x_t) = Cov[x_0 | x_t] = (sigma_t^2 / alpha_t) dm/dx_t (second-order Tweedie),

        p_t(y | x_t) ~ N(y; A m, A C A^T + S),   S = diag(s_k^2 / w_k),
        grad log p_t(y | x_t) ~ (dm/dx_t)^T A^T (A C A^T + S)^{-1} (y - A m),

    the dependence of C on x_t neglected. For a Gaussian prior and linear A, m is affine and C
    constant, so this is the EXACT posterior score. All measurements are stacked into one system
    (they are independent given x_0, not given x_t), solved by at most ``cg_iters`` CG iterations
    (fewer once every sample converged); each iteration is one vector-Jacobian product through the
    network (counted in ``vjp``, which therefore depends on the data and on which samples share a
    batch).
    """

    def __init__(
        self, prior: ScoreFn, sde: SDE, measurements: Sequence[Measurement], cg_iters: int = 20
    ) -> None:
        for m in measurements:
            if not isinstance(m.op, LinearOperator):
                raise ValueError(f"{m.op.name}: 'moment' needs linear operators; use 'dps'")
        self.prior, self.sde, self.measurements, self.cg_iters = prior, sde, measurements, cg_iters
        self.variances = [1.0 / m.precision() for m in measurements]
        self.vjp = 0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        ms = self.measurements
        alpha, sigma = self.sde.coefficients(t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            prior = self.prior.score(xg, t)
            x0 = tweedie(self.sde, xg, t, prior)

        def jt(v: Tensor) -> Tensor:  # (dm/dx)^T v
            self.vjp += 1
            return torch.autograd.grad(x0, xg, v, retain_graph=True)[0]

        def back(u: list[Tensor]) -> Tensor:  # sum_k A_k^T u_k
            return sum(m.op.adjoint(uk) for m, uk in zip(ms, u, strict=True))

        def normal(u: list[Tensor]) -> list[Tensor]:  # (A C A^T + S) u
            cu = bc(sigma**2 / alpha, x) * jt(back(u))
            return [m.op(cu) + s2 * uk for m, s2, uk in zip(ms, self.variances, u, strict=True)]

        residual = [m.y - m.op(x0.detach()) for m in ms]
        u = conjugate_gradient(normal, residual, self.cg_iters)
        return prior.detach() + jt(back(u))


class ClassifierGuidedScore:
    """Prior score plus the scores of time-conditional likelihoods (classifier guidance).

    Song et al. (ICLR 2021, Sec. 5, class-conditional sampling, eq. 14 with a noise-conditional
    classifier): grad log p_t(x_t | c) = grad log p_t(x_t) + grad log p_t(c | x_t). Each
    measurement's operator is time-conditional (``op.time_conditional``) and provides
    ``likelihood_score_t(x, t, y)``, here ``s * grad log p_t(y | x_t)``; its y is the class label
    (1 or B entries) and its weight multiplies the term. One network evaluation of the prior per
    call; exact when the classifier is the exact p_t(c | x_t).
    """

    def __init__(self, prior: ScoreFn, sde: SDE, measurements: Sequence[Measurement]) -> None:
        for m in measurements:
            if not m.op.time_conditional:
                raise ValueError(f"{m.op.name} is not time-conditional; pass it as a measurement")
            m.op.check_sde(sde)
        self.prior, self.measurements = prior, list(measurements)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.prior.score(x, t)
        for m in self.measurements:
            out = out + m.weight * m.op.likelihood_score_t(x, t, m.y)
        return out
