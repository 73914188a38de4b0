"""DeepInverse's physics for invdiff's operators: building it, checking that it measures what
ours does, and timing both packages' operators.

Before any number, each task of ``bench_deepinv`` checks that DeepInverse's physics measures what
ours does: the same images through both, the best scale c in y_ours ~ c y_deepinv and the relative
error after scaling (:func:`physics_match`). MRI must match exactly; CT is compared raw and after
aligning the rotation centre (astra turns about (n - 1) / 2, DeepInverse's Radon about the centre
of the image zero-padded to its diagonal, half a pixel away at 64 px), and the run stops if even
the aligned sinograms differ by more than ``CT_ALIGNED_TOL`` (``--allow-mismatch`` goes on and
labels the rows). Forward + adjoint times of both packages' operators: :func:`operator_ms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from benchmarks import common

#: Largest relative error of DeepInverse's MRI k-space against ours after scaling.
MRI_TOL = 1e-5
#: Largest relative error of DeepInverse's sinograms against ours after scaling and aligning the
#: rotation centre (the two projectors discretise the line integrals differently).
CT_ALIGNED_TOL = 0.02


@dataclass
class DinvPhysics:
    """DeepInverse physics for one invdiff operator and the maps between the two conventions."""

    physics: object
    to_ours: object  # y_deepinv -> invdiff's measurement layout
    embed: object  # invdiff image (B, 1, H, W) -> DeepInverse image
    real: object  # DeepInverse image -> invdiff image
    label: str


def deepinv_physics(dinv, op, noise_std: float) -> DinvPhysics:
    """Return DeepInverse's own physics for ``op`` (ct_sparse or mri) with Gaussian noise_std.

    CT: ``Tomography(angles=views, img_width=n, normalize=False)``, parallel beam, the same
    equispaced angles over [0, 180) degrees, raw line integrals (no operator-norm scaling, like
    ours); its sinogram is (detector, view), ours (view, detector). MRI: ``MRI(mask)`` with our
    mask; its images and k-space are (real, imaginary) channel pairs, ours real / complex.
    """
    noise = dinv.physics.GaussianNoise(sigma=float(noise_std))
    _, h, w = op.image_shape
    if op.name == "ct_sparse":
        if h != w:
            raise ValueError("deepinv.physics.Tomography takes square images only")
        phys = dinv.physics.Tomography(
            angles=op.views, img_width=w, normalize=False, noise_model=noise, device="cpu"
        )
        return DinvPhysics(
            phys,
            lambda y: y.transpose(-2, -1),
            lambda x: x,
            lambda x: x,
            f"deepinv Tomography ({op.views} views, normalize=False)",
        )
    if op.name == "mri":
        phys = dinv.physics.MRI(
            mask=op.mask.detach().clone().float(), img_size=(1, 2, h, w), noise_model=noise
        )
        return DinvPhysics(
            phys,
            lambda y: torch.complex(y[:, :1].float(), y[:, 1:].float()),
            lambda x: torch.cat([x, torch.zeros_like(x)], 1),
            lambda x: x[:, :1],
            "deepinv MRI (our mask, complex as 2 channels)",
        )
    raise ValueError(f"no DeepInverse physics for operator {op.name!r}")


def wrap_operator(dinv, op, noise_std: float):
    """Return invdiff's operator as a ``deepinv.physics.LinearPhysics`` (for the cross rows)."""
    noise = dinv.physics.GaussianNoise(sigma=float(noise_std))
    return dinv.physics.LinearPhysics(A=op.forward, A_adjoint=op.adjoint, noise_model=noise)


def _fit(y_ref: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Return (c, ||c y - y_ref|| / ||y_ref||) with c the least-squares scale."""
    y_ref, y = y_ref.to(torch.complex128), y.to(torch.complex128)
    c = (y.conj() * y_ref).sum() / (y.abs() ** 2).sum()
    err = (c * y - y_ref).abs().norm() / y_ref.abs().norm()
    return float(c.real), float(err)


def shift_image(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """Return x moved by (dy, dx) pixels (Fourier shift, periodic; sub-pixel shifts allowed)."""
    ky = torch.fft.fftfreq(x.shape[-2], dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64)[None]
    phase = torch.exp(-2j * math.pi * (ky * dy + kx * dx))
    return torch.fft.ifft2(torch.fft.fft2(x.double()) * phase).real.to(x.dtype)


def physics_match(dinv, op, images: torch.Tensor, allow_mismatch: bool = False) -> dict:
    """Check that DeepInverse's physics measures what ``op`` measures on ``images``.

    Returns the scale c (y_ours ~ c y_deepinv), the relative error after scaling and, for CT, the
    same after moving the image by the half-pixel offset (0 or +-0.5 px on both axes) that best
    aligns the two rotation centres before DeepInverse projects it. Raises RuntimeError when the
    check fails (MRI: error > MRI_TOL; CT: aligned error > CT_ALIGNED_TOL) unless
    ``allow_mismatch``.
    """
    dp = deepinv_physics(dinv, op, 0.0)
    with torch.no_grad():
        y_ours = op(images)
        y_d = dp.to_ours(dp.physics.A(dp.embed(images)))
        if y_d.shape != y_ours.shape:
            out = {
                "match": False,
                "reason": f"shapes differ: deepinv {tuple(y_d.shape)}, ours {tuple(y_ours.shape)}",
            }
            if not allow_mismatch:
                raise RuntimeError(f"{op.name}: {out['reason']}")
            return out
        scale, err = _fit(y_ours, y_d)
        out = {"scale": scale, "rel_error": err, "images": len(images)}
        if op.name == "ct_sparse":
            # Where each projector puts the rotation centre: astra at (n - 1) / 2; DeepInverse at
            # the centre of the image zero-padded to its diagonal, which lies half a pixel off
            # (n - 1) / 2 when the padding is odd (64 px: 13 + 14 pixels). Try both half-pixel
            # moves and none; keep the best.
            fits = {}
            for offset in (0.0, 0.5, -0.5):
                moved = shift_image(images, offset, offset) if offset else images
                fits[offset] = _fit(y_ours, dp.to_ours(dp.physics.A(dp.embed(moved))))
            offset = min(fits, key=lambda k: fits[k][1])
            scale_al, err_al = fits[offset]
            out |= {
                "centre_offset_px": offset,
                "aligned_scale": scale_al,
                "aligned_rel_error": err_al,
                "tolerance": CT_ALIGNED_TOL,
                "mapping": "y_ours[v, d] = c * y_deepinv[d, v] (transpose, no flips)",
            }
            ok = err_al <= CT_ALIGNED_TOL
            out["verdict"] = (
                "same geometry and angles; "
                + (
                    f"the rotation centres differ by ({offset:+.1f}, {offset:+.1f}) px: once "
                    f"aligned the sinograms agree to {100 * err_al:.2f} %, as they are to "
                    f"{100 * err:.2f} %"
                    if offset
                    else f"the sinograms agree to {100 * err:.2f} %"
                )
                + "; the rest is the projectors' discretisation (astra's linear projector, "
                "DeepInverse's rotate-and-sum): each package is run with its own physics and y"
                if ok
                else f"different: {100 * err_al:.2f} % apart even with the best centre"
            )
        else:
            ok = err <= MRI_TOL
            out |= {"tolerance": MRI_TOL, "mapping": "y_ours = c * (y_re + i y_im)"}
            out["verdict"] = "identical up to rounding" if ok else f"different: {err:.2e} apart"
        out["match"] = bool(ok)
    if not ok and not allow_mismatch:
        raise RuntimeError(f"{op.name}: deepinv's physics does not match ours: {out}")
    return out


def operator_ms(forward, adjoint, x: torch.Tensor, repeats: int) -> float:
    """Return the median milliseconds of one forward and one adjoint on the batch x."""
    with torch.no_grad():
        y = forward(x)

    def both():
        with torch.no_grad():
            forward(x)
            adjoint(y)

    return common.median_ms(both, repeats, warmup=2)
