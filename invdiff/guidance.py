"""Posterior sampling: Bayes' rule for scores and data-consistency steps inside the PC loop.

Given measurements y_k = A_k(x_0) + s_k n_k (independent given x_0) and a prior score,

    grad log p_t(x_t | y_1..y_K) = grad log p_t(x_t) + grad log p_t(y_1..y_K | x_t).

Every strategy below approximates the second term (or replaces it with a data-consistency step)
and runs in the ONE predictor-corrector loop, :func:`invdiff.samplers.pc_sample`: likelihood
strategies are ScoreFns wrapping the prior, projections are its ``project`` hook, DPS and DiffPIR
are predictor steps with the shared step signature. Each network evaluation is used for both the
prior and the guidance term of its step.

API (what ``invdiff solve`` calls)::

    ms = [Measurement(op, y, weight=1.0), ...]     # y: (1 or B, *measurement shape)
    res = solve(prior, sde, ms, generators, strategy="projection", steps=1000, snr=0.246, lam=0.841)
    res.x    # (B, *op.image_shape) reconstructions, one per generator (sample k uses only seed k)
    res.nfe  # forward network evaluations;  res.vjp: backward passes through the network
    STRATEGIES        # name -> strategy function, for the CLI
    strategy_options(name) -> {knob: default}     # the keyword knobs a strategy accepts

Device and dtype follow ``like`` (default: an empty tensor on y's device in y's real dtype);
operators must already be on that device. Nothing goes back to the host.

``weight`` w_k tempers the k-th likelihood, p(y_k | x_0)^{w_k}: likelihood strategies multiply
its score by w_k (``moment`` equivalently uses the noise variance s_k^2 / w_k, which is exact for
the tempered problem), projections blend with lam * w_k, DPS steps with zeta * w_k.

=================  =======================================  =====================================
strategy           paper                                    exact for
=================  =======================================  =====================================
moment             Boys et al. 2024 (TMPD), full Jacobian   linear A, Gaussian noise, Gaussian
                                                            prior: the exact posterior score
noisy_likelihood   Song et al. ICLR 2021, controllable gen.  approximate (flat-prior Gaussian)
projection         Song, Shen, Xing, Ermon, ICLR 2022       approximate; exact data consistency
                                                            at the end for exact pseudo-inverses
replacement        Song et al. 2021, inpainting (App. I.2)  approximate; noiseless masks/MRI:
                                                            measured values reproduced exactly
dps                Chung et al. ICLR 2023, Alg. 1           approximate; non-linear operators
diffpir            Zhu et al. CVPRW 2023, Alg. 1            approximate; few steps (default 200 NFE)
=================  =======================================  =====================================

"Exact" means the drift uses grad log p_t(x_t | y) itself, so the output distribution is the
posterior up to the sampler's time discretisation (tests/test_guidance.py checks mean and
covariance). Noiseless measurements (noise_std = 0) suit ``projection``/``replacement`` (and
``noisy_likelihood``, ``dps``); ``moment`` and ``diffpir`` need noise_std > 0.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.linalg import conjugate_gradient, largest_eigenvalue
from invdiff.operator import LinearOperator, Operator, real_inner
from invdiff.samplers import (
    PREDICTORS,
    SampleResult,
    ancestral_mean,
    make_corrector,
    no_step,
    pc_sample,
    time_vector,
)
from invdiff.score import ScoreFn, tweedie
from invdiff.sde import SDE, bc, randn


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
    (they are independent given x_0, not given x_t), solved by ``cg_iters`` CG iterations; each
    iteration is one vector-Jacobian product through the network (counted in ``vjp``).
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


# Strategies: fn(problem, *, knobs) -> SampleResult ---------------------------------------------


@dataclass(frozen=True)
class Problem:
    """What every strategy needs: the prior, the SDE, the measurements and the per-sample noise."""

    prior: ScoreFn
    sde: SDE
    measurements: list[Measurement]
    generators: Sequence[torch.Generator]
    like: Tensor
    callback: Callable[[int], None] | None = None

    def pc(self, score: ScoreFn, steps: int, snr: float, predictor: str, project=None):
        """Run pc_sample with a named predictor and a Langevin corrector (none when snr == 0)."""
        if predictor not in PREDICTORS:
            raise ValueError(f"unknown predictor {predictor!r}; expected one of {list(PREDICTORS)}")
        corrector = make_corrector("langevin", snr=snr) if snr > 0 else no_step
        return self.run(PREDICTORS[predictor], steps, score, corrector, project)

    def run(self, predictor, steps: int, score=None, corrector=no_step, project=None):
        """Run pc_sample with the given step functions (score defaults to the prior)."""
        return pc_sample(
            score or self.prior,
            self.sde,
            self.measurements[0].op.image_shape,
            self.generators,
            predictor=predictor,
            corrector=corrector,
            steps=steps,
            project=project,
            like=self.like,
            callback=self.callback,
        )


def solve_prior(p: Problem, *, steps=1000, snr=0.16, predictor="reverse_diffusion"):
    """Sample the (possibly classifier-guided) prior with the PC sampler; no data term."""
    return p.pc(p.prior, steps, snr, predictor)


def solve_noisy_likelihood(p: Problem, *, steps=1000, snr=0.16, predictor="reverse_diffusion"):
    """Sample with :class:`NoisyLikelihoodPosterior` (Song et al. 2021)."""
    post = NoisyLikelihoodPosterior(p.prior, p.sde, p.measurements, p.generators, p.like)
    return p.pc(post, steps, snr, predictor)


def solve_moment(p: Problem, *, steps=1000, snr=0.0, predictor="reverse_diffusion", cg_iters=20):
    """Sample with :class:`MomentPosterior` (exact for linear-Gaussian problems)."""
    post = MomentPosterior(p.prior, p.sde, p.measurements, cg_iters)
    res = p.pc(post, steps, snr, predictor)
    return SampleResult(res.x, res.nfe, post.vjp)


def solve_projection(
    p: Problem, *, steps=1000, snr=0.16, lam=1.0, predictor="reverse_diffusion"
) -> SampleResult:
    """Song, Shen, Xing, Ermon (ICLR 2022): project before every predictor and corrector step,
    then Tweedie denoising and a hard projection x + A^+(y - A x)."""
    project = projection_hook(p.measurements, p.sde, p.generators, lam)
    res = p.pc(p.prior, steps, snr, predictor, project)
    return SampleResult(hard_projection(res.x, p.measurements), res.nfe)


def solve_replacement(p: Problem, *, steps=1000, snr=0.16, predictor="reverse_diffusion"):
    """Hard replacement of the measured coefficients by y_t (Song et al. 2021, App. I.2,
    imputation): the projection with lam = 1, for operators with an exact pseudo-inverse."""
    for m in p.measurements:
        if not m.op.exact_pseudo_inverse:
            raise ValueError(f"{m.op.name}: 'replacement' needs an exact pseudo-inverse")
    return solve_projection(p, steps=steps, snr=snr, lam=1.0, predictor=predictor)


def solve_dps(p: Problem, *, steps=1000, zeta=1.0) -> SampleResult:
    """Diffusion posterior sampling (Chung et al. 2023): :func:`dps_step` as the predictor."""
    res = p.run(functools.partial(dps_step, measurements=p.measurements, zeta=zeta), steps)
    return SampleResult(res.x, res.nfe, steps)


def solve_diffpir(p: Problem, *, steps=99, lam=0.3, zeta=1.0, cg_iters=10) -> SampleResult:
    """DiffPIR (Zhu et al. 2023): :func:`diffpir_step` as the predictor; steps + 1 NFE.

    Defaults chosen for the default model (``general``) on the out-of-distribution suite's
    validation images only (benchmarks/tune_strategy.py, 64 px, five tasks; results in
    docs/models.md): zeta = 1 (fresh noise every step) beat the paper's 0.3 by 2.5 dB on
    average; lam hardly mattered (0.3 / 1 / 3 within 0.2 dB); 99 steps were within 0.2 dB of
    199 on average and within 0.51 dB on every task, 49 steps lost up to 1 dB (inpainting).
    """
    knobs = {"lam": lam, "zeta": zeta, "cg_iters": cg_iters}
    return p.run(functools.partial(diffpir_step, measurements=p.measurements, **knobs), steps)


Strategy = Callable[..., SampleResult]

STRATEGIES: dict[str, Strategy] = {
    "projection": solve_projection,
    "replacement": solve_replacement,
    "noisy_likelihood": solve_noisy_likelihood,
    "moment": solve_moment,
    "dps": solve_dps,
    "diffpir": solve_diffpir,
}


@dataclass(frozen=True)
class Needs:
    """What a strategy asks of every measured operator."""

    linear: bool = True  # uses A^T, A^+ or a CG solve with A^T A
    exact_pseudo_inverse: bool = False  # replaces measured coefficients exactly
    noise: bool = False  # weighs the data by 1 / noise_std^2, so noise_std must be > 0


#: Each strategy's requirements, checked by :func:`check_strategy` before any sampling.
NEEDS: dict[str, Needs] = {
    "projection": Needs(),
    "replacement": Needs(exact_pseudo_inverse=True),
    "noisy_likelihood": Needs(noise=True),
    "moment": Needs(noise=True),
    "dps": Needs(linear=False),
    "diffpir": Needs(noise=True),
}


def check_strategy(strategy: str, operators: Sequence[Operator]) -> None:
    """Raise ValueError naming the problem and a strategy that works, before any sampling."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    need = NEEDS[strategy]
    for op in operators:
        if op.time_conditional:
            continue
        if need.linear and not op.linear:
            raise ValueError(
                f"strategy {strategy!r} needs linear operators and {op.name!r} is not linear; "
                "use --strategy dps"
            )
        if need.exact_pseudo_inverse and not op.exact_pseudo_inverse:
            raise ValueError(
                f"strategy {strategy!r} needs an exact pseudo-inverse, which {op.name!r} does "
                "not have; use --strategy projection or diffpir"
            )
        if need.noise and op.noise_std <= 0:
            raise ValueError(
                f"strategy {strategy!r} needs noise_std > 0 for {op.name!r} (it weighs the data "
                "by 1 / noise_std^2); give --noise-std, or use --strategy projection"
            )


#: The strategy of ``invdiff solve``, :func:`solve` and :func:`invdiff.reconstruct.reconstruct`.
DEFAULT_STRATEGY = "diffpir"


def _knobs(fn: Callable[..., SampleResult]) -> dict[str, object]:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def strategy_options(name: str) -> dict[str, object]:
    """Return the knobs strategy ``name`` accepts, with their defaults (steps, snr, lam, ...):
    the strategy function's signature is the one place a default is stated."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    return _knobs(STRATEGIES[name])


def solve(
    prior: ScoreFn,
    sde: SDE,
    measurements: Sequence[Measurement],
    generators: Sequence[torch.Generator],
    *,
    strategy: str = DEFAULT_STRATEGY,
    like: Tensor | None = None,
    callback: Callable[[int], None] | None = None,
    **options: object,
) -> SampleResult:
    """Draw one posterior sample per generator with ``strategy`` (see the module docstring).

    ``options`` are the strategy's knobs (``strategy_options(strategy)``: steps, snr, lam,
    zeta, cg_iters, predictor); None means the strategy's default. Every y has batch size 1
    (shared) or len(generators). Returns SampleResult(x, nfe, vjp).
    """
    ms = list(measurements)
    if not ms:
        raise ValueError("solve needs at least one Measurement")
    shape = ms[0].op.image_shape
    for m in ms:
        if m.op.image_shape != shape:
            raise ValueError(
                f"operators disagree on the image shape: {m.op.image_shape} vs {shape}"
            )
        if m.y.shape[0] not in (1, len(generators)):
            raise ValueError(
                f"{m.op.name}: y has batch {m.y.shape[0]}; need 1 or {len(generators)}"
            )
    kw = {k: v for k, v in options.items() if v is not None}
    guided = [m for m in ms if m.op.time_conditional]
    measured = [m for m in ms if m not in guided]
    # Hypotheses alone (no data) are sampled by the plain PC sampler, whatever the strategy.
    known = strategy_options(strategy) if measured else _knobs(solve_prior)
    unknown = sorted(set(options) - set(known))
    if unknown:
        name = strategy if measured else "sampling without data"
        raise ValueError(f"{name!r} takes no option {unknown}; it takes {sorted(known)}")
    if like is None:
        y = (measured or ms)[0].y
        dtype = y.real.dtype if y.is_floating_point() or y.is_complex() else None
        like = torch.empty(0, device=y.device, dtype=dtype or torch.get_default_dtype())
    if guided:  # time-conditional likelihoods join the prior; the strategy sees the rest
        prior = ClassifierGuidedScore(prior, sde, guided)
    if not measured:  # only hypotheses, no data: the plain PC sampler on the guided score
        p = Problem(prior, sde, guided, generators, like, callback)
        return solve_prior(p, **kw)
    return STRATEGIES[strategy](Problem(prior, sde, measured, generators, like, callback), **kw)
