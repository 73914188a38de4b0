"""Shared numerical linear algebra: per-sample inner products, broadcasting, conjugate gradients,
power iteration. Every solver in invdiff uses these (one piece of code per piece of maths)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def bc(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample vector (B,) so it broadcasts against x (B, ...)."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def real_inner(a: Tensor, b: Tensor) -> Tensor:
    """Return Re<a, b> summed over all but the batch dimension, shape (B,)."""
    prod = torch.conj(a) * b if a.is_complex() else a * b
    return prod.real.flatten(1).sum(1) if prod.is_complex() else prod.flatten(1).sum(1)


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Return the per-sample real inner product summed over a list of tensors, shape (B,)."""
    return sum(real_inner(u, v) for u, v in zip(a, b, strict=True))


def image_gradient(x: Tensor) -> Tensor:
    """Return the forward differences of images x (..., H, W) along H and W, stacked (2, ...),
    with a zero difference past the last row and column (Neumann boundary): the discretisation of
    Chambolle (2004) that scikit-image's ``denoise_tv_chambolle`` uses."""
    dh = torch.diff(x, dim=-2, append=x[..., -1:, :])
    dw = torch.diff(x, dim=-1, append=x[..., :, -1:])
    return torch.stack([dh, dw])


def image_gradient_adjoint(g: Tensor) -> Tensor:
    """Return D^T g for D = :func:`image_gradient` (minus Chambolle's discrete divergence): each
    difference g[i] = x[i+1] - x[i] adds g[i] at i + 1 and takes it at i (the last row and column
    of g, which D never fills, are ignored)."""
    dh, dw = g[0][..., :-1, :], g[1][..., :, :-1]
    pad = torch.nn.functional.pad
    return pad(dh, (0, 0, 1, 0)) - pad(dh, (0, 0, 0, 1)) + pad(dw, (1, 0)) - pad(dw, (0, 1))


SYNC_EVERY = 8  # conjugate_gradient's convergence check off the CPU (a host sync each time)


def conjugate_gradient(
    apply: Callable[[list[Tensor]], list[Tensor]], b: list[Tensor], iters: int, rtol: float = 0.0
) -> list[Tensor]:
    """Solve M u = b for a symmetric positive (semi)definite M, one system per sample.

    Hestenes & Stiefel (1952) CG on lists of tensors (several measurement spaces at once), started
    at 0, at most ``iters`` iterations. A sample whose residual norm fell below ``rtol`` times its
    start, and never less than float eps times it (round-off would otherwise make CG diverge), is
    frozen, so sample k does not depend on the other samples. The loop ends once every sample is
    frozen: the iterations left would change nothing (the result is the same bits as running all
    ``iters``). That happens where the system is easy (MRI, masking: DiffPIR's data step used 203
    and 61 of its 1960 capped iterations per solve), not on sparse-view CT, whose residual stays
    above float precision after 40 iterations. The check costs a host synchronisation, so off
    the CPU it runs every ``SYNC_EVERY`` iterations only.
    """
    if not 0 <= rtol < 1:  # also refuses NaN; rtol >= 1 would skip the solve
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    info = torch.finfo(b[0].real.dtype)
    every = 1 if b[0].device.type == "cpu" else SYNC_EVERY
    u = [torch.zeros_like(v) for v in b]
    r = [v.clone() for v in b]
    p = [v.clone() for v in b]
    rr = dot(r, r)
    floor = rr * max(info.eps, rtol) ** 2
    for k in range(iters):
        active = rr > floor
        if k % every == 0 and not bool(active.any()):
            break  # every sample converged: the remaining iterations would change nothing
        mp = apply(p)
        step = torch.where(active, rr / dot(p, mp).clamp_min(info.tiny), 0.0)
        u = [ui + bc(step, ui) * pi for ui, pi in zip(u, p, strict=True)]
        r = [ri - bc(step, ri) * mi for ri, mi in zip(r, mp, strict=True)]
        rr_new = dot(r, r)
        beta = torch.where(active, rr_new / rr.clamp_min(info.tiny), 0.0)
        p = [ri + bc(beta, ri) * pi for ri, pi in zip(r, p, strict=True)]
        rr = torch.where(active, rr_new, rr)
    return u


def largest_eigenvalue(
    apply: Callable[[Tensor], Tensor],
    shape: Sequence[int],
    iters: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Tensor:
    """Return the largest eigenvalue of a symmetric PSD map (e.g. A^T A) by power iteration.

    The Rayleigh quotient v^T M v of the unit iterate v after ``iters`` products (von Mises
    1929); it approaches the eigenvalue from below. The start is N(0, I) from ``seed``, so the
    result is reproducible. Returns a 0-d tensor.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    v = torch.randn((1, *shape), generator=g, device=device, dtype=dtype)
    v = v / v.norm()
    value = torch.zeros((), dtype=dtype, device=device)
    for _ in range(iters):
        w = apply(v)
        value = (v * w).sum()
        v = w / w.norm().clamp_min(torch.finfo(dtype).tiny)
    return value
