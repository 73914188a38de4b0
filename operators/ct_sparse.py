"""Sparse-view CT: the 2-D parallel-beam Radon transform at a few equispaced angles.

y[v, d] = sum_p W[(v, d), p] x[p] with W astra-toolbox's 'linear' (Joseph-type) projector for
``views`` angles theta_v = v * pi / views on [0, pi), ``detectors`` unit-width bins (default
ceil(sqrt(H^2 + W^2)), i.e. ceil(sqrt(2) * n) for an n x n image) and unit pixels. W is built
once per instance through ``astra.projector.matrix`` and applied as a torch sparse CSR matrix
(int32 indices; W^T stored as its own CSR for the adjoint), so calls stay on the input's device
and never go through astra. The adjoint is the exact matrix transpose.

Pseudo-inverse: filtered back-projection (Kak & Slaney, "Principles of Computerized Tomographic
Imaging", ch. 3): each projection is convolved with the band-limited Ram-Lak ramp kernel
h[0] = 1/4, h[n odd] = -1/(pi n)^2, h[n even] = 0 (zero-padded FFT), then back-projected with W^T
and scaled by pi / views, so FBP of a many-view sinogram approximates the image in pixel units.
At few views FBP is only an approximate pseudo-inverse, so ``project`` (Song et al., ICLR 2022)
is an approximate data-consistency step here.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, LinearOperator, Param
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl

#: Largest system matrix built, as estimated below (entries of A; A^T doubles it): 720 views at
#: 512 x 512 pass, 1000 do not (about 6 GB and more with both).
MAX_NONZEROS = 6e8


def equispaced_angles(views: int) -> np.ndarray:
    """Return the parallel-beam angles of ``views`` equispaced views over [0, pi) (radians)."""
    return np.arange(views) * np.pi / views


def check_angles(angles, views: int, source: str, name: str) -> None:
    """Raise InvdiffError unless ``angles`` (or None) are ``views`` equispaced over [0, pi)."""
    if angles is None:
        return
    got, want = np.asarray(angles).ravel(), equispaced_angles(views)
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-6):
        raise InvdiffError(
            f"/angles in {source} are {got.size} angles, not {views} equispaced over"
            f" [0, pi); {name} supports equispaced parallel-beam views: pass --views "
            f"{got.size} if they are equispaced"
        )


def system_matrix(size: tuple[int, int], views: int, detectors: int):
    """Return astra's parallel-beam 'linear' projector for this geometry as a scipy CSR matrix."""
    import astra  # heavy optional import: only here

    h, w = size
    vol = astra.create_vol_geom(h, w)
    proj = astra.create_proj_geom("parallel", 1.0, detectors, equispaced_angles(views))
    pid = astra.create_projector("linear", proj, vol)
    mid = astra.projector.matrix(pid)
    try:
        return astra.matrix.get(mid).tocsr()
    finally:
        astra.matrix.delete(mid)
        astra.projector.delete(pid)


def ramp_response(detectors: int) -> Tensor:
    """Return the rfft of the spatial Ram-Lak kernel on a zero-padded grid (float64)."""
    n = 1 << (2 * detectors - 1).bit_length()
    k = torch.arange(n, dtype=torch.float64)
    k = torch.where(k < n // 2 + 1, k, k - n)  # circular offsets 0, 1, ..., -1
    h = torch.where(k.remainder(2) == 1, -1.0 / (math.pi * k) ** 2, torch.zeros_like(k))
    h[0] = 0.25
    return torch.fft.rfft(h).real


class _SparseMatmul(torch.autograd.Function):
    """Y = A X with the gradient A^T G, A and A^T given as CSR matrices."""

    @staticmethod
    def forward(ctx, a: Tensor, at: Tensor, x: Tensor) -> Tensor:
        ctx.at = at
        return a @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, ctx.at @ grad


class CTSparse(LinearOperator):
    """Project each channel along ``views`` parallel-beam angles: y = W x, shape (B, C, V, D)."""

    name: ClassVar[str] = "ct_sparse"
    #: Chosen on validation images only (docs/models.md, "Sampler defaults"; 49 steps, 2
    #: samples, relax 1.75), CT 23 / 8 views at kappa 1.3 / 1.5 / 1.7: the harness's validation
    #: phantoms 44.92 / 44.96 / 44.95 and 30.02 / 30.09 / 30.10 dB, the suite's wider validation
    #: set at 128 px 33.57 / 33.71 / 33.70 and 23.65 / 23.90 / 24.03; 256 px, 23 views, 32.39 /
    #: 32.57 / 32.59 (kappa 2: 32.54). 1.5 is at least 1.3 on every set; 1.7 is within 0.13 dB of
    #: it either way, and each rise of kappa narrows the samples' spread (docs/models.md), so the
    #: smaller step. Before relax 1.75: kappa 1 / 1.3, 256 px, 23 views, 29.94 / 31.11.
    noise_inflation: ClassVar[float] = 1.5
    #: Over-relaxation of DiffPIR's data step (``--relax``), chosen on validation images only
    #: (docs/models.md, "Sampler defaults"; 49 steps, 2 samples), CT 23 / 8 views at relax 1 / 1.5
    #: / 1.75 / 2: the harness's validation phantoms 43.94 / 44.70 / 44.92 / 41.87 and 29.55 /
    #: 29.91 / 30.02 / - dB, the suite's wider validation set at 128 px 32.98 / 33.46 / 33.57 /
    #: 27.97 and 23.44 / 23.67 / 23.65 / 19.48: 2 reflects through an inexact CG solve and breaks.
    data_relaxation: ClassVar[float] = 1.75
    params: ClassVar[tuple[Param, ...]] = (
        Param("views", int, 23, "number of projection angles, equispaced over [0, pi)"),
        Param("detectors", int, 0, "detector bins of unit width; 0: ceil(sqrt(H^2 + W^2))"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        views: int = 23,
        detectors: int = 0,
    ):
        super().__init__(image_shape, noise_std=noise_std)
        _, h, w = self.image_shape
        if views < 1 or detectors < 0:
            raise InvdiffError(
                f"ct_sparse: need --views >= 1 and --detectors >= 0, got {views}, {detectors}"
            )
        if detectors > 2 * (h + w):  # astra allocates per bin: 1e7 bins abort the process
            raise InvdiffError(
                f"ct_sparse: --detectors {detectors} is more than 2 (H + W) = {2 * (h + w)} for "
                f"{h} x {w} images; bins past the image's diagonal ({math.hypot(h, w):.0f}) see "
                "nothing"
            )
        self.views = int(views)
        self.detectors = int(detectors) or math.ceil(math.hypot(h, w))
        # The linear projector touches about 2 pixels per ray per image row: refuse a geometry
        # whose system matrix (stored twice, A and A^T) would not fit before building it.
        nonzeros = 2 * self.views * min(self.detectors, 2 * (h + w)) * max(h, w)
        if nonzeros > MAX_NONZEROS:
            raise InvdiffError(
                f"ct_sparse: {self.views} views x {self.detectors} detectors on {h} x {w} need "
                f"about {nonzeros:.1e} system-matrix entries (at most {MAX_NONZEROS:.0e}); "
                "use fewer --views or --detectors"
            )
        mat = system_matrix((h, w), self.views, self.detectors)
        dtype = torch.get_default_dtype()
        for prefix, m in (("a", mat), ("at", mat.T.tocsr())):
            m.sort_indices()
            self.register_buffer(f"{prefix}_crow", torch.from_numpy(m.indptr.astype(np.int32)))
            self.register_buffer(f"{prefix}_col", torch.from_numpy(m.indices.astype(np.int32)))
            self.register_buffer(f"{prefix}_val", torch.from_numpy(m.data).to(dtype))
        self.register_buffer("ramp", ramp_response(self.detectors).to(dtype))

    @classmethod
    def example(cls, generator: torch.Generator) -> CTSparse:
        """Return a 7-view instance on a 1 x 37 x 31 image."""
        return cls((1, 37, 31), views=7)

    def _csr(self, prefix: str, dtype: torch.dtype) -> Tensor:
        crow, col, val = (getattr(self, f"{prefix}_{k}") for k in ("crow", "col", "val"))
        pixels, rays = math.prod(self.image_shape[1:]), self.views * self.detectors
        shape = (rays, pixels) if prefix == "a" else (pixels, rays)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(crow, col, val.to(dtype), shape, check_invariants=False)

    def _matmul(self, x: Tensor, prefix: str, other: str, out: tuple[int, ...]) -> Tensor:
        b, c = x.shape[:2]
        cols = x.reshape(b * c, -1).T
        res = _SparseMatmul.apply(self._csr(prefix, x.dtype), self._csr(other, x.dtype), cols)
        return res.T.reshape(b, c, *out)

    def forward(self, x: Tensor) -> Tensor:
        """Return the sinogram W x, shape (B, C, views, detectors)."""
        self.check_input(x)
        return self._matmul(x, "a", "at", (self.views, self.detectors))

    def adjoint(self, y: Tensor) -> Tensor:
        """Return the back-projection W^T y, shape (B, C, H, W)."""
        return self._matmul(y, "at", "a", self.image_shape[1:])

    def fbp(self, y: Tensor) -> Tensor:
        """Return the filtered back-projection (pi / views) W^T (h * y)."""
        n = 2 * (self.ramp.numel() - 1)
        filtered = torch.fft.irfft(torch.fft.rfft(y, n=n) * self.ramp.to(y.dtype), n=n)
        return self.adjoint(filtered[..., : self.detectors]) * (math.pi / self.views)

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """Return FBP(y), an approximate pseudo-inverse (exact only in the many-view limit)."""
        return self.fbp(y)

    def baseline(self, y: Tensor) -> tuple[str, Tensor]:
        """Return ("FBP", filtered back-projection of y)."""
        return "FBP", self.fbp(y)

    def geometry(self) -> dict[str, np.ndarray]:
        """Return the view angles (radians), stored as /angles."""
        return {"angles": equispaced_angles(self.views)}

    def set_geometry(self, arrays: dict, source: str) -> None:
        """Check stored /angles: ct_sparse models equispaced parallel-beam views over [0, pi)."""
        check_angles(arrays.get("angles"), self.views, source, self.name)

    @property
    def full_views(self) -> int:
        """Return the number of views of a fully sampled scan, ceil(pi n / 2), n = max(H, W)."""
        return math.ceil(math.pi * max(self.image_shape[1:]) / 2)

    @property
    def warm_start_sigma(self) -> float:  # type: ignore[override]
        """Return 0.01 x the angular undersampling factor full_views / views, within [0.05, 0.2].

        FBP's streaks grow with the share of views missing, so the level that hides them does
        too. Chosen on validation images only (benchmarks/tune_strategy.py; docs/models.md,
        "Sampler defaults"; 49 steps, lam 0.1, 40 CG iterations), PSNR at start level 0.05 /
        0.1 or 0.15 / 0.5: phantoms at 64 px, 23 views (factor 4.4) 43.80 / 43.49 / -, 8 views
        (12.6) 28.22 / 29.24 / 29.18; the out-of-distribution validation images at 128 px, 23
        views (8.7) 32.57 / 32.29 / 32.12, 8 views (25) 27.34 / 27.58 / 27.24; at 256 px, 23
        views (17.5) 30.50 / 30.65 / 30.40, 8 views (50) 25.80 / 26.46 / 26.12.
        """
        return min(0.2, max(0.05, 0.01 * self.full_views / self.views))

    def project(self, x: Tensor, y: Tensor, lam: float | Tensor = 1.0) -> Tensor:
        """Return the data-consistency step of Song, Shen, Xing, Ermon (ICLR 2022, eq. 10) for CT.

        Their transform T is the Radon transform at ``full_views`` angles; the measured views of
        T(x) move a fraction lam towards y and T is inverted by full-view FBP. Sparse views enter a
        full-view FBP with weight pi / full_views instead of pi / views, so the step is
        x + lam (views / full_views) FBP(y - A x). (Repeating x + FBP(y - A x) with the sparse-view
        weight diverges: FBP is far from a pseudo-inverse at few views.)
        """
        scale = min(1.0, self.views / self.full_views)
        return x + lam * scale * self.fbp(y - self.forward(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, views={self.views}, detectors={self.detectors}"


@hookimpl
def register_operators(register) -> None:
    """Register the sparse-view CT operator."""
    register(CTSparse)
