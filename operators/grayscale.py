"""RGB to gray (colorization): y = w . x per pixel, x in R^3, y in R.

Following Song et al. (ICLR 2021, "Score-based generative modeling through stochastic
differential equations", colorization), the colour space is decoupled by an orthogonal 3 x 3
matrix Q whose first row is q = w / |w|: in the coordinates z = Q x the first channel is
z_1 = q . x = y / |w|, known exactly from the measurement, and the other two are unmeasured.
Weights: ``mean`` w = (1, 1, 1) / 3 (so q = (1, 1, 1) / sqrt(3), Song et al.'s choice), or
``luma`` w = (0.299, 0.587, 0.114) (ITU-R BT.601), q = w / |w|. The other rows of Q complete q
to an orthonormal basis (QR of [q, e2, e3], signs fixed so the result is deterministic).

A A^T = |w|^2 I, so the pseudo-inverse is A^T / |w|^2 (exact) and ``project`` sets the
decoupled first channel to (1 - lam) z_1 + lam y / |w| and leaves the other two untouched.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, LinearOperator, Param
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl

WEIGHTS = {"mean": (1 / 3, 1 / 3, 1 / 3), "luma": (0.299, 0.587, 0.114)}


def decoupling_matrix(w: Tensor) -> Tensor:
    """Return an orthogonal Q (3 x 3, float64) whose first row is w / |w|."""
    q = w.double() / w.double().norm()
    columns = torch.eye(3, dtype=torch.float64)
    columns[:, 0] = q  # [q, e2, e3] has full rank since q_1 != 0
    basis, r = torch.linalg.qr(columns)
    basis = basis * torch.sign(torch.diagonal(r))  # make QR unique: positive diagonal of R
    return basis.T.contiguous()


class Grayscale(LinearOperator):
    """Average the three colour channels with weights w: y = sum_c w_c x_c."""

    name: ClassVar[str] = "grayscale"
    exact_pseudo_inverse: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param(
            "weights",
            str,
            "mean",
            "channel weights: mean (1/3 each) or luma (BT.601)",
            tuple(WEIGHTS),
        ),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        weights: str = "mean",
    ):
        super().__init__(image_shape, noise_std=noise_std)
        if self.image_shape[0] != 3:
            raise InvdiffError(
                f"grayscale: needs 3-channel RGB images, got {self.image_shape[0]} channel(s); "
                "use a colour data set or another operator"
            )
        if weights not in WEIGHTS:
            raise InvdiffError(f"grayscale: unknown --weights {weights!r}; use mean or luma")
        w = torch.tensor(WEIGHTS[weights], dtype=torch.float64)
        dtype = torch.get_default_dtype()
        self.register_buffer("weights", w.to(dtype))
        self.register_buffer("decoupling", decoupling_matrix(w).to(dtype))

    def baseline(self, y: Tensor) -> tuple[str, Tensor]:
        """Return ("gray replicated", the gray image copied to every channel; A x = y when the
        weights sum to 1)."""
        return "gray replicated", y.expand(-1, self.image_shape[0], -1, -1).clone()

    @classmethod
    def example(cls, generator: torch.Generator) -> Grayscale:
        """Return a luma-weighted instance on a 3 x 37 x 31 image."""
        return cls((3, 37, 31), weights="luma")

    def forward(self, x: Tensor) -> Tensor:
        """Return sum_c w_c x_c, shape (B, 1, H, W)."""
        self.check_input(x)
        return torch.einsum("c,bchw->bhw", self.weights.to(x.dtype), x).unsqueeze(1)

    def adjoint(self, y: Tensor) -> Tensor:
        """Return w_c y for each channel c, shape (B, 3, H, W)."""
        return self.weights.to(y.dtype).view(1, 3, 1, 1) * y

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """Return w y / |w|^2 (A A^T = |w|^2 I); for ``mean`` this copies y to all channels."""
        w = self.weights.to(y.dtype)
        return self.adjoint(y) / (w @ w)

    def decouple(self, x: Tensor) -> Tensor:
        """Return z = Q x per pixel; z_1 = (w . x) / |w| is measured, z_2 and z_3 are not."""
        return torch.einsum("dc,bchw->bdhw", self.decoupling.to(x.dtype), x)

    def couple(self, z: Tensor) -> Tensor:
        """Return x = Q^T z per pixel, the inverse of ``decouple``."""
        return torch.einsum("dc,bdhw->bchw", self.decoupling.to(z.dtype), z)


@hookimpl
def register_operators(register) -> None:
    """Register the grayscale operator."""
    register(Grayscale)
