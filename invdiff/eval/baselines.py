"""Classical reconstructions a diffusion prior has to beat: FISTA-TV for any linear operator,
biharmonic inpainting; each operator's own classical method is its ``Operator.baseline`` (FBP,
zero-filled, biharmonic, gray replicated). Each maps a batch of measurements y (the operator's
output shape) to images (B, C, H, W) in y's real precision.

- ``fista_tv``: FISTA (Beck & Teboulle 2009) on 1/2 ||A x - y||^2 + weight TV(x), any
  ``LinearOperator``.
- ``biharmonic_inpaint``: scikit-image's biharmonic inpainting for ``masking``.
- ``tune_weight``: the FISTA-TV weight that maximises mean PSNR on a validation set.

scikit-image works on numpy arrays, so the TV prox and the inpainting go through the host one
image at a time; fine for a baseline, not for a sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle, inpaint_biharmonic
from torch import Tensor

from invdiff.core.linalg import image_gradient, largest_eigenvalue
from invdiff.core.operator import LinearOperator, real_inner
from invdiff.errors import InvdiffError
from invdiff.eval.metrics import psnr

#: FISTA iterations by default. With noiseless data the tuned weight is small and FISTA is slow in
#: the near-null space of A. On 64 x 64 phantoms (benchmarks/results/baselines.md), at weights
#: tuned for 1000 iterations, the objective is within 0.1-2.3 % of its value at 3000 iterations
#: and validation PSNR within 0.3 dB; 1000 iterations beat 300 (each with its own tuned weight)
#: by 1 dB on 23-view CT and tie on 8-view CT and 4x / 8x MRI.
FISTA_ITERATIONS = 1000


def _real_dtype(y: Tensor) -> torch.dtype:
    return y.real.dtype if y.is_complex() else y.dtype


def _mask_of(op_or_mask) -> np.ndarray:
    mask = getattr(op_or_mask, "mask", op_or_mask)
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvdiffError(f"biharmonic_inpaint needs an (H, W) mask, got shape {mask.shape}")
    return mask != 0


def biharmonic_inpaint(op_or_mask, y: Tensor) -> Tensor:
    """Fill the unmeasured pixels by biharmonic inpainting (``skimage.restoration``).

    ``op_or_mask`` is a masking operator or its (H, W) mask, nonzero where a pixel was
    measured. Measured pixels keep their (possibly noisy) values; the others solve the
    biharmonic equation Delta^2 u = 0 with the measured pixels as boundary data (Damelin & Hoang,
    "On surface completion and image inpainting by biharmonic functions", 2018), each channel
    separately.
    """
    unknown = ~_mask_of(op_or_mask)
    arr = y.detach().cpu().double().numpy()
    if arr.ndim != 4 or arr.shape[2:] != unknown.shape:
        raise InvdiffError(
            f"biharmonic_inpaint: y must be (B, C, *{unknown.shape}), got {arr.shape}"
        )
    out = np.stack([inpaint_biharmonic(img, unknown, channel_axis=0) for img in arr])
    return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)


def total_variation(x: Tensor) -> Tensor:
    """Return the isotropic TV per image, sum over channels and pixels of |grad x|, shape (B,),
    with :func:`invdiff.core.linalg.image_gradient` (Chambolle's discretisation)."""
    return image_gradient(x).norm(dim=0).flatten(1).sum(1)


def tv_objective(op: LinearOperator, x: Tensor, y: Tensor, weight: float) -> Tensor:
    """Return 1/2 ||A x - y||^2 + weight TV(x) per image, shape (B,)."""
    r = op.forward(x) - y
    return 0.5 * real_inner(r, r) + weight * total_variation(x)


def lipschitz_constant(op: LinearOperator, iterations: int = 100, seed: int = 0) -> float:
    """Return L = ||A^T A||_2, the Lipschitz constant of grad 1/2 ||A x - y||^2, by power iteration.

    Power iteration approaches L from below, so the estimate is multiplied by 1.01 to keep the
    step 1 / L safe. It costs ``iterations`` products with A^T A; compute it once per operator and
    pass it to ``fista_tv`` when solving many batches.
    """
    apply = lambda v: op.adjoint(op.forward(v))  # noqa: E731
    return 1.01 * float(largest_eigenvalue(apply, op.image_shape, iterations, seed=seed))


def tv_prox(v: Tensor, weight: float, tv_iterations: int = 200, tv_eps: float = 2e-4) -> Tensor:
    """Return argmin_x 1/2 ||x - v||^2 + weight TV(x) per image by Chambolle's algorithm.

    ``skimage.restoration.denoise_tv_chambolle(v, weight)`` minimises exactly this functional
    (Chambolle, J. Math. Imaging Vis. 2004: u = f - lambda div p with lambda = ``weight``), i.e.
    its ``weight`` is the prox parameter itself, not a regularisation strength relative to the
    mean square error. Channels are denoised separately.
    """
    arr = v.detach().cpu().double().numpy()
    out = np.empty_like(arr)
    for b, img in enumerate(arr):
        for c, chan in enumerate(img):
            out[b, c] = denoise_tv_chambolle(
                chan, weight=weight, eps=tv_eps, max_num_iter=tv_iterations
            )
    return torch.from_numpy(out).to(device=v.device, dtype=v.dtype)


def fista_tv(
    op: LinearOperator,
    y: Tensor,
    weight: float,
    iterations: int = FISTA_ITERATIONS,
    *,
    lipschitz: float | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
    restart: bool = True,
    x0: Tensor | None = None,
    tv_iterations: int = 200,
    history: list[Tensor] | None = None,
) -> Tensor:
    """Return an approximate minimiser of 1/2 ||A x - y||^2 + weight TV(x) by FISTA.

    Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
    problems", SIAM J. Imaging Sci. 2009, Algorithm 2 with constant step 1/L (eq. 4.1-4.3)::

        x_k     = prox_{(weight/L) TV}(z_k - A^T (A z_k - y) / L)
        t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
        z_{k+1} = x_k + ((t_k - 1) / t_{k+1}) (x_k - x_{k-1})

    The gradient step has size 1/L, so the prox of weight TV becomes that of (weight / L) TV,
    which is the ``weight`` passed to scikit-image's Chambolle solver (see ``tv_prox``). L is
    ``lipschitz`` or, when None, ``lipschitz_constant(op)`` (100 products with A^T A).

    ``box``: after the TV prox the iterate is clipped to [lo, hi] (default [0, 1], the image
    range). This approximates the prox of TV plus the box indicator (solved exactly by the
    constrained FGP of Beck & Teboulle, IEEE TIP 2009); None leaves x unconstrained.
    ``restart``: gradient-based adaptive restart (O'Donoghue & Candes, Found. Comput. Math.
    2015, sec. 3.2): per image, t is reset to 1 when (z_k - x_k) . (x_k - x_{k-1}) > 0, i.e.
    when the momentum points uphill; this removes FISTA's ripples on strongly convex problems.
    ``history``: if a list is given, the objective per image (``tv_objective``, shape (B,)) of
    each x_k is appended to it.
    The images are computed in float64 and returned in y's real precision.
    """
    if weight < 0:
        raise InvdiffError(f"fista_tv: weight must be >= 0, got {weight}")
    dtype = _real_dtype(y)
    y64 = y.to(torch.complex128 if y.is_complex() else torch.float64)
    big_l = lipschitz_constant(op) if lipschitz is None else float(lipschitz)
    x = torch.zeros((y.shape[0], *op.image_shape), dtype=torch.float64, device=y.device)
    if x0 is not None:
        x = x0.to(x)
    z, t = x.clone(), torch.ones(y.shape[0], dtype=torch.float64, device=y.device)
    for _ in range(iterations):
        # Gradient step on the data term, then the TV prox (eq. 4.1).
        x_new = tv_prox(z - op.adjoint(op.forward(z) - y64) / big_l, weight / big_l, tv_iterations)
        if box is not None:
            x_new = x_new.clamp(*box)
        # Momentum (eq. 4.2-4.3), with an adaptive restart where it points uphill.
        if restart:
            uphill = real_inner(z - x_new, x_new - x) > 0
            t = torch.where(uphill, torch.ones_like(t), t)
        t_new = (1 + torch.sqrt(1 + 4 * t**2)) / 2
        z = x_new + ((t - 1) / t_new).view(-1, 1, 1, 1) * (x_new - x)
        x, t = x_new, t_new
        if history is not None:
            history.append(tv_objective(op, x, y64, weight))
    return x.to(dtype)


def tune_weight(
    fn: Callable[[Tensor, float], Tensor],
    ys: Tensor,
    truths: Tensor,
    grid: Sequence[float],
    refine: int = 0,
) -> tuple[float, list[tuple[float, float]]]:
    """Return the weight maximising mean PSNR of fn(ys, weight) against truths, and the table.

    ``ys`` and ``truths`` must be a VALIDATION set: the weight chosen here is then used
    unchanged on the test set, which this function never sees (the benchmark harness decides
    which set is passed). ``grid`` is usually log-spaced (``numpy.geomspace``). With
    ``refine`` > 0 the search continues on ``refine`` log-spaced points strictly between the
    best grid point and each of its neighbours. The table lists (weight, mean PSNR) for every
    weight tried, sorted by weight; ties go to the smaller weight.
    """
    if len(grid) == 0:
        raise ValueError("tune_weight needs a non-empty grid of weights")

    table: dict[float, float] = {}

    def score(weights) -> None:
        for w in weights:
            if float(w) not in table:
                table[float(w)] = float(np.mean(psnr(fn(ys, float(w)), truths)))

    score(grid)
    ordered = sorted(table)
    best = max(ordered, key=lambda w: table[w])
    if refine > 0:
        i = ordered.index(best)
        for j in (i - 1, i + 1):
            if 0 <= j < len(ordered) and ordered[j] > 0 and best > 0:
                score(np.geomspace(best, ordered[j], refine + 2)[1:-1])
        ordered = sorted(table)
        best = max(ordered, key=lambda w: table[w])
    return best, [(w, table[w]) for w in ordered]
