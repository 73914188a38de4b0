"""Super-resolution: y = D x, the average of each non-overlapping f x f block of pixels.

D maps an H x W image to (H / f) x (W / f) (H and W multiples of f), per channel. Its adjoint
spreads each value evenly over its block, D^T y = U y / f^2 with U nearest-neighbour upsampling,
so D D^T = I / f^2 and the exact Moore-Penrose pseudo-inverse is D^+ = D^T (D D^T)^{-1} = f^2 D^T =
U: every pixel of a block takes the block's measured mean. ``project`` (Song et al., ICLR 2022) is
therefore exact: it sets each block mean of x to (1 - lam) D x + lam y and leaves the within-block
detail (the null space of D) alone. The box average (a detector integrating over f x f pixels) is
one of the usual downsampling models of super-resolution; another is a bicubic kernel.

Baseline: bicubic interpolation of y to the full grid (cubic convolution, Keys, "Cubic convolution
interpolation for digital image processing", IEEE TASSP 29(6), 1981, with torch's a = -0.75), on
the half-pixel aligned grid where low-resolution pixel centres sit at block centres.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, LinearOperator, Param
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl


class SuperRes(LinearOperator):
    """Average non-overlapping f x f blocks: y = D x, shape (B, C, H / f, W / f)."""

    name: ClassVar[str] = "superres"
    exact_pseudo_inverse: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param("factor", int, 4, "downsampling factor f (2 or 4 typically); must divide H and W"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        factor: int = 4,
    ):
        super().__init__(image_shape, noise_std=noise_std)
        _, h, w = self.image_shape
        if factor < 1 or h % factor or w % factor:
            raise InvdiffError(
                f"superres: --factor {factor} must be >= 1 and divide H={h} and W={w}; crop or "
                "pad the images to multiples of the factor"
            )
        self.factor = int(factor)
        self.side_multiple = self.factor

    @classmethod
    def example(cls, generator: torch.Generator) -> SuperRes:
        """Return a factor-2 instance on a 2 x 38 x 30 image (measured grid 19 x 15: odd sides)."""
        return cls((2, 38, 30), factor=2)

    def forward(self, x: Tensor) -> Tensor:
        """Return the block means, shape (B, C, H / f, W / f)."""
        self.check_input(x)
        return F.avg_pool2d(x, self.factor)

    def adjoint(self, y: Tensor) -> Tensor:
        """Return D^T y: each value spread evenly over its block (nearest upsampling / f^2)."""
        return self.pseudo_inverse(y) / self.factor**2

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """Return D^+ y = f^2 D^T y: nearest-neighbour upsampling (exact)."""
        return y.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)

    def baseline(self, y: Tensor) -> tuple[str, Tensor]:
        """Return ("bicubic", y interpolated bicubically to H x W)."""
        size = self.image_shape[1:]
        return "bicubic", F.interpolate(y, size=size, mode="bicubic", align_corners=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"


@hookimpl
def register_operators(register) -> None:
    """Register the super-resolution operator."""
    register(SuperRes)
