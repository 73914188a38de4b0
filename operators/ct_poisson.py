"""Pre-log sparse-view CT: photon counts y_i ~ Poisson(I0 exp(-l_i)) of the attenuated beam.

The monoenergetic transmission model of statistical CT reconstruction without scatter or
background (Fessler, "Statistical image reconstruction methods for transmission tomography",
Handbook of Medical Imaging vol. 2, SPIE 2000, ch. 1; Elbakri & Fessler, "Statistical image
reconstruction for polyenergetic X-ray computed tomography", IEEE TMI 21(2), 2002, with one
energy): detector bin i of every view counts

    y_i ~ Poisson(lambda_i),   lambda_i = I0 exp(-l_i),   l = (mu / n) W x,

with W the parallel-beam system matrix of ``ct_sparse`` (same angles, detectors and pixels), n =
max(H, W) and ``mu`` the attenuation of a ray crossing the full image width through image value 1,
so the transmission of a given object does not depend on the image size. ``forward`` returns the
mean counts lambda (non-linear in x); ``measure`` draws the counts. The log-likelihood is

    log p(y | x) = sum_i y_i log lambda_i - lambda_i - log y_i!,

written with log lambda_i = log I0 - l_i (no log of an exponential); its gradient in x is
(mu / n) W^T (lambda - y) and its Hessian (mu / n)^2 W^T diag(lambda) W. The Gaussian noise_std
of the other operators plays no part: the noise level is set by I0 (relative noise of a bin
1 / sqrt(lambda_i)).

Baseline: the classical log transform then FBP, x = (n / mu) FBP(log I0 - log max(y, 1)), counts
clipped at 1 so that bins that counted nothing stay finite.

Being non-linear (and non-Gaussian), the operator works with ``--strategy dps`` only, which follows
the gradient of this log-likelihood (Chung et al., ICLR 2023, who treat Poisson noise in Sec. 3.2).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from invdiff_operators.ct_sparse import CTSparse, check_angles, equispaced_angles
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, Operator, Param
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl


class CTPoisson(Operator):
    """Mean photon counts I0 exp(-(mu / n) W x) of sparse-view CT: (B, C, views, detectors)."""

    name: ClassVar[str] = "ct_poisson"
    params: ClassVar[tuple[Param, ...]] = (
        *CTSparse.params,  # the same geometry
        Param("i0", float, 1e4, "incident photons per detector bin (I0); sets the noise level"),
        Param("mu", float, 5.0, "attenuation across the image width of image value 1"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        i0: float = 1e4,
        mu: float = 5.0,
        **geometry: int,
    ):
        """``geometry``: ct_sparse's ``views`` and ``detectors`` (its defaults)."""
        super().__init__(image_shape, noise_std=noise_std)
        if not (i0 > 0 and math.isfinite(i0)) or not (mu > 0 and math.isfinite(mu)):
            raise InvdiffError(f"ct_poisson: need --i0 > 0 and --mu > 0, got {i0}, {mu}")
        self.ct = CTSparse(self.image_shape, noise_std=0.0, **geometry)
        self.views, self.detectors = self.ct.views, self.ct.detectors
        self.i0, self.mu = float(i0), float(mu)
        self.scale = self.mu / max(self.image_shape[1:])  # attenuation per pixel length

    @classmethod
    def example(cls, generator: torch.Generator) -> CTPoisson:
        """Return a 7-view instance on a 1 x 37 x 31 image."""
        return cls((1, 37, 31), views=7)

    def line_integrals(self, x: Tensor) -> Tensor:
        """Return l = (mu / n) W x, the attenuation along every ray."""
        self.check_input(x)
        return self.scale * self.ct(x)

    def forward(self, x: Tensor) -> Tensor:
        """Return the mean counts I0 exp(-l), shape (B, C, views, detectors)."""
        return self.i0 * torch.exp(-self.line_integrals(x))

    def log_likelihood(self, x: Tensor, y: Tensor, noise_std: float | None = None) -> Tensor:
        """Return sum_i y_i log lambda_i - lambda_i per sample (Poisson, up to -log y_i!).

        ``noise_std`` is ignored: Poisson noise has no separate scale.
        """
        l = self.line_integrals(x)  # noqa: E741
        log_rate = math.log(self.i0) - l
        return (y * log_rate - torch.exp(log_rate)).flatten(1).sum(1)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw photon counts y ~ Poisson(I0 exp(-l)) (float, in x's dtype) from ``generator``."""
        rate = self.forward(x)
        device = generator.device if generator is not None else rate.device
        counts = torch.poisson(rate.to(device), generator=generator)
        return counts.to(rate.device)

    def post_log(self, y: Tensor) -> Tensor:
        """Return the line integrals log I0 - log max(y, 1) estimated from counts."""
        return math.log(self.i0) - torch.log(y.clamp_min(1.0))

    def baseline(self, y: Tensor) -> tuple[str, Tensor]:
        """Return ("log + FBP", (n / mu) FBP(log I0 - log max(y, 1)))."""
        return "log + FBP", self.ct.fbp(self.post_log(y)) / self.scale

    def geometry(self) -> dict[str, np.ndarray]:
        """Return the view angles (radians), stored as /angles."""
        return {"angles": equispaced_angles(self.views)}

    def set_geometry(self, arrays: dict, source: str) -> None:
        """Check stored /angles: equispaced parallel-beam views over [0, pi), as ct_sparse."""
        check_angles(arrays.get("angles"), self.views, source, self.name)

    def extra_repr(self) -> str:
        return (
            f"image_shape={self.image_shape}, views={self.views}, detectors={self.detectors}, "
            f"i0={self.i0:g}, mu={self.mu:g}"
        )


@hookimpl
def register_operators(register) -> None:
    """Register the photon-count CT operator."""
    register(CTPoisson)
