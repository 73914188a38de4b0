"""The individual operator conformance checks behind :mod:`invdiff.testing` (private).

Each check takes (operator class, generator) and returns (value, tolerance, detail), raises
``CheckFailed`` with the measured value, or raises ``Skip`` where it does not apply;
:data:`CHECKS` names them. :mod:`invdiff.testing` runs them and re-exports every public name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invdiff.core.operator import LinearOperator, Operator, real_inner

#: Relative adjoint tolerance of an exact operator, by precision.
ADJOINT_RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
#: Relative tolerance of float64 identities that hold exactly up to round-off.
EXACT_RTOL = 1e-9
#: Noise level used by the likelihood and measurement checks.
CHECK_NOISE_STD = 0.1
#: A statistic is flagged when it lies further than this many standard errors from its target.
Z_LIMIT = 6.0
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class CheckFailed(Exception):
    """Raised inside a check to report a failed expectation with its measured value."""

    def __init__(self, detail: str, value: float | None = None, tolerance: float | None = None):
        super().__init__(detail)
        self.value, self.tolerance = value, tolerance


class Skip(Exception):
    """Raised inside a check that does not apply to this operator or machine."""


def relative_gap(a: Tensor, b: Tensor) -> float:
    """Return ||a - b|| / max(||b||, tiny) over all entries (complex handled)."""
    diff = float(torch.linalg.vector_norm(a - b))
    return diff / max(float(torch.linalg.vector_norm(b)), torch.finfo(torch.float64).tiny)


def _expect(value: float, tolerance: float, what: str) -> tuple[float, float, str]:
    if not value <= tolerance:  # also catches NaN
        raise CheckFailed(f"{what}: {value:.3g} > {tolerance:.3g}", value, tolerance)
    return value, tolerance, what


def _images(op: Operator, g: torch.Generator, batch: int, dtype: torch.dtype) -> Tensor:
    return torch.rand((batch, *op.image_shape), generator=g, dtype=torch.float64).to(dtype)


def _like(y: Tensor, g: torch.Generator) -> Tensor:
    """Return standard normal noise with y's shape and (real or complex) dtype, on y's device."""
    real = torch.view_as_real(y) if y.is_complex() else y
    n = torch.randn(real.shape, generator=g, dtype=torch.float64).to(real.dtype)
    n = n.to(y.device)
    return torch.view_as_complex(n) if y.is_complex() else n


def _norm(t: Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


# Checks: each takes (cls, generator) and returns (value, tolerance, detail) or raises.


def check_example(cls: type[Operator], g: torch.Generator):
    """Check that ``example`` builds an instance with an odd (and non-square) image shape.

    Where the instance needs sides that are multiples of m (``side_multiple``, e.g. a
    super-resolution factor), H / m and W / m must be odd instead: an even-sided image is then
    the only kind there is, and odd multiples still expose off-by-one and transposition bugs.
    """
    op = cls.example(g)
    if not isinstance(op, cls):
        raise CheckFailed(f"example() returned {type(op).__name__}, not {cls.__name__}")
    _, h, w = op.image_shape
    m = int(getattr(op, "side_multiple", 1))
    if m < 1 or h % m or w % m:
        raise CheckFailed(f"example image shape {op.image_shape}: sides not multiples of {m}")
    if (h // m) % 2 == 0 or (w // m) % 2 == 0 or (h == w) != bool(cls.square_only):
        want = "odd and equal" if cls.square_only else "odd and different"
        sides = "H and W" if m == 1 else f"H / {m} and W / {m}"
        raise CheckFailed(f"example image shape {op.image_shape}: {sides} should be {want}")
    return None, None, f"image shape {op.image_shape}" + (f", multiples of {m}" if m > 1 else "")


def check_input_validation(cls: type[Operator], g: torch.Generator):
    """Check that images with H and W swapped are refused with a ValueError, not reshaped."""
    op = cls.example(g)
    c, h, w = op.image_shape
    if h == w:
        raise Skip("square example: a transposed image has the right shape")
    try:
        op(torch.zeros(1, c, w, h))
    except ValueError:
        return None, None, "transposed input refused"
    raise CheckFailed("forward accepted an image of shape (1, C, W, H); raise InvdiffError")


def check_dtype(cls: type[Operator], g: torch.Generator):
    """Check that float32 / float64 inputs give float32 / float64 (or complex64 / 128) outputs."""
    op = cls.example(g)
    for dtype in (torch.float32, torch.float64):
        x = _images(op, g, 2, dtype)
        y = op(x)
        if y.dtype not in (dtype, COMPLEX_OF[dtype]):
            raise CheckFailed(f"forward turned {dtype} into {y.dtype}")
        outputs = {"likelihood_score": op.likelihood_score(x, op(x) + _like(y, g), 0.5)}
        if isinstance(op, LinearOperator):
            outputs["adjoint"] = op.adjoint(y)
            outputs["pseudo_inverse"] = op.pseudo_inverse(y)
        for name, out in outputs.items():
            if out.dtype != dtype or tuple(out.shape) != tuple(x.shape):
                raise CheckFailed(
                    f"{name} on {dtype} gave {out.dtype} {tuple(out.shape)}, "
                    f"expected {dtype} {tuple(x.shape)}"
                )
    return None, None, "float32 and float64 preserved"


def check_adjoint(dtype: torch.dtype) -> Callable[[type[Operator], torch.Generator], Any]:
    """Return the dot-product test <A x, y> = <x, A^T y> in ``dtype`` (linear operators)."""

    def check(cls: type[Operator], g: torch.Generator):
        if not issubclass(cls, LinearOperator):
            raise Skip("not linear")
        op = cls.example(g).to(dtype)
        x = _images(op, g, 2, dtype)
        ax = op(x)
        y = _like(ax, g)
        lhs = float(real_inner(ax, y).sum())
        rhs = float(real_inner(x, op.adjoint(y)).sum())
        err = abs(lhs - rhs) / max(_norm(ax) * _norm(y), torch.finfo(torch.float64).tiny)
        rtol = max(ADJOINT_RTOL[dtype], cls.adjoint_rtol or 0.0)
        return _expect(err, rtol, "|<Ax,y> - <x,A^T y>| / (|Ax| |y|)")

    check.__doc__ = f"Check adjointness in {dtype}."
    return check


def check_likelihood_score(cls: type[Operator], g: torch.Generator):
    """Check likelihood_score against torch.autograd of log_likelihood (float64)."""
    op = cls.example(g).to(torch.float64)
    x = _images(op, g, 2, torch.float64)
    ax = op(x)
    y = ax + CHECK_NOISE_STD * _like(ax, g)
    got = op.likelihood_score(x, y, CHECK_NOISE_STD)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(op.log_likelihood(xr, y, CHECK_NOISE_STD).sum(), xr)
    return _expect(relative_gap(got, want), 1e-8, "||score - autograd|| / ||autograd||")


def check_batch(cls: type[Operator], g: torch.Generator):
    """Check that a batch of 3 gives the same results as three batches of 1 (float64)."""
    op = cls.example(g).to(torch.float64)
    x = _images(op, g, 3, torch.float64)
    y = op(x) + CHECK_NOISE_STD * _like(op(x), g)
    maps: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "forward": lambda xi, yi: op(xi),
        "likelihood_score": lambda xi, yi: op.likelihood_score(xi, yi, CHECK_NOISE_STD),
    }
    if isinstance(op, LinearOperator):
        maps["adjoint"] = lambda xi, yi: op.adjoint(yi)
        maps["pseudo_inverse"] = lambda xi, yi: op.pseudo_inverse(yi)
    worst = 0.0
    for name, fn in maps.items():
        whole = fn(x, y)
        single = torch.cat([fn(x[i : i + 1], y[i : i + 1]) for i in range(3)])
        worst = max(worst, relative_gap(whole, single))
        _expect(worst, EXACT_RTOL, f"{name}: batch of 3 vs 3 batches of 1")
    return worst, EXACT_RTOL, "batch of 3 == 3 x batch of 1"


def _devices_agree(cls: type[Operator], g: torch.Generator, device: torch.device):
    op = cls.example(g).to(torch.float64)
    x = _images(op, g, 2, torch.float64)
    want = {"forward": op(x)}
    y = _like(want["forward"], g)
    if isinstance(op, LinearOperator):
        want["adjoint"] = op.adjoint(y)
    op = op.to(device)
    got = {"forward": op(x.to(device))}
    if isinstance(op, LinearOperator):
        got["adjoint"] = op.adjoint(y.to(device))
    worst = 0.0
    for name, out in got.items():
        if out.device != x.to(device).device:
            raise CheckFailed(f"{name} on {device} returned a tensor on {out.device}")
        worst = max(worst, relative_gap(out.cpu(), want[name]))
    return _expect(worst, 1e-6, f"{device} vs cpu")


def check_device(cls: type[Operator], g: torch.Generator):
    """Check that outputs stay on the input's device (CPU here; see ``check_cuda``)."""
    return _devices_agree(cls, g, torch.device("cpu"))


def check_cuda(cls: type[Operator], g: torch.Generator):
    """Check that the operator moved to CUDA gives the CPU results on CUDA (when present)."""
    if not torch.cuda.is_available():
        raise Skip("no CUDA device")
    return _devices_agree(cls, g, torch.device("cuda"))


def check_pseudo_inverse(cls: type[Operator], g: torch.Generator):
    """Where declared exact: A A^+ y = y for y = A x, and A^+ A A^+ y = A^+ y (float64)."""
    if not (issubclass(cls, LinearOperator) and cls.exact_pseudo_inverse):
        raise Skip("no exact pseudo-inverse declared")
    op = cls.example(g).to(torch.float64)
    y = op(_images(op, g, 2, torch.float64))
    xp = op.pseudo_inverse(y)
    err = max(relative_gap(op(xp), y), relative_gap(op.pseudo_inverse(op(xp)), xp))
    return _expect(err, EXACT_RTOL, "A A^+ y vs y and A^+ A A^+ y vs A^+ y")


def check_project(cls: type[Operator], g: torch.Generator):
    """Where exact: A project(x, y, lam) = (1 - lam) A x + lam y for y in the range of A."""
    if not (issubclass(cls, LinearOperator) and cls.exact_pseudo_inverse):
        raise Skip("no exact pseudo-inverse declared")
    op = cls.example(g).to(torch.float64)
    x, truth = _images(op, g, 2, torch.float64), _images(op, g, 2, torch.float64)
    y = op(truth)
    worst = 0.0
    for lam in (1.0, 0.3):
        want = (1 - lam) * op(x) + lam * y
        worst = max(worst, relative_gap(op(op.project(x, y, lam)), want))
    return _expect(worst, EXACT_RTOL, "A project(x, y, lam) vs (1 - lam) A x + lam y")


def check_measure(cls: type[Operator], g: torch.Generator):
    """Check y - A x of ``measure``: N(0, s^2) on the measured entries, 0 elsewhere, seeded.

    Measured entries are those that ``restrict_to_measured`` keeps; complex residuals count
    their real and imaginary parts. The mean and variance must lie within Z_LIMIT standard
    errors of 0 and s^2 (standard errors s sqrt(1/n) and s^2 sqrt(2/n)). Operators with their own
    ``log_likelihood`` are checked against it instead (:func:`_check_own_noise`).
    """
    op = cls.example(g).to(torch.float64)
    op.noise_std = CHECK_NOISE_STD
    x = _images(op, g, 4, torch.float64)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    y = op.measure(x, torch.Generator().manual_seed(seed))
    if not torch.equal(y, op.measure(x, torch.Generator().manual_seed(seed))):
        raise CheckFailed("measure with the same seeded generator gave different results")
    if not op.gaussian_likelihood:
        return _check_own_noise(op, x, g)
    residual = y - op(x)
    as_real = torch.view_as_real if residual.is_complex() else (lambda t: t)
    ones = torch.ones_like(residual) * (1 + 1j if residual.is_complex() else 1)
    kept = as_real(op.restrict_to_measured(ones)) != 0
    residual = as_real(residual)
    if torch.any(residual[~kept] != 0):
        raise CheckFailed("measure put noise on entries that restrict_to_measured zeroes")
    r = residual[kept] / CHECK_NOISE_STD
    n = r.numel()
    if n < 100:
        raise CheckFailed(f"only {n} noisy entries; the example is too small to check noise")
    z = max(abs(float(r.mean())) * math.sqrt(n), abs(float(r.var()) - 1) / math.sqrt(2 / n))
    _expect(z, Z_LIMIT, "noise mean / variance, in standard errors")
    return z, Z_LIMIT, f"std {float(r.std()) * CHECK_NOISE_STD:.4g} over {n} entries"


def _check_own_noise(op: Operator, x: Tensor, g: torch.Generator):
    """Check ``measure`` against an operator's own ``log_likelihood`` (float64).

    Two identities of any correct model p(y | x) whose mean is ``forward``: E[y] = A(x) (the mean
    residual, in standard errors of the empirical variance) and E[grad_x log p(y | x)] = 0 (the
    score has mean zero, Fisher's identity; tested along a random direction v, one value
    <v, score> per draw). A log-likelihood of the wrong scale, or noise drawn from another law,
    moves one of them away from 0.
    """
    draws = 64
    xs = x[:1].expand(draws, *x.shape[1:]).contiguous()
    y = op.measure(
        xs, torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    )
    residual = y - op(xs)
    as_real = torch.view_as_real if residual.is_complex() else (lambda t: t)
    r = as_real(residual).flatten()
    z_mean = abs(float(r.mean())) / max(float(r.std()) / math.sqrt(r.numel()), 1e-300)
    _expect(z_mean, Z_LIMIT, "mean of y - A(x), in standard errors")
    v = torch.randn(x.shape[1:], generator=g, dtype=torch.float64)
    u = real_inner(op.likelihood_score(xs, y), v.expand_as(xs))
    z_score = abs(float(u.mean())) / max(float(u.std()) / math.sqrt(draws), 1e-300)
    _expect(z_score, Z_LIMIT, "mean of <v, grad log p(y | x)>, in standard errors")
    worst = max(z_mean, z_score)
    return worst, Z_LIMIT, f"own noise model: mean residual and mean score over {draws} draws"


def check_time_conditional(cls: type[Operator], g: torch.Generator):
    """Where ``time_conditional``: likelihood_score_t(x, t, y) matches autograd of
    log_likelihood_t(x, t, y) (float64, a different t per sample) and batches agree."""
    if not getattr(cls, "time_conditional", False):
        raise Skip("not time-conditional")
    op = cls.example(g).to(torch.float64)
    x = _images(op, g, 3, torch.float64)
    t = torch.rand(3, generator=g, dtype=torch.float64) * 0.9 + 0.05
    got = op.likelihood_score_t(x, t, None)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(op.log_likelihood_t(xr, t, None).sum(), xr)
    _expect(relative_gap(got, want), 1e-8, "||score_t - autograd|| / ||autograd||")
    single = torch.cat([op.likelihood_score_t(x[i : i + 1], t[i : i + 1], None) for i in range(3)])
    return _expect(relative_gap(got, single), EXACT_RTOL, "score_t: batch of 3 vs 3 x 1")


CHECKS: dict[str, Callable[[type[Operator], torch.Generator], Any]] = {
    "example": check_example,
    "input_validation": check_input_validation,
    "dtype": check_dtype,
    "device": check_device,
    "cuda": check_cuda,
    "batch": check_batch,
    "adjoint_float32": check_adjoint(torch.float32),
    "adjoint_float64": check_adjoint(torch.float64),
    "likelihood_score": check_likelihood_score,
    "likelihood_score_t": check_time_conditional,
    "pseudo_inverse": check_pseudo_inverse,
    "project": check_project,
    "measure": check_measure,
}
