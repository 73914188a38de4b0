"""Strategies: functions (problem, *, knobs) -> SampleResult, what each needs, the default, and
:func:`solve`, the entry point that runs one."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.core.operator import Operator
from invdiff.core.samplers import (
    PREDICTORS,
    SampleResult,
    make_corrector,
    no_step,
    pc_sample,
)
from invdiff.core.score import ScoreFn
from invdiff.core.sde import SDE
from invdiff.guidance.posteriors import (
    ClassifierGuidedScore,
    Measurement,
    MomentPosterior,
    NoisyLikelihoodPosterior,
)
from invdiff.guidance.steps import (
    diffpir_step,
    dps_step,
    hard_projection,
    projection_hook,
)

# Strategies: fn(problem, *, knobs) -> SampleResult ---------------------------------------------


#: Knobs whose default (None) is the first measured operator's own value: knob -> (operator
#: attribute, value without a measured operator, lowest allowed value).
OPERATOR_KNOBS: dict[str, tuple[str, float, float]] = {
    "sigma_start": ("warm_start_sigma", 0.0, 0.0),  # 0: start from noise
    "kappa": ("noise_inflation", 1.0, 1.0),  # 1: plain Tweedie
    "relax": ("data_relaxation", 1.0, 0.0),  # 1: DiffPIR's data step
}


def operator_knob(knob: str, value: float | None, operators: Sequence[Operator]) -> float:
    """Return ``value``, or where it is None the first measured operator's own value of ``knob``
    (:data:`OPERATOR_KNOBS`: sigma_start is ``Operator.warm_start_sigma``, kappa is
    ``Operator.noise_inflation``). Raise ValueError naming the knob unless it is finite and at
    least the knob's lowest value."""
    attribute, fallback, low = OPERATOR_KNOBS[knob]
    if value is None:
        measured = [op for op in operators if not op.time_conditional]
        value = getattr(measured[0], attribute) if measured else fallback
    return at_least(knob, value, low)


def at_least(name: str, value: float, low: float = 0.0) -> float:
    """Return ``value`` as a float; raise ValueError naming ``name`` unless it is finite and
    >= ``low``."""
    if not (value >= low and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value}")
    return float(value)


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

    @property
    def operators(self) -> list[Operator]:
        """Return the measured operators, in order."""
        return [m.op for m in self.measurements]

    def warm_start(self, sigma: float | None) -> tuple[Tensor, float] | None:
        """Return (the first measured operator's classical baseline, sigma) to start the reverse
        process from (:func:`invdiff.core.samplers.warm_start`), or None (start from the prior at
        t = 1) when sigma is 0 or the operator has no baseline. sigma None: the operator's own
        level (:func:`operator_knob`)."""
        sigma = operator_knob("sigma_start", sigma, self.operators)
        if sigma == 0:
            return None
        m = self.measurements[0]
        base = m.op.baseline(m.y)
        return None if base is None else (base[1].to(self.like.dtype), float(sigma))

    def run(self, predictor, steps: int, score=None, corrector=no_step, project=None, start=None):
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
            start=start,
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
    """Diffusion posterior sampling (Chung et al. 2023): :func:`dps_step` as the predictor.

    zeta = 1 (one exact line-search step of the negative log-likelihood per step) was chosen for
    the default model (``general``) on VALIDATION phantoms only (benchmarks/datasets.py, 64 px,
    2 images x 2 samples, 100 steps; PSNR of the posterior mean, dB):

        step rule                 ct23   mri8   inpaint70   mean
        old, zeta grad||r||, 0.1  29.1
        old, 0.3                  19.8   19.3   14.5        17.9
        old, 1                    14.1   21.8   21.2        19.0
        old, 3                    13.5   21.4   26.8        20.6
        normalised, 0.5           32.8   21.6   25.8        26.8
        normalised, 1             33.7   21.8   27.2        27.6
        normalised, 1.5           33.1   22.0   27.7        27.6
        normalised, 2             32.0   22.0   27.8        27.3
        normalised, 4             22.5   13.7   18.9        18.4
        classical baseline        29.2   22.5   28.7

    The old rule's best zeta differs 30-fold between tasks (0.1 for CT, 3 for inpainting); the
    normalised one is best at 1-1.5 on all three and breaks down by 4. With zeta = 1 it also
    beats log + FBP on 23-view Beer-Lambert CT (noise 0.01: 28.3 vs 24.4 dB) and on ct_poisson
    (I0 = 1e4: 31.4 vs 27.3 dB), where the old rule at zeta 1 reached 25.8 and 13.3 dB.
    """
    res = p.run(functools.partial(dps_step, measurements=p.measurements, zeta=zeta), steps)
    return SampleResult(res.x, res.nfe, steps)


def solve_diffpir(
    p: Problem,
    *,
    steps=49,
    lam=0.1,
    zeta=1.0,
    cg_iters=40,
    cg_rtol=0.0,
    sigma_start=None,
    tv=0.0,
    kappa=None,
    relax=None,
) -> SampleResult:
    """DiffPIR (Zhu et al. 2023): :func:`diffpir_step` as the predictor; steps + 1 NFE.

    ``sigma_start`` > 0 starts the reverse process at that noise level from the operator's
    classical baseline (FBP, zero-filled, biharmonic) instead of from pure noise at t = 1
    (Chung, Sim, Ye, "Come-Closer-Diffuse-Faster", CVPR 2022, eq. 6), so all ``steps`` are spent
    below sigma_start; 0 (or an operator without a baseline) keeps the paper's start. None (the
    default): the operator's own level, ``Operator.warm_start_sigma`` (ct_sparse: 0.05 to 0.2
    with the angular undersampling; masking: 0.1 to 0.5 with the hole size; others 0.5).

    Defaults chosen for the default model (``general``) on validation images only, never on
    test images (benchmarks/tune_strategy.py; docs/models.md, "Sampler defaults"): zeta = 1
    (fresh noise every step) beat the paper's 0.3 by 2.5 dB on average; 49 steps from a warm
    start (50 NFE) matched 99 steps from noise (100 NFE) on both validation sets; the operator's
    own start level, lam 0.1 and 40 CG iterations (which only matter where the data step is not
    exact: CT) then gained on every task of the harness's validation phantoms (16 images):
    CT 23 views 43.80 against 42.08 dB with one level (0.5), lam 0.3 and 10 iterations.
    MRI 4x still gains from more steps (199 steps: +1.3 dB on the harness's phantoms):
    ``--steps 199`` there when time allows.

    ``cg_iters`` caps the CG iterations of each data step; CG stops sooner once every sample's
    residual reached float precision (:func:`invdiff.core.linalg.conjugate_gradient`: MRI and
    masking, not CT), or fell by ``cg_rtol`` where that is > 0. On CT a looser tolerance lost
    PSNR on validation (23 views, 64 px: 1e-2 -0.43 dB, 1e-3 -0.01 dB; 1e-4 is never reached in
    40 iterations); hence 0.

    ``tv`` > 0 adds total variation to each data step, weighted like a TV denoiser at tv times
    the step's noise level (:func:`invdiff.guidance.steps.data_proximal`; ADMM, sharing the CG
    budget). Off by default: on validation it helps piecewise-constant images (the suite's
    `blobs` at 128 px, MRI 4x: +3.1 dB at 0.5) and costs textured ones (the harness's validation
    phantoms, MRI 4x: -2.1 dB at 0.5; docs/models.md, "Sampler defaults"). Try 0.5-1 for
    cartoon-like objects (phantoms, machined parts) at strong undersampling.

    ``kappa`` >= 1 denoises at kappa x each step's noise level
    (:func:`invdiff.guidance.steps.inflated_tweedie`). None (the default): the operator's own
    factor, ``Operator.noise_inflation`` (ct_sparse and mri: 1.5; masking and others: 1). On
    validation, 1.3 gained 0.37 dB on the suite's images at 128 px (flat regions and MRI 4x most)
    and lost 0.3 on inpainting; 1.3 for CT and MRI with 1 for masking gained 0.43 dB there and
    0.11 on the harness's phantoms; with relax 1.75, 1.5 gained a further 0.0 to 0.25 dB on CT
    and MRI (docs/models.md, "Sampler defaults").

    ``relax`` in (0, 2] over-relaxes each data step (:func:`invdiff.guidance.steps.diffpir_step`).
    None (the default): the operator's own factor, ``Operator.data_relaxation`` (ct_sparse, mri
    and masking: 1.75; others: 1). On validation, 1.75 gained on every task of the harness's
    phantoms (CT 23 views +0.98 dB, MRI 4x +1.25) and on the suite's wider validation set at
    128 px (CT 23 views +0.59, MRI 4x +0.20); 2 broke CT (docs/models.md, "Sampler defaults").
    """
    start = p.warm_start(sigma_start)  # checks sigma_start before any network call
    knobs = {"lam": lam, "zeta": zeta, "cg_iters": cg_iters, "cg_rtol": cg_rtol}
    knobs.update(tv=at_least("tv", tv), kappa=operator_knob("kappa", kappa, p.operators))
    knobs.update(relax=operator_knob("relax", relax, p.operators))
    if not 0 < knobs["relax"] <= 2:
        raise ValueError(f"relax must be in (0, 2], got {knobs['relax']}")
    step = functools.partial(diffpir_step, measurements=p.measurements, **knobs)
    return p.run(step, steps, start=start)


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
    gaussian: bool = True  # built on the Gaussian likelihood, not an operator's own


#: Each strategy's requirements, checked by :func:`check_strategy` before any sampling.
NEEDS: dict[str, Needs] = {
    "projection": Needs(),
    "replacement": Needs(exact_pseudo_inverse=True),
    "noisy_likelihood": Needs(noise=True),
    "moment": Needs(noise=True),
    "dps": Needs(linear=False, gaussian=False),
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
        if need.gaussian and not op.gaussian_likelihood:
            raise ValueError(
                f"strategy {strategy!r} assumes Gaussian noise and {op.name!r} defines its own "
                "likelihood; use --strategy dps"
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


#: The strategy of ``invdiff solve``, :func:`solve` and
#: :func:`invdiff.core.reconstruct.reconstruct`.
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


def _run_knobs(strategy: str, with_data: bool) -> dict[str, object]:
    """Return the knobs (with defaults) of what :func:`solve` runs: the strategy where there is
    data, the plain PC sampler (:func:`solve_prior`) where there are class hypotheses only."""
    return strategy_options(strategy) if with_data else _knobs(solve_prior)


def resolved_options(
    strategy: str,
    options: dict[str, object],
    operators: Sequence[Operator],
    *,
    baseline: bool = True,
) -> dict[str, object]:
    """Return every knob ``strategy`` runs with on ``operators``: ``options`` (None: the default)
    over the strategy's defaults, with operator-dependent defaults (sigma_start) filled in; with
    class hypotheses only, the knobs of the prior sampler that :func:`solve` then runs.
    ``baseline`` False (the first measured operator has no classical baseline for these data):
    a warm start falls back to noise (:meth:`Problem.warm_start`), so sigma_start is 0."""
    given = {k: v for k, v in options.items() if v is not None}
    out = {**_run_knobs(strategy, any(not op.time_conditional for op in operators)), **given}
    for knob in OPERATOR_KNOBS.keys() & out.keys():
        out[knob] = operator_knob(knob, out[knob], operators)
    if "sigma_start" in out and not baseline:
        out["sigma_start"] = 0.0
    return out


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
    known = _run_knobs(strategy, bool(measured))
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
