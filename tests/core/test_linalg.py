"""Conjugate gradients and image gradients (invdiff/core/linalg.py): accuracy, early stop,
sample independence, adjoints."""

from __future__ import annotations

import pytest
import torch

from invdiff.core.linalg import conjugate_gradient

N = 40


def systems(conditions: list[float]):
    """Return (apply, b, exact): one SPD system per sample, condition number as given."""
    g = torch.Generator().manual_seed(0)
    mats = []
    for cond in conditions:
        q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
        mats.append(
            q
            @ torch.diag(
                torch.logspace(0, float(torch.log10(torch.tensor(cond))), N, dtype=torch.float64)
            )
            @ q.T
        )
    m = torch.stack(mats)
    b = torch.randn(len(conditions), N, generator=g, dtype=torch.float64)
    calls = []

    def apply(p):
        calls.append(1)
        return [torch.einsum("bij,bj->bi", m, p[0])]

    return apply, [b], torch.linalg.solve(m, b), m, calls


def residual(m, u, b):
    return (torch.einsum("bij,bj->bi", m, u) - b).norm(dim=1) / b.norm(dim=1)


def test_cg_solves_stops_once_converged_and_rtol_stops_sooner():
    apply, b, exact, m, calls = systems([10.0, 1e3])
    u = conjugate_gradient(apply, b, iters=6 * N)[0]
    torch.testing.assert_close(u, exact, rtol=1e-8, atol=1e-8)
    full = len(calls)
    assert full < 6 * N  # every sample reached float precision: the loop ended early
    calls.clear()
    again = conjugate_gradient(apply, b, iters=full + 50)[0]
    assert torch.equal(u, again)  # the iterations it skipped would change nothing
    calls.clear()
    u = conjugate_gradient(apply, b, iters=6 * N, rtol=1e-3)[0]
    assert (residual(m, u, b[0]) < 1e-3).all()
    assert len(calls) < full


def test_a_converged_sample_does_not_depend_on_a_harder_neighbour():
    apply, b, _, m, _ = systems([10.0, 1e4])
    both = conjugate_gradient(apply, b, iters=3 * N, rtol=1e-4)[0]
    easy, _, _, _, _ = systems([10.0])
    alone = conjugate_gradient(easy, [b[0][:1]], iters=3 * N, rtol=1e-4)[0]
    torch.testing.assert_close(both[:1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rtol", [-0.1, 1.0, float("nan")])
def test_rtol_outside_zero_one_is_refused(rtol):
    apply, b, _, _, _ = systems([10.0])
    with pytest.raises(ValueError, match="rtol"):
        conjugate_gradient(apply, b, iters=5, rtol=rtol)


def test_image_gradient_adjoint_is_the_transpose_and_tv_uses_chambolles_differences():
    from invdiff.core.linalg import image_gradient, image_gradient_adjoint
    from invdiff.eval.baselines import total_variation

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    p = torch.randn(2, 2, 3, 5, 7, generator=g, dtype=torch.float64)
    lhs = (image_gradient(x) * p).sum()
    assert torch.allclose(lhs, (x * image_gradient_adjoint(p)).sum())  # <Dx, p> = <x, D^T p>
    d = image_gradient(x)
    assert torch.equal(d[0, ..., -1, :], torch.zeros_like(d[0, ..., -1, :]))  # Neumann boundary
    assert torch.equal(d[1, ..., :-1, :-1], x[..., :-1, 1:] - x[..., :-1, :-1])
    ramp = torch.arange(4.0).repeat(4, 1)[None, None]  # 3 unit steps along W in each of 4 rows
    assert total_variation(ramp).item() == 12.0
