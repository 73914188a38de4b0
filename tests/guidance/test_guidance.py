"""Posterior sampling on linear-Gaussian problems, where the posterior is known in closed form.

Prior x_0 ~ N(m, C) on 1 x 4 x 4 images (d = 16, a squared-exponential C), measurements
y_k = A_k x_0 + s_k n_k with a random pixel mask and a random dense 6 x 16 matrix. Then

    Sigma_post = (C^-1 + sum_k A_k^T A_k / s_k^2)^-1,
    m_post = Sigma_post (C^-1 m + sum_k A_k^T y_k / s_k^2),

and the diffused posterior is again Gaussian, so GaussianScore(sde, m_post, Sigma_post) is the
exact posterior score. Which strategies are exact: only ``moment`` (its likelihood is exact for a
Gaussian prior); the others are approximations and are tested for weaker properties (measured
values reproduced, samples pulled from the prior towards the posterior, determinism).
"""

from __future__ import annotations

import math

import pytest
import torch
from invdiff_operators.masking import Masking

from invdiff import guidance
from invdiff.core.operator import LinearOperator
from invdiff.core.samplers import (
    generators_for,
    pc_sample,
    reverse_diffusion,
    time_grid,
    time_vector,
)
from invdiff.core.score import GaussianScore, tweedie
from invdiff.core.sde import VESDE, VPSDE
from invdiff.guidance import Measurement, MomentPosterior, solve

SHAPE = (1, 4, 4)
D = 16
F64 = torch.float64


class Dense(LinearOperator):
    """y = M x for a dense matrix M (rows: measurements), with the exact pseudo-inverse."""

    name = "dense"
    exact_pseudo_inverse = True

    def __init__(self, matrix, image_shape=SHAPE, noise_std=0.1):
        super().__init__(image_shape, noise_std=noise_std)
        self.register_buffer("matrix", matrix)

    def forward(self, x):
        return x.flatten(1) @ self.matrix.T

    def adjoint(self, y):
        return (y @ self.matrix).reshape(-1, *self.image_shape)

    def pseudo_inverse(self, y):
        return (y @ torch.linalg.pinv(self.matrix).T).reshape(-1, *self.image_shape)


def gaussian_prior(g):
    """Return (m, C): a random mean and a smooth covariance on the 4 x 4 grid."""
    ij = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    ij = ij.reshape(-1, 2).to(F64)
    cov = torch.exp(-(torch.cdist(ij, ij) ** 2) / 4) + 0.05 * torch.eye(D, dtype=F64)
    return 0.5 * torch.randn(D, generator=g, dtype=F64), cov


def matrix_of(op):
    """Return the dense matrix of a linear operator (rows of A e_j), real measurements only."""
    basis = torch.eye(D, dtype=F64).reshape(D, *SHAPE)
    return op(basis).flatten(1).T


def closed_form(m, cov, ops, ys):
    """Return the exact posterior mean and covariance for Gaussian prior and measurements."""
    prec = torch.linalg.inv(cov)
    info = torch.linalg.solve(cov, m)
    for op, y in zip(ops, ys, strict=True):
        a = matrix_of(op)
        prec = prec + a.T @ a / op.noise_std**2
        info = info + a.T @ y.flatten() / op.noise_std**2
    post = torch.linalg.inv(prec)
    return post @ info, post


def make_problem(seed=0, mask_noise=0.1, dense_noise=0.1, sde=None):
    """Return (sde, prior, ops, ys, m_post, cov_post) of a small linear-Gaussian problem."""
    g = torch.Generator().manual_seed(seed)
    sde = sde or VESDE(0.01, 10.0)
    m, cov = gaussian_prior(g)
    mask = Masking(
        SHAPE, noise_std=mask_noise, mask="random", fraction=0.5, mask_seed=seed
    ).double()
    dense = Dense(torch.randn(6, D, generator=g, dtype=F64) / 4, noise_std=dense_noise)
    x0 = (m + torch.linalg.cholesky(cov) @ torch.randn(D, generator=g, dtype=F64)).reshape(
        1, *SHAPE
    )
    ops = [mask, dense]
    ys = [op(x0) + op.noise_std * torch.randn(op(x0).shape, generator=g, dtype=F64) for op in ops]
    mean, post = closed_form(m, cov, ops, ys)
    return sde, GaussianScore(sde, m, cov), ops, ys, mean, post


def sampler_moments(score, sde, steps):
    """Return the exact mean and covariance of pc_sample's output (reverse diffusion, Tweedie).

    With a Gaussian score each reverse-diffusion step is affine plus Gaussian noise,
    x_s = L x_t + c + G z, so moments propagate exactly: mu <- L mu + c, S <- L S L^T + G^2 I,
    starting from the prior N(0, prior_std^2 I). L and c are read off the step function itself
    (evaluated at 0 and at the unit vectors), so this is the sampler's own discretisation bias.
    """
    ts = time_grid(sde, steps)
    basis = torch.cat([torch.zeros(1, D, dtype=F64), torch.eye(D, dtype=F64)]).reshape(-1, *SHAPE)
    gens = generators_for(range(D + 1), "cpu")

    def affine(f):
        out = f(basis).flatten(1)
        return (out[1:] - out[0]).T, out[0]

    mean, cov = torch.zeros(D, dtype=F64), sde.prior_std**2 * torch.eye(D, dtype=F64)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        step = lambda x, t=t, s=s: reverse_diffusion(  # noqa: E731
            x, float(t), float(s), sde=sde, score=score, generators=gens
        )[1]
        lin, c = affine(step)
        one = basis[:1]
        _, g_step = sde.discretize(one, time_vector(t, one), time_vector(s, one))
        mean, cov = lin @ mean + c, lin @ cov @ lin.T + g_step[0] ** 2 * torch.eye(D, dtype=F64)
    last = lambda x: tweedie(sde, x, time_vector(ts[-1], x), score.score(x, time_vector(ts[-1], x)))  # noqa: E731
    lin, c = affine(last)
    return lin @ mean + c, lin @ cov @ lin.T


def run(prior, sde, ops, ys, seeds, **options):
    """Solve with unit weights and one generator per seed."""
    return solve(prior, sde, measurements(ops, ys), generators_for(seeds, "cpu"), **options)


def measurements(ops, ys, weights=None):
    return [
        Measurement(op, y, w) for op, y, w in zip(ops, ys, weights or [1.0] * len(ops), strict=True)
    ]


# Exact strategy ----------------------------------------------------------------------------


@pytest.mark.parametrize("sde", [VESDE(0.01, 10.0), VPSDE()], ids=["ve", "vp"])
def test_moment_score_is_the_exact_posterior_score(sde):
    sde, prior, ops, ys, mean, cov = make_problem(sde=sde)
    post = MomentPosterior(prior, sde, measurements(ops, ys), cg_iters=40)
    exact = GaussianScore(sde, mean, cov)
    g = torch.Generator().manual_seed(1)
    for t in (1.0, 0.5, 0.1, sde.t_min):
        x = 2 * torch.randn(3, *SHAPE, generator=g, dtype=F64)
        tt = torch.full((3,), t, dtype=F64)
        want = exact.score(x, tt)
        torch.testing.assert_close(post.score(x, tt), want, rtol=1e-8, atol=1e-8 * want.abs().max())


def test_moment_recovers_posterior_mean_and_covariance():
    sde, prior, ops, ys, mean, cov = make_problem()
    steps, n = 100, 1000
    res = run(prior, sde, ops, ys, range(n), strategy="moment", steps=steps, cg_iters=24)
    x = res.x.flatten(1)
    # Discretisation bias, computed exactly by moment propagation through the same sampler run
    # on the exact posterior score. Measured (VE, sigma 0.01..10): mean bias 0.008 for any
    # number of steps (the N(0, sigma_max^2) start), covariance bias 3.4 / steps * max|C_post|-ish
    # (0.072, 0.034, 0.017 at 50, 100, 200 steps): first order in the step.
    mu_n, cov_n = sampler_moments(GaussianScore(sde, mean, cov), sde, steps)
    assert (mu_n - mean).abs().max() < 0.02
    assert (cov_n - cov).abs().max() < 0.06
    # Monte-Carlo error of n Gaussian samples: sd(mean_i) = sqrt(S_ii / n) and
    # sd(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n); allow 5 sd (P(any of 16 + 256 entries beyond
    # 5 sd) < 1e-4) plus the measured bias.
    var = cov_n.diag()
    assert ((x.mean(0) - mean).abs() <= 5 * (var / n).sqrt() + (mu_n - mean).abs()).all()
    sd_cov = ((var[:, None] * var[None, :] + cov_n**2) / n).sqrt()
    assert ((x.T.cov() - cov).abs() <= 5 * sd_cov + (cov_n - cov).abs()).all()
    # one VJP per CG iteration actually run: at most cg_iters + 1 per step, fewer once converged
    assert res.nfe == steps + 1 and steps + 1 < res.vjp < (steps + 1) * 25


def test_moment_samples_equal_exact_posterior_samples_seed_by_seed():
    sde, prior, ops, ys, mean, cov = make_problem()
    got = run(prior, sde, ops, ys, range(4), strategy="moment", steps=30, cg_iters=24).x
    want = pc_sample(
        GaussianScore(sde, mean, cov),
        sde,
        SHAPE,
        generators_for(range(4), "cpu"),
        steps=30,
        like=torch.empty(0, dtype=F64),
    ).x
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_two_measurements_equal_one_stacked_measurement():
    sde, prior, ops, ys, _, _ = make_problem(mask_noise=0.1, dense_noise=0.1)
    stacked = Dense(torch.cat([matrix_of(op) for op in ops]), noise_std=0.1)
    y = torch.cat([y.flatten(1) for y in ys], dim=1)
    kw = {"strategy": "moment", "steps": 20, "cg_iters": 30}
    two = run(prior, sde, ops, ys, range(3), **kw)
    one = solve(prior, sde, [Measurement(stacked, y)], generators_for(range(3), "cpu"), **kw)
    torch.testing.assert_close(two.x, one.x, rtol=1e-8, atol=1e-8)


def test_weight_tempers_the_likelihood_like_a_smaller_noise():
    sde, prior, ops, ys, _, _ = make_problem()
    dense = ops[1]
    sharper = Dense(dense.matrix, noise_std=dense.noise_std / 2)
    kw = {"strategy": "moment", "steps": 20, "cg_iters": 30}
    weighted = solve(prior, sde, [Measurement(dense, ys[1], 4.0)], generators_for([7], "cpu"), **kw)
    sharp = solve(prior, sde, [Measurement(sharper, ys[1])], generators_for([7], "cpu"), **kw)
    torch.testing.assert_close(weighted.x, sharp.x, rtol=1e-8, atol=1e-8)


# Approximate strategies ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["replacement", "projection"])
def test_noiseless_mask_is_reproduced_on_observed_pixels(strategy):
    sde, prior, ops, ys, _, _ = make_problem(mask_noise=0.0)
    mask, y = ops[0], ys[0]
    res = solve(
        prior,
        sde,
        [Measurement(mask, y)],
        generators_for(range(4), "cpu"),
        strategy=strategy,
        steps=30,
    )
    observed = mask.mask.bool().expand_as(res.x)
    assert torch.equal(res.x[observed], y.expand_as(res.x)[observed])
    assert res.nfe == 2 * 30 + 1  # predictor + Langevin corrector per step, final Tweedie


def test_projection_ends_consistent_with_a_dense_measurement():
    sde, prior, ops, ys, _, _ = make_problem(dense_noise=0.0)
    res = solve(
        prior,
        sde,
        [Measurement(ops[1], ys[1])],
        generators_for(range(4), "cpu"),
        strategy="projection",
        steps=30,
        lam=0.8,
    )
    torch.testing.assert_close(ops[1](res.x), ys[1].expand(4, -1), rtol=0, atol=1e-10)


# Sample mean error / prior mean error measured with 200 samples, 200 steps (the module's setup):
# projection 0.28, noisy_likelihood 0.60, dps 0.12, diffpir 0.33 (moment: 0.04).
@pytest.mark.parametrize("strategy", ["projection", "noisy_likelihood", "dps", "diffpir"])
def test_approximate_strategies_move_samples_towards_the_posterior(strategy):
    sde, prior, ops, ys, _, _ = make_problem()
    res = run(prior, sde, ops[1:], ys[1:], range(200), strategy=strategy, steps=200)
    m_dense, _ = closed_form(prior.mean, prior.cov, ops[1:], ys[1:])
    error = (res.x.flatten(1).mean(0) - m_dense).norm()
    assert error < 0.75 * (prior.mean - m_dense).norm()
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize("strategy", sorted(guidance.STRATEGIES))
def test_sample_k_depends_only_on_seed_k(strategy):
    sde, prior, ops, ys, _, _ = make_problem()
    ms = measurements(ops, ys)
    kw = {"strategy": strategy, "steps": 8}
    batch = solve(prior, sde, ms, generators_for([3, 4, 5], "cpu"), **kw).x
    alone = solve(prior, sde, ms, generators_for([4], "cpu"), **kw).x
    # Equal up to float64 round-off: batched BLAS kernels may sum in another order (seen 2e-10
    # after the moment strategy's CG solves), but no sample's noise or solve touches another's.
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-8, atol=1e-8)
    again = solve(prior, sde, ms, generators_for([3, 4, 5], "cpu"), **kw).x
    assert torch.equal(batch, again)


def test_dps_counts_one_nfe_and_one_vjp_per_step():
    sde, prior, ops, ys, _, _ = make_problem()
    res = run(prior, sde, ops, ys, [0], strategy="dps", steps=10, zeta=0.5)
    assert (res.nfe, res.vjp) == (11, 10)


class Scaled(Dense):
    """c A with the same dense A: a measurement of another scale (a sinogram vs k-space)."""

    def __init__(self, dense, c, noise_std):
        super().__init__(c * dense.matrix, noise_std=noise_std)


def test_dps_step_does_not_depend_on_the_scale_of_the_measurement_or_the_noise():
    _, _, ops, _, _, _ = make_problem()
    g = torch.Generator().manual_seed(5)
    x0, truth = torch.rand(3, *SHAPE, generator=g, dtype=F64), torch.rand(1, *SHAPE, generator=g)
    steps = []
    for c, s in ((1.0, 0.1), (50.0, 0.1), (0.02, 1e-3), (50.0, 0.0)):
        op = Scaled(ops[1], c, s)
        steps.append(guidance.likelihood_step(x0, [Measurement(op, op(truth.to(F64)))]))
    for d in steps[1:]:
        torch.testing.assert_close(d, steps[0], rtol=1e-5, atol=1e-8)
    # the old rule, zeta * grad ||y - A x0||, scales with c: 50 times longer at c = 50


def test_dps_step_on_a_mask_moves_the_measured_pixels_onto_the_data():
    _, _, ops, ys, _, _ = make_problem()
    x0 = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=F64)
    d = guidance.likelihood_step(x0, [Measurement(ops[0], ys[0])])
    torch.testing.assert_close(x0 - d, ops[0].project(x0, ys[0]), rtol=0, atol=1e-6)
    half = guidance.likelihood_step(x0, [Measurement(ops[0], ys[0], weight=0.5)])
    torch.testing.assert_close(half, d / 2)  # one measurement of weight w: w times the step


# API -----------------------------------------------------------------------------------------


def test_strategy_options_list_the_knobs():
    assert guidance.strategy_options("projection") == {
        "steps": 1000,
        "snr": 0.16,
        "lam": 1.0,
        "predictor": "reverse_diffusion",
    }
    assert set(guidance.strategy_options("diffpir")) == {
        "steps",
        "lam",
        "zeta",
        "cg_iters",
        "cg_rtol",
        "sigma_start",
        "tv",
        "kappa",
        "relax",
    }


@pytest.mark.parametrize(
    ("strategy", "options", "mask_noise", "match"),
    [
        ("nope", {}, 0.1, "unknown strategy"),
        ("dps", {"lam": 1.0}, 0.1, "takes no option"),
        ("moment", {}, 0.0, "noise_std > 0"),
        ("projection", {"lam": 1.5}, 0.1, r"\[0, 1\]"),
    ],
)
def test_bad_requests_raise_with_the_fix(strategy, options, mask_noise, match):
    sde, prior, ops, ys, _, _ = make_problem(mask_noise=mask_noise)
    with pytest.raises(ValueError, match=match):
        run(prior, sde, ops[:1], ys[:1], [0], strategy=strategy, steps=2, **options)


def test_measurement_batch_must_match_the_generators():
    sde, prior, ops, ys, _, _ = make_problem()
    with pytest.raises(ValueError, match="batch"):
        solve(
            prior,
            sde,
            [Measurement(ops[1], ys[1].expand(2, -1))],
            generators_for(range(3), "cpu"),
            steps=2,
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", sorted(guidance.STRATEGIES))
def test_strategies_run_on_cuda(strategy):
    sde, prior, ops, ys, _, _ = make_problem()
    cuda = torch.device("cuda")
    prior = GaussianScore(sde, prior.mean.to(cuda), prior.cov.to(cuda))
    ms = [Measurement(op.to(cuda), y.to(cuda)) for op, y in zip(ops, ys, strict=True)]
    res = solve(prior, sde, ms, generators_for([0, 1], cuda), strategy=strategy, steps=5)
    assert res.x.device.type == "cuda" and res.x.dtype == F64
    assert math.isfinite(float(res.x.abs().max()))


# Real operators: complex k-space (MRI) and sparse-view CT run through every strategy ----------


def real_operator_case(name):
    """Return (op, y, prior, sde) for a tiny MRI or CT problem with an i.i.d. Gaussian prior."""
    from invdiff_operators.ct_sparse import CTSparse
    from invdiff_operators.mri import MRI

    if name == "mri":
        op = MRI((1, 8, 8), acceleration=2, center_fraction=0.25)
    else:
        op = CTSparse((1, 9, 9), views=5)
    sde = VESDE(0.01, 10.0)
    d = math.prod(op.image_shape)
    prior = GaussianScore(sde, torch.zeros(d), torch.eye(d))
    x = torch.randn(1, *op.image_shape, generator=torch.Generator().manual_seed(0))
    return op, op.measure(x, torch.Generator().manual_seed(1)), prior, sde


@pytest.mark.parametrize(
    ("name", "strategy"),
    [("mri", s) for s in sorted(guidance.STRATEGIES)]
    + [("ct", s) for s in ("diffpir", "dps", "moment", "noisy_likelihood", "projection")],
)
def test_real_operators_give_finite_measurement_consistent_samples(name, strategy):
    op, y, prior, sde = real_operator_case(name)
    res = solve(
        prior, sde, [Measurement(op, y)], generators_for([0, 1], "cpu"), strategy=strategy, steps=20
    )
    assert res.x.dtype == torch.float32 and torch.isfinite(res.x).all()
    assert ((op(res.x) - y).abs().norm() / y.abs().norm()) < 2.0


def test_diffpir_warm_start_begins_at_the_operators_baseline():
    """sigma_start just above sigma_min: one step from the baseline (here the exact
    pseudo-inverse) stays at it, where the cold start lands elsewhere; steps + 1 NFE."""
    sde, prior, ops, ys, _, _ = make_problem()
    base = ops[1].baseline(ys[1])[1]
    warm = run(
        prior, sde, ops[1:], ys[1:], range(4), strategy="diffpir", steps=1, sigma_start=0.0101
    )
    cold = run(prior, sde, ops[1:], ys[1:], range(4), strategy="diffpir", steps=1, sigma_start=0.0)
    assert warm.nfe == 2
    assert (warm.x - base).flatten(1).norm(dim=1).max() < 0.05 * (base - cold.x).flatten(1).norm(
        dim=1
    ).min()


def test_diffpir_warm_start_moves_samples_towards_the_posterior():
    sde, prior, ops, ys, _, _ = make_problem()
    res = run(
        prior, sde, ops[1:], ys[1:], range(200), strategy="diffpir", steps=50, sigma_start=1.0
    )
    m_dense, _ = closed_form(prior.mean, prior.cov, ops[1:], ys[1:])
    assert (res.x.flatten(1).mean(0) - m_dense).norm() < 0.75 * (prior.mean - m_dense).norm()
    with pytest.raises(ValueError, match="sigma_start"):
        run(prior, sde, ops[1:], ys[1:], range(2), strategy="diffpir", sigma_start=-1.0)


@pytest.mark.parametrize(
    ("knob", "attribute", "own", "other"),
    [
        ("sigma_start", "warm_start_sigma", 0.3, 2.0),
        ("kappa", "noise_inflation", 1.4, 2.0),
        ("relax", "data_relaxation", 1.5, 0.7),
    ],
)
def test_diffpir_knob_defaults_to_the_operators_own_value(knob, attribute, own, other):
    """knob None: the first measured operator's own value, the same run as that number given
    explicitly; resolved_options reports the value used; the operator's value is checked."""
    sde, prior, ops, ys, _, _ = make_problem()
    dense = ops[1]
    setattr(dense, attribute, own)  # instance attribute: only this operator

    def go(**kw):
        return run(prior, sde, ops[1:], ys[1:], range(2), strategy="diffpir", steps=3, **kw)

    mine, told, different = go(), go(**{knob: own}), go(**{knob: other})
    assert torch.equal(mine.x, told.x) and not torch.allclose(mine.x, different.x)
    assert guidance.resolved_options("diffpir", {}, [dense])[knob] == own
    assert guidance.resolved_options("diffpir", {knob: other}, [dense])[knob] == other
    setattr(dense, attribute, float("nan"))
    with pytest.raises(ValueError, match=knob):
        go()


def test_diffpir_without_a_baseline_reports_a_start_from_noise():
    sde, prior, ops, ys, _, _ = make_problem()
    dense = ops[1]
    assert guidance.resolved_options("diffpir", {"sigma_start": 0}, [dense])["sigma_start"] == 0
    no_base = guidance.resolved_options("diffpir", {"sigma_start": 2}, [dense], baseline=False)
    assert no_base["sigma_start"] == 0  # nothing to warm-start from: the run starts from noise
    default_steps = guidance.strategy_options("diffpir")["steps"]
    assert guidance.resolved_options("diffpir", {"steps": None}, [dense])["steps"] == default_steps


def test_data_proximal_with_tv_lowers_the_tv_augmented_objective_per_sample():
    """The ADMM data step lowers sum p ||y - A x||^2 + rho (||x - x0||^2 + 2 tv TV(x)) below the
    plain step's minimiser and flattens edges, per sample, more with more weight."""
    from invdiff.eval.baselines import total_variation
    from invdiff.guidance.steps import data_proximal

    g = torch.Generator().manual_seed(3)
    truth = torch.zeros(1, 1, 16, 16, dtype=F64)
    truth[..., 4:12, 5:11] = 1.0
    op = Masking((1, 16, 16), noise_std=0.05, mask="random", fraction=0.5, mask_seed=1).double()
    y = op(truth) + 0.05 * torch.randn(op(truth).shape, generator=g, dtype=F64)
    x0 = (truth + 0.3 * torch.randn(2, 1, 16, 16, generator=g, dtype=F64)).clamp(0, 1)
    ms = [Measurement(op, y)]
    rho = torch.full((2,), 4.0, dtype=F64)
    tv = torch.tensor([0.3, 0.1], dtype=F64)

    def objective(x):
        fit = ((op(x) - y) ** 2).flatten(1).sum(1) / 0.05**2
        return fit + rho * (((x - x0) ** 2).flatten(1).sum(1) + 2 * tv * total_variation(x))

    plain = data_proximal(x0, ms, rho, 200)
    with_tv = data_proximal(x0, ms, rho, 400, tv=tv)
    assert (objective(with_tv) < objective(plain)).all()
    assert (total_variation(with_tv) < total_variation(plain)).all()
    assert total_variation(with_tv)[0] < 0.6 * total_variation(plain)[0]
    assert total_variation(with_tv)[0] < total_variation(with_tv)[1]  # more weight, flatter


def test_data_proximal_with_tv_converges_to_the_tv_denoiser(monkeypatch):
    """With the data weighted ~0 the TV data step is TV denoising of x0, 1/2 ||x - x0||^2 + tv
    TV(x): run to convergence, ADMM meets scikit-image's Chambolle solver (the weight convention
    the docstring states)."""
    from invdiff.eval.baselines import tv_prox
    from invdiff.guidance import steps

    g = torch.Generator().manual_seed(4)
    x0 = torch.zeros(2, 1, 16, 16, dtype=F64)
    x0[..., 3:11, 4:13] = 1.0
    x0 = x0 + 0.2 * torch.randn(x0.shape, generator=g, dtype=F64)
    op = Masking((1, 16, 16), noise_std=1e4, mask="random", fraction=0.5, mask_seed=1).double()
    ms = [Measurement(op, op(x0[:1]))]  # precision 1e-8 against rho = 1
    monkeypatch.setattr(steps, "ADMM_ITERS", 300)
    out = steps.data_proximal(x0, ms, torch.ones(2, dtype=F64), 300 * 20, tv=0.15)
    reference = tv_prox(x0, 0.15, tv_iterations=2000, tv_eps=1e-9)
    assert (out - reference).abs().max() < 3e-3
    assert (out - x0).abs().max() > 0.1  # the term acted


@pytest.mark.parametrize(
    ("knob", "neutral", "on", "bad"),
    [
        ("tv", 0.0, 0.5, (-1.0, float("nan"))),
        ("kappa", 1.0, 1.3, (0.5, float("nan"), math.inf)),
        ("relax", 1.0, 1.5, (0.0, -1.0, 2.5, float("nan"))),
    ],
)
def test_diffpir_knob_is_neutral_by_default_and_checked(knob, neutral, on, bad):
    sde, prior, ops, ys, _, _ = make_problem()

    def go(**kw):
        return run(prior, sde, ops[1:], ys[1:], range(2), strategy="diffpir", steps=3, **kw)

    default, off, with_it = go(), go(**{knob: neutral}), go(**{knob: on})
    assert torch.equal(default.x, off.x) and not torch.allclose(default.x, with_it.x)
    assert guidance.resolved_options("diffpir", {}, ops[1:])[knob] == neutral
    for value in bad:
        with pytest.raises(ValueError, match=knob):
            go(**{knob: value})


def test_diffpir_relax_moves_the_estimate_relax_times_the_way_to_the_data_minimiser():
    """x0 + relax (prox(x0) - x0): the step's mean is affine in relax, relax 0 leaves the
    denoised estimate, 1 is DiffPIR's data step; the fresh noise is the same draw."""
    from invdiff.guidance import steps

    sde, prior, ops, ys, _, _ = make_problem()
    x = torch.randn(2, *SHAPE, dtype=F64, generator=torch.Generator().manual_seed(3))

    def step(relax):
        gens = generators_for(range(2), "cpu")
        kw = {"sde": sde, "score": prior, "generators": gens, "measurements": measurements(ops, ys)}
        return steps.diffpir_step(x, 0.5, 0.4, lam=0.1, zeta=1.0, relax=relax, **kw)

    (_, m0), (x1, m1), (x2, m2) = step(0.0), step(1.0), step(2.0)
    assert torch.allclose(m2, 2 * m1 - m0, atol=1e-10)
    assert (m1 - m0).abs().max() > 1e-3  # the data step moved the estimate
    assert torch.allclose(x2 - m2, x1 - m1)  # same fresh noise


@pytest.mark.parametrize("sde", [VESDE(0.01, 20.0), VPSDE()], ids=["ve", "vp"])
def test_inflated_tweedie_denoises_at_kappa_times_the_noise_level(sde):
    from invdiff.guidance import steps

    # x_0 ~ N(0, c I): E[x_0 | x_t] at noise-to-signal ratio r is x_t / alpha_t * c / (c + r^2);
    # told the ratio is kappa r, the estimate is x_t / alpha_t * c / (c + kappa^2 r^2).
    c, kappa = 0.04, 1.5
    prior = GaussianScore(sde, torch.zeros(D, dtype=F64), c * torch.eye(D, dtype=F64))
    x = torch.randn(3, *SHAPE, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.2, 0.4, 0.6], dtype=F64)
    alpha, sigma = sde.coefficients(t)
    r2 = (sigma / alpha)[:, None, None, None] ** 2
    got = steps.inflated_tweedie(sde, prior, x, t, kappa)
    want = x / alpha[:, None, None, None] * c / (c + kappa**2 * r2)
    assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)
    assert torch.equal(
        steps.inflated_tweedie(sde, prior, x, t), tweedie(sde, x, t, prior.score(x, t))
    )
