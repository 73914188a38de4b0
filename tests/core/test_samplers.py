"""Samplers fed the exact score of a Gaussian recover its mean and variance.

The data are x_0 ~ N(m, diag(c)) in d = 256 independent coordinates, so statistics averaged over
coordinates have small, known sampling errors. For n samples:
  mean:     zbar = mean_i (xbar_i - m_i) / sqrt(c_i / n)         ~ N(0, 1/d)
  variance: rbar = mean_i (s_i^2 / c_i - 1)                      ~ N(0, 2 / ((n - 1) d))
Each check allows 5 standard errors plus the sampler's discretisation bias at that step count,
measured with 8x more samples by running this file as a script
(`python tests/core/test_samplers.py`); the BIAS table below is its output (rounded up) on
2026-11-23, CPU.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from invdiff.core import samplers as S
from invdiff.core.sde import VESDE, VPSDE, SubVPSDE

D64 = torch.float64
DIM, N, STEPS = 256, 200, 200


class DiagonalGaussianScore:
    """Exact score when x_0 ~ N(m, diag(c)): -(x - alpha m) / (alpha^2 c + sigma^2)."""

    def __init__(self, sde, mean, var):
        self.sde, self.mean, self.var = sde, mean, var

    def score(self, x, t):
        alpha, sigma = self.sde.coefficients(t)
        a, s = alpha[:, None], sigma[:, None]
        return -(x - a * self.mean) / (a**2 * self.var + s**2)


def problem(dim=DIM):
    g = torch.Generator().manual_seed(0)
    mean = 0.2 + 0.6 * torch.rand(dim, generator=g, dtype=D64)
    var = torch.exp(
        torch.empty(dim, dtype=D64).uniform_(math.log(3e-3), math.log(5e-2), generator=g)
    )
    return mean, var


SDE_CASES = {"ve": VESDE(0.01, 20.0), "vp": VPSDE(), "subvp": SubVPSDE()}
LANGEVIN = functools.partial(S.langevin, snr=0.16)
SAMPLERS = {
    "euler_maruyama": dict(predictor=S.euler_maruyama),
    "reverse_diffusion": dict(predictor=S.reverse_diffusion),
    "ancestral": dict(predictor=S.ancestral),
    "rd+langevin": dict(predictor=S.reverse_diffusion, corrector=LANGEVIN),
}

# (sde, sampler) -> (|bias of zbar|, |bias of rbar|) at STEPS steps, measured with 8 * N samples.
BIAS = {
    ("ve", "euler_maruyama"): (0.075, 0.0124),
    ("ve", "reverse_diffusion"): (0.076, 0.0391),
    ("ve", "ancestral"): (0.076, 0.0498),
    ("ve", "rd+langevin"): (0.095, 0.0368),
    ("ve", "heun"): (0.384, 0.0069),  # mean: VE prior N(0, 400 I) ignores m; the ODE keeps it
    ("vp", "euler_maruyama"): (0.126, 0.0392),
    ("vp", "reverse_diffusion"): (0.082, 0.1312),  # +0.016 at 800 steps
    ("vp", "ancestral"): (0.072, 0.2373),  # -0.089 at 800 steps: DDPM's lower-bound variance
    ("vp", "rd+langevin"): (0.073, 0.0982),
    ("vp", "heun"): (0.094, 0.0193),
    ("subvp", "euler_maruyama"): (0.224, 0.0133),
    ("subvp", "reverse_diffusion"): (0.100, 0.0907),
    ("subvp", "ancestral"): (0.067, 0.1240),
    ("subvp", "rd+langevin"): (0.077, 0.0554),
    ("subvp", "heun"): (0.092, 0.0118),
}


def run(sde_name, sampler, n=N, seed0=0):
    sde = SDE_CASES[sde_name]
    mean, var = problem()
    fn = DiagonalGaussianScore(sde, mean, var)
    gens = S.generators_for(range(seed0, seed0 + n), "cpu")
    like = torch.empty(0, dtype=D64)
    if sampler == "heun":
        res = S.heun_ode_sample(fn, sde, (DIM,), gens, steps=STEPS // 2, like=like)
    else:
        res = S.pc_sample(fn, sde, (DIM,), gens, steps=STEPS, like=like, **SAMPLERS[sampler])
    x = res.x
    zbar = float(((x.mean(0) - mean) / (var / n).sqrt()).mean())
    rbar = float((x.var(0) / var - 1).mean())
    return zbar, rbar, res.nfe


CASES = [(s, p) for s in SDE_CASES for p in [*SAMPLERS, "heun"]]


@pytest.mark.parametrize("sde_name,sampler", CASES)
def test_recovers_gaussian_moments(sde_name, sampler):
    zbar, rbar, nfe = run(sde_name, sampler)
    bz, br = BIAS.get((sde_name, sampler), (math.inf, math.inf))
    assert abs(zbar) <= 5 / math.sqrt(DIM) + bz, (zbar, bz)
    assert abs(rbar) <= 5 * math.sqrt(2 / ((N - 1) * DIM)) + br, (rbar, br)
    per_step = 2 if "langevin" in sampler else 1
    expected = 2 * (STEPS // 2) + 1 if sampler == "heun" else STEPS * per_step + 1
    assert nfe == expected


def test_rk45_integrates_the_same_ode_as_heun():
    sde, (mean, var) = SDE_CASES["vp"], problem(16)
    fn = DiagonalGaussianScore(sde, mean, var)
    like = torch.empty(0, dtype=D64)
    ode = S.rk45_ode_sample(
        fn, sde, (16,), S.generators_for(range(4), "cpu"), rtol=1e-7, atol=1e-9, like=like
    )
    heun = S.heun_ode_sample(
        fn, sde, (16,), S.generators_for(range(4), "cpu"), steps=400, like=like
    )
    torch.testing.assert_close(ode.x, heun.x, rtol=0, atol=2e-4)
    assert ode.nfe > 4 * 10  # adaptive steps, counted per sample


@pytest.mark.parametrize("sampler", ["reverse_diffusion", "rd+langevin", "heun"])
def test_sample_k_depends_only_on_seed_k(sampler):
    sde, (mean, var) = SDE_CASES["ve"], problem(8)
    fn = DiagonalGaussianScore(sde, mean, var)
    like = torch.empty(0, dtype=D64)

    def go(seeds):
        gens = S.generators_for(seeds, "cpu")
        if sampler == "heun":
            return S.heun_ode_sample(fn, sde, (8,), gens, steps=10, like=like).x
        return S.pc_sample(fn, sde, (8,), gens, steps=10, like=like, **SAMPLERS[sampler]).x

    batch = go([3, 4, 5, 6])
    torch.testing.assert_close(go([5]), batch[2:3], rtol=0, atol=1e-12)
    torch.testing.assert_close(go([6, 3]), batch[[3, 0]], rtol=0, atol=1e-12)
    assert not torch.allclose(batch[0], batch[1])


if __name__ == "__main__":  # measure the BIAS table: 8x the samples, other seeds
    for sde_name, sampler in CASES:
        n = 8 * N
        zbar, rbar, _ = run(sde_name, sampler, n=n, seed0=10_000)
        se_z, se_r = 1 / math.sqrt(DIM), math.sqrt(2 / ((n - 1) * DIM))
        # zbar is in units of the test's sampling error sqrt(c/N); rescale to them
        bz = abs(zbar) * math.sqrt(N / n) + 3 * se_z * math.sqrt(N / n)
        br = abs(rbar) + 3 * se_r
        print(f'    ("{sde_name}", "{sampler}"): ({bz:.3f}, {br:.4f}),', flush=True)


def test_warm_start_from_a_data_draw_keeps_the_distribution():
    """CCDF warm start: x_init ~ p_0 diffused to sigma = 1 is an exact draw of p_t0, so the
    reverse process from there recovers p_0's moments, with NFE = steps + 1."""
    sde = SDE_CASES["ve"]
    mean, var = problem()
    g = torch.Generator().manual_seed(123)
    x_init = mean + var.sqrt() * torch.randn(N, DIM, generator=g, dtype=D64)
    gens = S.generators_for(range(N), "cpu")
    like = torch.empty(0, dtype=D64)
    fn = DiagonalGaussianScore(sde, mean, var)
    res = S.pc_sample(fn, sde, (DIM,), gens, steps=STEPS // 2, like=like, start=(x_init, 1.0))
    zbar = float(((res.x.mean(0) - mean) / (var / N).sqrt()).mean())
    rbar = float((res.x.var(0) / var - 1).mean())
    assert abs(zbar) <= 5 / math.sqrt(DIM) + 0.08, zbar
    assert abs(rbar) <= 5 * math.sqrt(2 / ((N - 1) * DIM)) + 0.05, rbar
    assert res.nfe == STEPS // 2 + 1
    # A start shifted by 2 keeps the shift that p(x_0 | x_t0) keeps: 2 c / (c + sigma^2).
    bad = S.pc_sample(fn, sde, (DIM,), gens, steps=STEPS // 2, like=like, start=(x_init + 2, 1.0))
    kept = float((2 * var / (var + 1.0)).mean())
    assert abs(float((bad.x.mean(0) - mean).mean()) - kept) < 0.25 * kept, kept


def test_warm_start_rejects_bad_noise_levels():
    gens = S.generators_for([0], "cpu")
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="start noise level"):
            S.warm_start(SDE_CASES["ve"], torch.zeros(1, 4), sigma, (4,), gens, torch.empty(0))
