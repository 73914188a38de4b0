"""Photon-count CT (ct_poisson) and super-resolution (superres): the kit, their maths, DPS with an
operator's own log-likelihood, the strategy checks and `invdiff solve` end to end."""

from __future__ import annotations

import math

import h5py
import pytest
import torch
from invdiff_operators.ct_poisson import CTPoisson
from invdiff_operators.superres import SuperRes

from invdiff.core.operator import LinearOperator
from invdiff.data.phantoms import make_phantoms
from invdiff.guidance import Measurement, check_strategy, likelihood_step
from invdiff.testing import CHECKS, assert_conforms, check_operator
from tests._cli_helpers import assert_user_error, invoke

F64 = torch.float64


def _images(shape, g, n=2):
    return torch.rand((n, *shape), generator=g, dtype=F64)


# The conformance kit -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CTPoisson, SuperRes])
def test_new_operators_conform(cls):
    assert_conforms(cls, checks=[c for c in CHECKS if c != "cuda"])


def test_kit_takes_even_sides_that_are_odd_multiples_of_the_factor():
    (ok,) = check_operator(SuperRes, checks=["example"])
    assert ok.status == "pass" and "multiples of 2" in ok.detail

    class EvenBlocks(SuperRes):
        @classmethod
        def example(cls, generator):
            return cls((1, 40, 32), factor=2)  # 20 x 16 blocks: even, could hide a bug

    (bad,) = check_operator(EvenBlocks, checks=["example"])
    assert bad.status == "fail" and "H / 2 and W / 2" in bad.detail


def test_kit_catches_a_log_likelihood_of_the_wrong_scale():
    class WrongI0(CTPoisson):
        def log_likelihood(self, x, y, noise_std=None):
            return super().log_likelihood(x, 2 * y)  # as if twice the counts were measured

    (result,) = check_operator(WrongI0, checks=["measure"])
    assert result.status == "fail" and "grad log p" in result.detail


# ct_poisson ----------------------------------------------------------------------------------


def poisson_case(g, i0=1e3):
    op = CTPoisson((1, 21, 17), views=9, i0=i0).double()
    x = _images(op.image_shape, g)
    return op, x, op.measure(x, torch.Generator().manual_seed(3))


def test_poisson_log_likelihood_matches_scipy_up_to_a_constant(gen):
    from scipy.stats import poisson

    op, x, y = poisson_case(gen)
    assert torch.equal(y, y.round()) and (y >= 0).all()
    other = _images(op.image_shape, gen)
    ours = op.log_likelihood(x, y) - op.log_likelihood(other, y)
    want = [
        poisson.logpmf(y[i].numpy(), op(x)[i].numpy()).sum()
        - poisson.logpmf(y[i].numpy(), op(other)[i].numpy()).sum()
        for i in range(2)
    ]
    torch.testing.assert_close(ours, torch.tensor(want, dtype=F64), rtol=1e-10, atol=1e-8)


def test_poisson_log_likelihood_gradient_matches_finite_differences_and_closed_form(gen):
    op, x, y = poisson_case(gen)
    score = op.likelihood_score(x, y)
    closed = op.scale * op.ct.adjoint(op(x) - y)  # (mu / n) W^T (lambda - y)
    torch.testing.assert_close(score, closed, rtol=1e-10, atol=1e-10)
    v = torch.randn(x.shape, generator=gen, dtype=F64)
    h = 1e-5
    fd = (op.log_likelihood(x + h * v, y) - op.log_likelihood(x - h * v, y)) / (2 * h)
    torch.testing.assert_close(fd, (score * v).flatten(1).sum(1), rtol=1e-6, atol=1e-6)


def test_poisson_measure_is_seeded_and_has_the_model_mean(gen):
    op, x, _ = poisson_case(gen, i0=50.0)
    xs = x[:1].expand(400, -1, -1, -1)
    y1 = op.measure(xs, torch.Generator().manual_seed(5))
    assert torch.equal(y1, op.measure(xs, torch.Generator().manual_seed(5)))
    rate = op(x[:1])[0]
    z = (y1.mean(0) - rate) / (rate / 400).sqrt()  # per-bin standard errors
    assert z.abs().mean() < 1.0 and z.abs().max() < 6.0
    assert torch.allclose(y1.var(0).mean(), rate.mean(), rtol=0.1)


def test_poisson_baseline_is_log_then_fbp(gen):
    op, x, _ = poisson_case(gen, i0=1e6)
    name, image = op.baseline(op(x))  # noiseless counts: the log recovers (mu / n) W x
    assert name == "log + FBP"
    torch.testing.assert_close(image, op.ct.fbp(op.ct(x)), rtol=1e-9, atol=1e-9)
    zero = op.baseline(torch.zeros_like(op(x)))[1]  # no counts at all: clipped, still finite
    assert torch.isfinite(zero).all()


def test_poisson_geometry_round_trip_and_refusals():
    op = CTPoisson((1, 16, 16), views=5)
    op.set_geometry(op.geometry(), "in.h5")
    with pytest.raises(ValueError, match="ct_poisson"):
        op.set_geometry({"angles": [0.0, 1.0]}, "in.h5")
    with pytest.raises(ValueError, match="--i0"):
        CTPoisson((1, 16, 16), i0=0.0)


# superres ------------------------------------------------------------------------------------


def test_superres_is_block_averaging_with_nearest_pseudo_inverse():
    op = SuperRes((1, 4, 6), factor=2)
    x = torch.arange(24.0).reshape(1, 1, 4, 6)
    torch.testing.assert_close(op(x)[0, 0, 0], torch.tensor([3.5, 5.5, 7.5]))
    y = op(x)
    up = op.pseudo_inverse(y)
    torch.testing.assert_close(up[0, 0, :2, :2], torch.full((2, 2), 3.5))
    torch.testing.assert_close(op(up), y)  # A A^+ = I
    torch.testing.assert_close(op(op.adjoint(y)), y / 4)  # A A^T = I / f^2


def test_superres_baseline_is_bicubic_and_exact_on_constants():
    op = SuperRes((1, 16, 12), factor=4)
    name, image = op.baseline(torch.full((1, 1, 4, 3), 0.3))
    assert name == "bicubic" and image.shape == (1, 1, 16, 12)
    torch.testing.assert_close(image, torch.full_like(image, 0.3))


def test_superres_refuses_a_factor_that_does_not_divide_the_sides():
    with pytest.raises(ValueError, match="--factor 4"):
        SuperRes((1, 18, 16), factor=4)


# DPS follows the operator's own log-likelihood -------------------------------------------------


class Identity(LinearOperator):
    """y = x with the default Gaussian likelihood."""

    name = "identity"

    def forward(self, x):
        return x

    def adjoint(self, y):
        return y


class Shifted(Identity):
    """y = x, but the likelihood believes the data were offset: log p = -||y + 1 - x||^2 / 2."""

    name = "shifted"

    def log_likelihood(self, x, y, noise_std=None):
        r = y + 1.0 - x
        return -0.5 * r.flatten(1).pow(2).sum(1)


def test_dps_step_follows_the_operators_log_likelihood(gen):
    x0, y = _images((1, 5, 5), gen), _images((1, 5, 5), gen)
    d = likelihood_step(x0, [Measurement(Identity((1, 5, 5)), y)])
    torch.testing.assert_close(d, x0 - y)  # Cauchy step: the data, exactly
    d = likelihood_step(x0, [Measurement(Shifted((1, 5, 5)), y)])
    torch.testing.assert_close(d, x0 - y - 1.0)
    assert Identity((1, 5, 5)).gaussian_likelihood and not Shifted((1, 5, 5)).gaussian_likelihood


def test_dps_samples_follow_the_operators_log_likelihood():
    from invdiff.core.samplers import generators_for
    from invdiff.core.score import GaussianScore
    from invdiff.core.sde import VESDE
    from invdiff.guidance import solve

    sde = VESDE(0.01, 10.0)
    prior = GaussianScore(sde, torch.zeros(16, dtype=F64), torch.eye(16, dtype=F64))
    y = torch.full((1, 1, 4, 4), 0.2, dtype=F64)
    out = {}
    for cls in (Identity, Shifted):
        op = cls((1, 4, 4), noise_std=0.05)
        res = solve(
            prior,
            sde,
            [Measurement(op, y)],
            generators_for(range(8), "cpu"),
            strategy="dps",
            steps=50,
        )
        out[cls.name] = float(res.x.mean())
    assert abs(out["identity"] - 0.2) < 0.15 and abs(out["shifted"] - 1.2) < 0.3


def test_poisson_dps_step_points_along_the_poisson_gradient(gen):
    op, x, y = poisson_case(gen)
    x0 = torch.full_like(x, 0.5)
    d = likelihood_step(x0, [Measurement(op, y)])
    grad = -op.likelihood_score(x0, y)
    cos = (d * grad).flatten(1).sum(1) / (d.flatten(1).norm(dim=1) * grad.flatten(1).norm(dim=1))
    torch.testing.assert_close(cos, torch.ones(2, dtype=F64))
    # its length: g / (u^T H u), H = (mu / n)^2 W^T diag(lambda) W the Poisson Hessian at x0
    u = grad / grad.flatten(1).norm(dim=1)[:, None, None, None]
    curvature = (op.scale**2 * op(x0) * op.ct(u) ** 2).flatten(1).sum(1)
    # (a forward difference of gradients: first-order accurate, 1.5e-3 relative seen here)
    torch.testing.assert_close(d, grad / curvature[:, None, None, None], rtol=1e-2, atol=0)
    assert (op.log_likelihood(x0 - d, y) > op.log_likelihood(x0, y)).all()


# Strategies and the command line -------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["diffpir", "projection", "moment", "noisy_likelihood"])
def test_only_dps_takes_photon_counts(strategy):
    op = CTPoisson((1, 16, 16), views=5)
    with pytest.raises(ValueError, match="use --strategy dps") as err:
        check_strategy(strategy, [op])
    assert "\n" not in str(err.value)
    check_strategy("dps", [op])


def test_a_linear_operator_with_its_own_likelihood_is_dps_only():
    with pytest.raises(ValueError, match="defines its own likelihood; use --strategy dps"):
        check_strategy("projection", [Shifted((1, 4, 4))])
    check_strategy("projection", [Identity((1, 4, 4))])


def _write(path, images):
    with h5py.File(path, "w") as f:
        f["image"] = images
    return path


def test_solve_superres_end_to_end(tmp_path, tiny_model):
    src = _write(tmp_path / "in.h5", make_phantoms(2, 16, seed=2)[0])
    out = tmp_path / "out.h5"
    args = ["--model", tiny_model, "--steps", "3", "--samples", "2", "--no-progress"]
    r = invoke(
        "solve", "--operator", "superres", "--factor", "2", "--simulate", src, "-o", out, *args
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        assert f.attrs["baseline"] == "bicubic" and "superres" in f.attrs["operators"]
        assert f["samples"].shape == (2, 2, 1, 16, 16) and f["baseline"].shape == (2, 1, 16, 16)
        assert math.isfinite(float(f["metrics/baseline_psnr"][:].mean()))


def test_solve_ct_poisson_end_to_end_and_refused_without_dps(tmp_path, tiny_model):
    src = _write(tmp_path / "in.h5", make_phantoms(1, 16, seed=2)[0])
    args = ["--model", tiny_model, "--steps", "3", "--no-progress", "--simulate", src]
    op = ["--operator", "ct_poisson", "--views", "5", "--i0", "1000"]
    r = invoke("solve", *op, "--strategy", "dps", "-o", tmp_path / "out.h5", *args)
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "out.h5") as f:
        assert f.attrs["baseline"] == "log + FBP"
        assert math.isfinite(float(f["samples"][:].sum()))
    r = invoke("solve", *op, "--strategy", "diffpir", "-o", tmp_path / "no.h5", *args)
    assert_user_error(r, "ct_poisson", "--strategy dps")
