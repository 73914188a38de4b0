"""Forward operators: the measurement model y = A(x) + noise_std * n, n ~ N(0, I).

Every operator is a torch ``nn.Module`` built for one image shape ``(C, H, W)``; it takes a batch
``x`` of shape ``(B, C, H, W)`` (real floating point) and returns measurements on the same device,
in the same dtype (complex of the matching precision for complex measurements). Buffers are
registered, so ``op.to(device, dtype)`` moves everything and no call goes back to the host.

Constructor contract (the CLI and the registry rely on it)::

    Op(image_shape, *, noise_std=0.01, **params)   # one keyword per entry of Op.params

The default likelihood is Gaussian,

    log p(y | x) = -||y - A(x)||^2 / (2 noise_std^2) + const,

with ``||.||`` the Euclidean norm of the real (or real and imaginary) parts. Its gradient is the
likelihood score used by posterior samplers (Song, Shen, Xing, Ermon, "Solving inverse problems in
medical imaging with score-based generative models", ICLR 2022; Chung et al., DPS, ICLR 2023).
An operator with another noise model (photon counts: operators/ct_poisson.py) overrides
``log_likelihood`` and ``measure``; ``forward`` then returns the mean E[y | x]. Only DPS uses
such a likelihood (the other strategies are built on the Gaussian one and refuse the operator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from invdiff.core.linalg import conjugate_gradient, real_inner
from invdiff.errors import InvdiffError

__all__ = ["LinearOperator", "Operator", "real_inner"]  # real_inner re-exported for plugins

DEFAULT_NOISE_STD = 0.01


@dataclass(frozen=True)
class Param:
    """Declare one constructor keyword of an operator so the CLI can expose it as ``--name``.

    ``type`` is ``int``, ``float``, ``str`` or ``bool``; ``choices`` restricts a ``str`` option.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def option(self) -> str:
        """Return the command-line spelling, e.g. ``--center-fraction``."""
        return "--" + self.name.replace("_", "-")


NOISE_STD = Param(
    "noise_std",
    float,
    DEFAULT_NOISE_STD,
    "standard deviation of the Gaussian measurement noise (image units)",
)


def check_mask(mask, size: tuple[int, int], name: str) -> Tensor:
    """Return mask as a 0/1 float tensor of shape ``size`` or raise a one-line InvdiffError."""
    m = torch.as_tensor(mask)
    if tuple(m.shape) != tuple(size):
        raise InvdiffError(
            f"{name}: the mask has shape {tuple(m.shape)} but the images are {tuple(size)}; "
            "store an H x W mask matching the image"
        )
    if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
        raise InvdiffError(f"{name}: the mask must contain only 0 and 1")
    return m.float()


class Operator(nn.Module):
    """Map a batch of images x of shape (B, C, H, W) to measurements A(x).

    Subclasses set ``name`` and ``params``, implement ``forward`` and ``example``, and call
    ``super().__init__(image_shape, noise_std=noise_std)`` first.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    linear: ClassVar[bool] = False
    #: True where only H == W is supported; the conformance kit then only asks for odd sides.
    square_only: ClassVar[bool] = False
    #: True for a class hypothesis p_t(y | x_t) (e.g. a noise-conditional classifier) rather than
    #: measured data: its likelihood acts on x_t through ``likelihood_score_t`` and its
    #: "measurement" is a label (see operators/classifier.py).
    time_conditional: ClassVar[bool] = False
    #: True where ``pseudo_inverse`` is the exact Moore-Penrose pseudo-inverse (linear operators).
    exact_pseudo_inverse: ClassVar[bool] = False
    #: H and W must be multiples of this (an instance may set it, e.g. a super-resolution
    #: factor); the conformance kit then asks for an example whose H / m and W / m are odd.
    side_multiple: int = 1
    #: Noise level at which a warm-started strategy (DiffPIR, by default) begins from
    #: :meth:`baseline` (Chung, Sim, Ye, "Come-Closer-Diffuse-Faster", CVPR 2022): high enough
    #: to hide the baseline's typical error, low enough to keep what it got right. An operator
    #: whose baseline is better or worse than most sets its own, chosen on validation images.
    warm_start_sigma: ClassVar[float] = 0.5
    #: Factor kappa >= 1 by which a DiffPIR-style strategy inflates each step's noise level before
    #: denoising (:func:`invdiff.guidance.steps.inflated_tweedie`, ``--kappa``): the states carry
    #: the previous estimate's error on top of the nominal noise, so far from this operator's
    #: kind of data the denoiser is told a level slightly above the nominal one. 1 (plain
    #: Tweedie) unless an operator chose another on validation images.
    noise_inflation: ClassVar[float] = 1.0
    #: Relaxation in (0, 2] of a DiffPIR-style data step (``--relax``,
    #: :func:`invdiff.guidance.steps.diffpir_step`): the estimate moves ``data_relaxation`` times
    #: the way to the data's minimiser. 1 (DiffPIR's step) unless an operator chose another on
    #: validation images.
    data_relaxation: ClassVar[float] = 1.0

    def __init__(self, image_shape: tuple[int, int, int], *, noise_std: float = DEFAULT_NOISE_STD):
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InvdiffError(
                f"{self.name or type(self).__name__}: image_shape must be (C, H, W) with positive "
                f"sizes, got {tuple(image_shape)}"
            )
        if self.square_only and shape[1] != shape[2]:
            raise InvdiffError(
                f"{self.name}: needs square images, got H={shape[1]}, W={shape[2]}; "
                "crop or pad to H == W"
            )
        if not (noise_std >= 0 and math.isfinite(noise_std)):
            raise InvdiffError(f"{self.name}: noise_std must be >= 0, got {noise_std}")
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.noise_std = float(noise_std)

    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        """Return every declared constructor keyword: ``noise_std`` then the operator's own."""
        return (NOISE_STD, *cls.params)

    @classmethod
    def example(cls, generator: torch.Generator) -> Operator:
        """Return a small instance (odd, non-square image shape where allowed) for the kit."""
        raise NotImplementedError(f"{cls.__name__}.example is not implemented")

    def check_input(self, x: Tensor) -> None:
        """Raise InvdiffError unless x is a real floating batch of shape (B, *image_shape)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise InvdiffError(
                f"{self.name}: expected images of shape (B, {c}, {h}, {w}), got {tuple(x.shape)};"
                f" build the operator with image_shape={tuple(x.shape[1:])}"
            )
        if not x.is_floating_point():
            raise InvdiffError(f"{self.name}: expected a real floating tensor, got {x.dtype}")

    def log_likelihood(self, x: Tensor, y: Tensor, noise_std: float | None = None) -> Tensor:
        """Return log p(y | x) per sample (B,), up to terms that do not depend on x.

        Default: Gaussian, log N(y; A(x), s^2 I) = -||y - A(x)||^2 / (2 s^2), s = ``noise_std``
        or the operator's. An operator with another noise model overrides it (keeping the
        signature; it may ignore ``noise_std``), differentiably in x, and overrides ``measure`` to
        draw from the same model; DPS then follows its gradient.
        """
        s = self._noise(noise_std)
        r = y - self.forward(x)
        return -0.5 * real_inner(r, r) / s**2

    @property
    def gaussian_likelihood(self) -> bool:
        """Return True unless the class overrides ``log_likelihood`` (the Gaussian default)."""
        return type(self).log_likelihood is Operator.log_likelihood

    def likelihood_score(self, x: Tensor, y: Tensor, noise_std: float | None = None) -> Tensor:
        """Return grad_x log p(y | x) by autograd (linear Gaussian operators: a closed form)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_likelihood(x, y, noise_std).sum(), x)
        return grad

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Simulate y = A(x) + noise_std * n on the measured entries; complex n is N(0, 1) in both
        parts, so complex y gets N(0, s^2) noise in its real and in its imaginary part."""
        y = self.forward(x)
        if self.noise_std == 0:
            return y
        real = torch.view_as_real(y) if y.is_complex() else y
        device = generator.device if generator is not None else y.device
        n = torch.randn(real.shape, generator=generator, dtype=real.dtype, device=device)
        n = n.to(y.device)
        noise = torch.view_as_complex(n) if y.is_complex() else n
        return y + self.noise_std * self.restrict_to_measured(noise)

    def likelihood_score_t(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Where ``time_conditional``: return the likelihood score grad_x log p_t(y | x_t) at the
        diffusion time t (shape (B,)); y holds the class labels."""
        raise NotImplementedError(f"{self.name} is not time-conditional")

    def check_sde(self, sde: Any) -> None:
        """Where ``time_conditional``: raise InvdiffError if the operator was made for another
        SDE than the prior's (a classifier trained on other noise levels). Default: accept."""

    def hypothesis_labels(self, n: int) -> Tensor:
        """Where ``time_conditional``: return the n labels this hypothesis asks for (int64)."""
        raise NotImplementedError(f"{self.name} is not time-conditional")

    def baseline(self, y: Tensor) -> tuple[str, Tensor] | None:
        """Return (name, image) of the classical reconstruction from y, or None when there is
        none. Built-ins: FBP (ct_sparse), zero-filled (mri), biharmonic (masking), gray
        replicated (grayscale); linear operators default to their pseudo-inverse."""
        return None

    def geometry(self) -> dict[str, Any]:
        """Return the arrays stored beside a measurement that pin this operator down (CT angles,
        a sampling mask), keyed by their dataset names; {} when the parameters say it all."""
        return {}

    def set_geometry(self, arrays: dict[str, Any], source: str) -> None:
        """Adopt or check geometry read from a measurement file (the keys of :meth:`geometry`).

        Raise InvdiffError naming ``source`` when the arrays contradict the operator. The default
        ignores them; operators with geometry override it.
        """

    def restrict_to_measured(self, y: Tensor) -> Tensor:
        """Zero the entries of a measurement-shaped y that the operator never measures.

        The identity here; operators whose output keeps placeholders (masked pixels, unsampled
        k-space) override it, so ``measure`` leaves those entries exactly 0.
        """
        return y

    def _noise(self, noise_std: float | None) -> float:
        s = self.noise_std if noise_std is None else float(noise_std)
        if s <= 0:
            raise InvdiffError(f"{self.name}: the likelihood needs noise_std > 0, got {s}")
        return s

    def __matmul__(self, inner: Operator) -> Operator:
        """Return the composition ``self ∘ inner`` (linear when both are)."""
        if isinstance(self, LinearOperator) and isinstance(inner, LinearOperator):
            return LinearComposition(self, inner)
        return Composition(self, inner)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, noise_std={self.noise_std}"


class LinearOperator(Operator):
    """Linear A with adjoint A^T under the real inner product Re<., .>.

    ``likelihood_score`` is closed form: A^T (y - A x) / s^2. ``pseudo_inverse`` defaults to
    conjugate gradients on the normal equations started at zero (the minimum-norm least-squares
    solution in the limit); subclasses with a closed form override it and set
    ``exact_pseudo_inverse``. ``project`` is the data-consistency step of Song et al. (ICLR 2022).
    """

    linear: ClassVar[bool] = True
    #: Relative adjoint tolerance for operators that are not exactly adjoint; None means exact.
    adjoint_rtol: ClassVar[float | None] = None
    #: Iterations of the default conjugate-gradient pseudo-inverse.
    cg_iterations: ClassVar[int] = 30

    def adjoint(self, y: Tensor) -> Tensor:
        """Return A^T y, shape (B, *image_shape), real, in y's precision."""
        raise NotImplementedError

    def baseline(self, y: Tensor) -> tuple[str, Tensor] | None:
        """Return ("pseudo-inverse", A^+ y); built-ins override it with their classical method."""
        return "pseudo-inverse", self.pseudo_inverse(y)

    def likelihood_score(self, x: Tensor, y: Tensor, noise_std: float | None = None) -> Tensor:
        """Return A^T (y - A x) / s^2, the gradient of -||y - A x||^2 / (2 s^2) (autograd of
        ``log_likelihood`` where the class defines its own)."""
        if not self.gaussian_likelihood:
            return super().likelihood_score(x, y, noise_std)
        s = self._noise(noise_std)
        return self.adjoint(y - self.forward(x)) / s**2

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """Return x ~ A^+ y by batched conjugate gradients on A^T A x = A^T y, x0 = 0 (CGLS)."""
        normal = lambda p: [self.adjoint(self.forward(p[0]))]  # noqa: E731
        return conjugate_gradient(normal, [self.adjoint(y)], self.cg_iterations)[0]

    def project(self, x: Tensor, y: Tensor, lam: float | Tensor = 1.0) -> Tensor:
        """Return x + lam * A^+ (y - A x), the data-consistency blend of Song et al. (ICLR 2022).

        With an exact pseudo-inverse and y in the range of A this gives
        A(project) = (1 - lam) A x + lam y on the measured coefficients and leaves the null
        space of A untouched; with an approximate one (CG, FBP) it is the same step, approximately.
        """
        return x + lam * self.pseudo_inverse(y - self.forward(x))


class Composition(Operator):
    """Apply ``inner`` then ``outer``: (outer ∘ inner)(x)."""

    name: ClassVar[str] = "composition"

    def __init__(self, outer: Operator, inner: Operator):
        super().__init__(inner.image_shape, noise_std=outer.noise_std)
        self.outer = outer
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        """Return outer(inner(x))."""
        return self.outer(self.inner(x))


class LinearComposition(LinearOperator, Composition):
    """Compose two linear operators; the adjoint is inner^T outer^T."""

    def adjoint(self, y: Tensor) -> Tensor:
        """Return inner^T (outer^T y)."""
        return self.inner.adjoint(self.outer.adjoint(y))
