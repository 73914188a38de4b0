"""Posterior sampling: Bayes' rule for scores and data-consistency steps inside the PC loop.

Given measurements y_k = A_k(x_0) + s_k n_k (independent given x_0) and a prior score,

    grad log p_t(x_t | y_1..y_K) = grad log p_t(x_t) + grad log p_t(y_1..y_K | x_t).

Every strategy below approximates the second term (or replaces it with a data-consistency step)
and runs in the ONE predictor-corrector loop, :func:`invdiff.core.samplers.pc_sample`: likelihood
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
    resolved_options(name, options, ops) -> {knob: value it runs with}  # operator defaults filled

Device and dtype follow ``like`` (default: an empty tensor on y's device in y's real dtype);
operators must already be on that device. Nothing goes back to the host.

``weight`` w_k tempers the k-th likelihood, p(y_k | x_0)^{w_k}: likelihood strategies multiply
its score by w_k (``moment`` equivalently uses the noise variance s_k^2 / w_k, which is exact for
the tempered problem), projections blend with lam * w_k, and DPS takes its gradient of
sum_k w_k (-log p(y_k | x0)) normalised by the unweighted curvature, so w_k scales the k-th share
of the step (:func:`likelihood_step`).

Operators may bring their own likelihood (``Operator.log_likelihood``, e.g. Poisson photon counts
in ``ct_poisson``); DPS follows it, the other strategies assume Gaussian noise and
:func:`check_strategy` refuses such operators for them.

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
dps                Chung et al. ICLR 2023, Alg. 1-2         approximate; non-linear operators,
                   (normalised step, see ``dps_step``)      an operator's own likelihood
diffpir            Zhu et al. CVPRW 2023, Alg. 1            approximate; few steps (default 50 NFE)
=================  =======================================  =====================================

"Exact" means the drift uses grad log p_t(x_t | y) itself, so the output distribution is the
posterior up to the sampler's time discretisation (tests/guidance/test_guidance.py checks mean and
covariance). Noiseless measurements (noise_std = 0) suit ``projection``/``replacement`` (and
``noisy_likelihood``, ``dps``); ``moment`` and ``diffpir`` need noise_std > 0.
"""

from invdiff.guidance.posteriors import (
    ClassifierGuidedScore,
    Measurement,
    MomentPosterior,
    NoisyLikelihoodPosterior,
    operator_norm_sq,
)
from invdiff.guidance.steps import (
    data_proximal,
    diffpir_step,
    dps_step,
    hard_projection,
    likelihood_step,
    projection_hook,
)
from invdiff.guidance.strategies import (
    DEFAULT_STRATEGY,
    NEEDS,
    STRATEGIES,
    Needs,
    Problem,
    check_strategy,
    resolved_options,
    solve,
    solve_diffpir,
    solve_dps,
    solve_moment,
    solve_noisy_likelihood,
    solve_prior,
    solve_projection,
    solve_replacement,
    strategy_options,
)

__all__ = [
    "DEFAULT_STRATEGY",
    "NEEDS",
    "STRATEGIES",
    "ClassifierGuidedScore",
    "Measurement",
    "MomentPosterior",
    "Needs",
    "NoisyLikelihoodPosterior",
    "Problem",
    "check_strategy",
    "data_proximal",
    "diffpir_step",
    "dps_step",
    "hard_projection",
    "likelihood_step",
    "operator_norm_sq",
    "projection_hook",
    "resolved_options",
    "solve",
    "solve_diffpir",
    "solve_dps",
    "solve_moment",
    "solve_noisy_likelihood",
    "solve_prior",
    "solve_projection",
    "solve_replacement",
    "strategy_options",
]
