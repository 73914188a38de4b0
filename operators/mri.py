"""Single-coil Cartesian MRI: y = M F x, masked k-space of a real image.

F is the orthonormal centred 2-D DFT, F x = fftshift(fft2(ifftshift(x), norm="ortho")), and M a
0/1 sampling mask on the k-space grid; y is complex (complex64 for float32 images, complex128
for float64) with the image's shape and zeros where nothing was sampled (fastMRI convention).

A maps real images to complex k-space, a real-linear map. Under the real inner product
<u, v> = Re(sum conj(u) v) its adjoint is A^T y = Re(F^H M y). Because F x is Hermitian
symmetric for real x, A^T A = F^H diag(w) F with w = (M + M~) / 2 and M~[k] = M[-k]: the
pseudo-inverse is therefore exact and cheap, A^+ y = F^H (F A^T y / w) (0 where w = 0), and
``project`` (Song et al., ICLR 2022) gives exactly (1 - lam) A x + lam y on measured coefficients
whenever y is consistent with a real image.

Masks (fastMRI conventions, Zbontar et al. 2018, arXiv:1811.08839): ``equispaced`` and
``random`` sample whole columns (phase encodes, the W axis) with round(W * center_fraction) fully
sampled centre columns and about W / acceleration columns in all; ``variable_density`` samples
single k-space points with probability min(1, c (1 - r)^2), r the normalised radius, a fully
sampled centre disc of radius center_fraction / 2, and c set so about H W / acceleration points
are sampled.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from invdiff_operators._mask import MaskGeometry
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, LinearOperator, Param, check_mask
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl

MASKS = ("equispaced", "random", "variable_density")


def fft2c(x: Tensor) -> Tensor:
    """Return the orthonormal centred 2-D DFT over the last two axes."""
    dims = (-2, -1)
    return torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims
    )


def ifft2c(y: Tensor) -> Tensor:
    """Return the inverse of ``fft2c``."""
    dims = (-2, -1)
    return torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(y, dim=dims), norm="ortho"), dim=dims
    )


def mirror(m: Tensor) -> Tensor:
    """Return m[-k] on the centred grid: index j maps to (2 * (n // 2) - j) mod n on each axis."""
    out = m
    for dim in (-2, -1):
        n = m.shape[dim]
        idx = (2 * (n // 2) - torch.arange(n, device=m.device)) % n
        out = out.index_select(dim, idx)
    return out


def centre_columns(width: int, center_fraction: float) -> Tensor:
    """Return a boolean (W,) vector with round(W * center_fraction) centred columns set."""
    low = round(width * center_fraction)
    cols = torch.zeros(width, dtype=torch.bool)
    start = (width - low + 1) // 2
    cols[start : start + low] = True
    return cols


def column_mask(
    kind: str, width: int, acceleration: int, center_fraction: float, g: torch.Generator
) -> Tensor:
    """Return a boolean (W,) column mask: the centre plus equispaced or random columns."""
    cols = centre_columns(width, center_fraction)
    low = int(cols.sum())
    target = width / acceleration
    if kind == "random":
        prob = max(target - low, 0) / max(width - low, 1)
        return cols | (torch.rand(width, generator=g) < prob)
    spacing = max((width - low) / max(target - low, 1e-9), 1.0)
    offset = float(torch.rand((), generator=g)) * spacing
    if offset < width:  # else (high acceleration: a spacing past the width) the centre alone
        picks = torch.arange(offset, width, spacing).round().long().clamp_max(width - 1)
        cols[picks] = True
    return cols


def variable_density_mask(
    size: tuple[int, int], acceleration: int, center_fraction: float, g: torch.Generator
) -> Tensor:
    """Return a boolean (H, W) mask drawn with density min(1, c (1 - r)^2), centre disc kept."""
    h, w = size
    ky = (torch.arange(h) - h // 2) / (h / 2)
    kx = (torch.arange(w) - w // 2) / (w / 2)
    r = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).clamp_max(1.0)
    shape = (1 - r) ** 2
    lo, hi = 0.0, 1e6
    for _ in range(60):  # bisection on c: expected count = H W / acceleration
        c = (lo + hi) / 2
        lo, hi = (c, hi) if (c * shape).clamp_max(1).sum() < h * w / acceleration else (lo, c)
    prob = (hi * shape).clamp_max(1)
    prob[r <= center_fraction / 2] = 1.0
    return torch.rand(size, generator=g) < prob


class MRI(MaskGeometry, LinearOperator):
    """Sample the centred orthonormal k-space of a real image: y = M F x (complex)."""

    name: ClassVar[str] = "mri"
    #: Chosen on validation images only (docs/models.md, "Sampler defaults"; 49 steps, 2
    #: samples, relax 1.75), MRI 4x / 8x at kappa 1.3 / 1.5: the harness's validation phantoms
    #: 30.43 / 30.56 and 25.49 / 25.49 dB, the suite's wider validation set at 128 px 30.07 /
    #: 30.28 and 23.88 / 23.93 (kappa 1.7 on the phantoms, MRI 4x: 30.57).
    noise_inflation: ClassVar[float] = 1.5
    #: Over-relaxation of DiffPIR's data step (``--relax``), chosen on validation images only
    #: (docs/models.md, "Sampler defaults"; 49 steps, 2 samples), MRI 4x / 8x at relax 1 / 1.5 /
    #: 1.75 / 2: the harness's validation phantoms 29.18 / 30.10 / 30.43 / 30.41 and 25.18 / 25.37
    #: / 25.49 / 25.75 dB, the suite's wider validation set at 128 px 29.87 / 30.08 / 30.07 / 29.46
    #: and 23.72 / 23.85 / 23.88 / 23.75; mean of the four 26.99 / 27.35 / 27.47 / 27.34.
    data_relaxation: ClassVar[float] = 1.75
    exact_pseudo_inverse: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param("mask", str, "equispaced", "sampling pattern", MASKS),
        Param("acceleration", int, 4, "undersampling factor: about 1/acceleration is sampled"),
        Param("center_fraction", float, 0.08, "fraction of fully sampled low-frequency columns"),
        Param("mask_seed", int, 0, "seed of the random parts of the mask"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        mask: str = "equispaced",
        acceleration: int = 4,
        center_fraction: float = 0.08,
        mask_seed: int = 0,
    ):
        super().__init__(image_shape, noise_std=noise_std)
        _, h, w = self.image_shape
        if acceleration < 1 or not 0.0 <= center_fraction <= 1.0:
            raise InvdiffError(
                f"mri: need --acceleration >= 1 and --center-fraction in [0, 1], got "
                f"{acceleration} and {center_fraction}"
            )
        g = torch.Generator().manual_seed(mask_seed)
        if mask == "variable_density":
            m = variable_density_mask((h, w), acceleration, center_fraction, g)
        elif mask in ("equispaced", "random"):
            m = column_mask(mask, w, acceleration, center_fraction, g).expand(h, w)
        else:
            raise InvdiffError(f"mri: unknown --mask {mask!r}; choose one of {', '.join(MASKS)}")
        dtype = torch.get_default_dtype()
        self.register_buffer("mask", torch.zeros(h, w, dtype=dtype))
        self.register_buffer("inverse_weight", torch.zeros(h, w, dtype=dtype))
        self.set_mask(m)

    def set_mask(self, mask: Tensor) -> MRI:
        """Use an explicit H x W 0/1 k-space mask (e.g. one stored with the data)."""
        m = check_mask(mask, self.image_shape[1:], self.name)
        weight = (m.double() + mirror(m).double()) / 2  # diag of A^T A in k-space
        inv = torch.where(weight > 0, 1 / weight.clamp_min(0.5), torch.zeros_like(weight))
        self.mask = m.to(self.mask)
        self.inverse_weight = inv.to(self.inverse_weight)
        return self

    def baseline(self, y: Tensor) -> tuple[str, Tensor]:
        """Return ("zero-filled", the zero-filled inverse FFT: this operator's pseudo-inverse)."""
        return "zero-filled", self.pseudo_inverse(y)

    @classmethod
    def example(cls, generator: torch.Generator) -> MRI:
        """Return a 4x random-column instance on a 1 x 37 x 31 image."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return cls((1, 37, 31), mask="random", acceleration=4, center_fraction=0.1, mask_seed=seed)

    def forward(self, x: Tensor) -> Tensor:
        """Return M F x, complex, shape (B, C, H, W)."""
        self.check_input(x)
        return self.restrict_to_measured(fft2c(x))

    def adjoint(self, y: Tensor) -> Tensor:
        """Return Re(F^H M y), the adjoint under the real inner product."""
        return ifft2c(self.restrict_to_measured(y)).real

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """Return (A^T A)^+ A^T y = Re F^H (F A^T y / w), the exact Moore-Penrose inverse."""
        back = self.adjoint(y)
        return ifft2c(fft2c(back) * self.inverse_weight.to(back.dtype)).real

    def restrict_to_measured(self, y: Tensor) -> Tensor:
        """Return M y: unsampled k-space stays 0, noise included (fastMRI convention)."""
        return y * self.mask.to(y.real.dtype)

    def acceleration_achieved(self) -> float:
        """Return H W / (number of sampled k-space points)."""
        return self.mask.numel() / max(float(self.mask.sum()), 1.0)


@hookimpl
def register_operators(register) -> None:
    """Register the MRI operator."""
    register(MRI)
