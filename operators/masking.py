"""Pixel masking (inpainting): y = m ⊙ x with a 0/1 mask m shared by all channels.

A is a diagonal 0/1 matrix, so A^T = A, A A^T = A and the pseudo-inverse is A itself; the
projection step of Song et al. (ICLR 2022) is then exact: measured pixels become
(1 - lam) x + lam y and unmeasured ones are untouched. Measurements keep the image shape, with
zeros where the mask is 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from invdiff_operators._mask import MaskGeometry
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, LinearOperator, Param, check_mask
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl

KINDS = ("random", "box", "centre", "file")


class Masking(MaskGeometry, LinearOperator):
    """Keep the pixels where the mask is 1: y = m ⊙ x."""

    name: ClassVar[str] = "masking"
    #: 1 (the default) chosen on validation images only: 70 % random pixels missing, kappa 1 /
    #: 1.15 / 1.3 / 1.5, the suite's validation images at 128 px 31.21 / 31.06 / 30.89 / 30.68
    #: dB, the harness's validation phantoms 29.09 / 29.02 / 28.95 / 28.86 (docs/models.md,
    #: "Sampler defaults").
    noise_inflation: ClassVar[float] = 1.0
    #: Over-relaxation of DiffPIR's data step (``--relax``), chosen on validation images only
    #: (docs/models.md, "Sampler defaults"; 49 steps, 2 samples), 70 % missing at relax 1 / 1.5 /
    #: 1.75 / 2: the harness's validation phantoms 28.83 / 28.94 / 28.96 / - dB, the suite's wider
    #: validation set at 128 px 29.25 / 29.34 / 29.34 / 29.27.
    data_relaxation: ClassVar[float] = 1.75
    exact_pseudo_inverse: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param("mask", str, "random", "which mask: random, box, centre or file", KINDS),
        Param("fraction", float, 0.5, "fraction of pixels missing (random, box, centre)"),
        Param("mask_seed", int, 0, "seed of the random mask and of the box position"),
        Param("path", str, "", "mask file for --mask file: .npy or HDF5 (dataset 'mask'), H x W"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        mask: str = "random",
        fraction: float = 0.5,
        mask_seed: int = 0,
        path: str = "",
    ):
        super().__init__(image_shape, noise_std=noise_std)
        _, h, w = self.image_shape
        if mask == "file":
            m = load_mask(path, (h, w))
        else:
            m = make_mask(mask, (h, w), fraction, torch.Generator().manual_seed(mask_seed))
        self.register_buffer("mask", m.to(torch.get_default_dtype()))

    def set_mask(self, mask: Tensor) -> Masking:
        """Replace the mask by an explicit H x W 0/1 array (e.g. one stored with the data)."""
        self.mask = check_mask(mask, self.image_shape[1:], self.name).to(self.mask)
        return self

    def baseline(self, y: Tensor) -> tuple[str, Tensor] | None:
        """Return ("biharmonic", the unmeasured pixels filled by biharmonic inpainting), or None
        when no pixel is measured (nothing to inpaint from)."""
        from invdiff.eval.baselines import biharmonic_inpaint

        if not self.mask.any():
            return None
        return "biharmonic", biharmonic_inpaint(self, y)

    @property
    def warm_start_sigma(self) -> float:  # type: ignore[override]
        """Return 0.03 x the hole radius, within [0.1, 0.5]: the 99th percentile over missing
        pixels of the distance to the nearest measured one. Biharmonic filling is close to the
        truth across scattered missing pixels and says nothing inside a large hole.

        Chosen on validation images only (docs/models.md, "Sampler defaults"): 70 % random
        pixels missing (radius 2.2 px) gained from 0.1 over 0.5 (phantoms 28.83 / 28.56 dB,
        photographs at 128 px 31.66 / 30.85); a 25 % box (radius 16 px at 64 px) gets 0.48.
        """
        from scipy import ndimage

        missing = (self.mask == 0).cpu().numpy()
        if not missing.any():
            return 0.1
        radius = float(np.percentile(ndimage.distance_transform_edt(missing)[missing], 99))
        return min(0.5, max(0.1, 0.03 * radius))

    @classmethod
    def example(cls, generator: torch.Generator) -> Masking:
        """Return a random-mask instance on a 2 x 37 x 31 image."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return cls((2, 37, 31), mask="random", fraction=0.4, mask_seed=seed)

    def forward(self, x: Tensor) -> Tensor:
        """Return m ⊙ x."""
        self.check_input(x)
        return x * self.mask.to(x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        """Return m ⊙ y (A is symmetric)."""
        return y * self.mask.to(y.dtype)

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """Return m ⊙ y, the exact pseudo-inverse (A is an orthogonal projection)."""
        return self.adjoint(y)

    def project(self, x: Tensor, y: Tensor, lam: float | Tensor = 1.0) -> Tensor:
        """Return (1 - lam m) ⊙ x + lam m ⊙ y: with lam = 1 observed pixels equal y bit for bit."""
        m = self.mask.to(x.dtype)
        return x * (1 - lam * m) + (lam * m) * y

    def restrict_to_measured(self, y: Tensor) -> Tensor:
        """Return m ⊙ y: masked pixels carry no measurement, hence no noise."""
        return self.adjoint(y)


def make_mask(kind: str, size: tuple[int, int], fraction: float, g: torch.Generator) -> Tensor:
    """Return an (H, W) 0/1 mask with about ``fraction`` of the pixels set to 0 (missing).

    random: i.i.d. pixels, exactly round(fraction * H * W) missing; box: a missing rectangle
    of sides sqrt(fraction) * (H, W) at a seeded position; centre: the same rectangle centred.
    """
    h, w = size
    if not 0.0 <= fraction <= 1.0:
        raise InvdiffError(f"masking: --fraction must lie in [0, 1], got {fraction}")
    m = torch.ones(h * w)
    if kind == "random":
        m[torch.randperm(h * w, generator=g)[: round(fraction * h * w)]] = 0
        return m.reshape(h, w)
    if kind not in ("box", "centre"):
        raise InvdiffError(f"masking: unknown --mask {kind!r}; choose one of {', '.join(KINDS)}")
    bh, bw = round(math.sqrt(fraction) * h), round(math.sqrt(fraction) * w)
    if kind == "centre":
        top, left = (h - bh) // 2, (w - bw) // 2
    else:
        top = int(torch.randint(0, h - bh + 1, (1,), generator=g))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=g))
    m = m.reshape(h, w)
    m[top : top + bh, left : left + bw] = 0
    return m


def load_mask(path: str, size: tuple[int, int]) -> Tensor:
    """Read an (H, W) mask from .npy or HDF5 (dataset ``mask``); nonzero means measured."""
    p = Path(path)
    if not path or not p.is_file():
        raise InvdiffError(f"masking: --mask file needs --path to an existing file, got {path!r}")
    if p.suffix not in (".npy", ".h5", ".hdf5"):
        raise InvdiffError(f"masking: mask file must end in .npy, .h5 or .hdf5, got {path!r}")
    if p.suffix != ".npy":
        from invdiff.io import read_array

        arr = read_array(p, "mask")
    else:
        try:
            arr = np.load(p)  # refuses pickled objects
        except (OSError, ValueError) as err:  # not .npy, pickled objects, damaged
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
            raise InvdiffError(f"masking: cannot read the mask in {path} ({first})") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf" or not np.isfinite(arr).all():
        raise InvdiffError(
            f"masking: the mask in {path} must be finite numbers (nonzero: measured)"
        )
    if arr.shape != size:
        raise InvdiffError(f"masking: mask in {path} has shape {arr.shape}, image needs {size}")
    return torch.from_numpy(np.asarray(arr != 0, dtype=np.float32))


@hookimpl
def register_operators(register) -> None:
    """Register the masking operator."""
    register(Masking)
