"""SDEs: coefficients against their own ODEs, marginals against simulation, exact transitions."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.core.sde import SDES, VESDE, VPSDE, SubVPSDE, randn, sde_from_config

SDE_CASES = [VESDE(0.01, 20.0), VPSDE(), SubVPSDE()]
IDS = [s.name for s in SDE_CASES]
D64 = torch.float64


def _f_g(sde, t: torch.Tensor):
    """Return the scalar drift coefficient f(t) (drift = f x) and g(t)."""
    f, g = sde.drift_diffusion(torch.ones(len(t), 1, dtype=D64), t)
    return f[:, 0], g


@pytest.mark.parametrize("sde", SDE_CASES, ids=IDS)
def test_coefficients_solve_the_moment_odes(sde):
    # For dx = f x dt + g dw: d alpha / dt = f alpha and d sigma^2 / dt = 2 f sigma^2 + g^2.
    t = torch.linspace(0.05, 0.95, 19, dtype=D64)
    h = 1e-6
    (a1, s1), (a0, s0) = sde.coefficients(t + h), sde.coefficients(t - h)
    alpha, sigma = sde.coefficients(t)
    f, g = _f_g(sde, t)
    torch.testing.assert_close((a1 - a0) / (2 * h), f * alpha, rtol=1e-6, atol=1e-8)
    dvar = (s1**2 - s0**2) / (2 * h)
    torch.testing.assert_close(dvar, 2 * f * sigma**2 + g**2, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sde", SDE_CASES, ids=IDS)
def test_marginal_matches_simulation(sde, gen):
    # Euler-Maruyama from x_0 = 0.7 to t = 0.6 with n particles. Its exact moments follow the
    # recursion m <- (1 + f dt) m, v <- (1 + f dt)^2 v + g^2 dt, whose gap to the closed form is
    # the discretisation bias; sampling error is 5 standard errors on top of it.
    n, steps, t_end, x0 = 20_000, 600, 0.6, 0.7
    t0 = 0.0
    _, sigma0 = sde.coefficients(torch.tensor([t0], dtype=D64))
    v0 = float(sigma0**2) if sde.name == "ve" else 0.0  # VE's x_0 carries sigma_min of noise
    x = x0 + math.sqrt(v0) * torch.randn(n, 1, generator=gen, dtype=D64)
    m, v = x0, v0
    dt = (t_end - t0) / steps
    for k in range(steps):
        tt = torch.full((n,), t0 + k * dt, dtype=D64)
        fx, g = sde.drift_diffusion(x, tt)
        x = x + fx * dt + g[:, None] * math.sqrt(dt) * torch.randn(n, 1, generator=gen, dtype=D64)
        f1, g1 = (float(u[0]) for u in _f_g(sde, tt[:1]))
        m, v = (1 + f1 * dt) * m, (1 + f1 * dt) ** 2 * v + g1**2 * dt
    mean, std = sde.marginal(torch.full((1, 1), x0, dtype=D64), torch.tensor([t_end], dtype=D64))
    mean, var = float(mean), float(std) ** 2
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))
    assert abs(float(x.mean()) - mean) <= 5 * se_mean + abs(m - mean)
    assert abs(float(x.var()) - var) <= 5 * se_var + abs(v - var)
    assert abs(v - var) < 0.02 * var  # the bias itself is small at this step count


@pytest.mark.parametrize("sde", SDE_CASES, ids=IDS)
def test_transitions_compose(sde):
    s, u, t = (torch.tensor([v], dtype=D64) for v in (0.1, 0.45, 0.9))
    a_su, v_su = sde.transition(s, u)
    a_ut, v_ut = sde.transition(u, t)
    a_st, v_st = sde.transition(s, t)
    torch.testing.assert_close(a_su * a_ut, a_st)
    torch.testing.assert_close(a_ut**2 * v_su + v_ut, v_st)


@pytest.mark.parametrize("sde", SDE_CASES, ids=IDS)
def test_discretize_is_the_exact_transition(sde):
    x = torch.tensor([[0.3], [-1.0]], dtype=D64)
    s, t = torch.full((2,), 0.2, dtype=D64), torch.full((2,), 0.3, dtype=D64)
    f, big_g = sde.discretize(x, t, s)
    a, v = sde.transition(s, t)
    torch.testing.assert_close(x + f, a[:, None] * x)
    torch.testing.assert_close(big_g, v.sqrt())


@pytest.mark.parametrize("sde", SDE_CASES, ids=IDS)
def test_prior_logp_and_sample(sde, gen):
    z = sde.prior_sample((4000,), [gen], torch.empty(0, dtype=D64))
    assert abs(float(z.std()) / sde.prior_std - 1) < 5 / math.sqrt(2 * 4000)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)
    # At t = 1 the marginal is (close to) the prior.
    alpha, sigma = sde.coefficients(torch.tensor([1.0], dtype=D64))
    assert abs(float(sigma) / sde.prior_std - 1) < 1e-3 or sde.name == "subvp"
    assert float(alpha) < 1e-2 or sde.name == "ve"


@pytest.mark.parametrize("sde", SDE_CASES, ids=IDS)
def test_config_round_trip(sde):
    again = sde_from_config(sde.config())
    t = torch.linspace(0, 1, 5, dtype=D64)
    for a, b in zip(again.coefficients(t), sde.coefficients(t), strict=True):
        torch.testing.assert_close(a, b)
    assert set(SDES) == {"ve", "vp", "subvp"}


def test_reverse_drift_of_the_ode_is_half_the_score_term():
    sde, x = VPSDE(), torch.ones(2, 3, dtype=D64)
    t, score = torch.full((2,), 0.5, dtype=D64), torch.full((2, 3), 2.0, dtype=D64)
    f, g = sde.drift_diffusion(x, t)
    torch.testing.assert_close(sde.reverse_drift(x, t, score), f - g[:, None] ** 2 * score)
    torch.testing.assert_close(
        sde.reverse_drift(x, t, score, ode=True), f - 0.5 * g[:, None] ** 2 * score
    )


def test_randn_depends_on_each_generator_only():
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    batch = randn(gens, (2, 2), torch.empty(0))
    alone = randn([torch.Generator().manual_seed(6)], (2, 2), torch.empty(0))
    torch.testing.assert_close(batch[1:2], alone)


def test_bad_sde_parameters_are_refused():
    with pytest.raises(ValueError):
        VESDE(1.0, 0.5)
    with pytest.raises(ValueError):
        sde_from_config({"name": "nope"})
