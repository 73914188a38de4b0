"""Gaussian blur: y = k * x (2-D convolution, zero boundary, output the size of the image).

k[i, j] = exp(-(i^2 + j^2) / (2 sigma^2)) / Z on the (2r + 1)^2 grid with r = ceil(3 sigma),
Z making the weights sum to 1. With zero padding A is a block-Toeplitz matrix; its adjoint is the
transposed convolution (correlation with the flipped kernel), exact, so the conformance kit's
dot-product test holds to round-off. A has no cheap exact pseudo-inverse; the default
conjugate-gradient one of ``LinearOperator`` is used (Hestenes & Stiefel 1952; see Hansen, Nagy
and O'Leary, "Deblurring Images: Matrices, Spectra, and Filtering", SIAM 2006, for the model).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, LinearOperator, Param
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl

__version__ = "0.1.0"


def gaussian_kernel(sigma: float, radius: int) -> Tensor:
    """Return the normalised (2 radius + 1)^2 Gaussian kernel in float64."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


class GaussianBlur(LinearOperator):
    """Blur every channel with the same Gaussian kernel: y = k * x, shape (B, C, H, W)."""

    name: ClassVar[str] = "blur"
    params: ClassVar[tuple[Param, ...]] = (
        Param("sigma", float, 1.5, "standard deviation of the Gaussian kernel, in pixels"),
        Param("radius", int, 0, "kernel half-width in pixels; 0: ceil(3 sigma)"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        sigma: float = 1.5,
        radius: int = 0,
    ):
        super().__init__(image_shape, noise_std=noise_std)
        if not sigma > 0 or radius < 0:
            raise InvdiffError(f"blur: need --sigma > 0 and --radius >= 0, got {sigma}, {radius}")
        self.sigma, self.radius = float(sigma), int(radius) or math.ceil(3 * sigma)
        kernel = gaussian_kernel(self.sigma, self.radius)
        self.register_buffer("kernel", kernel.to(torch.get_default_dtype())[None, None])

    @classmethod
    def example(cls, generator: torch.Generator) -> GaussianBlur:
        """Return a sigma = 1.2 blur on a 2 x 37 x 31 image."""
        return cls((2, 37, 31), sigma=1.2)

    def _conv(self, t: Tensor, transpose: bool) -> Tensor:
        b, c, h, w = t.shape
        k = self.kernel.to(t.dtype)
        flat = t.reshape(b * c, 1, h, w)
        out = (F.conv_transpose2d if transpose else F.conv2d)(flat, k, padding=self.radius)
        return out.reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Return k * x with zero padding, the image's size."""
        self.check_input(x)
        return self._conv(x, transpose=False)

    def adjoint(self, y: Tensor) -> Tensor:
        """Return the transposed convolution of y with k (correlation with the flipped k)."""
        return self._conv(y, transpose=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sigma={self.sigma}, radius={self.radius}"


@hookimpl
def register_operators(register) -> None:
    """Register the Gaussian blur operator."""
    register(GaussianBlur)
