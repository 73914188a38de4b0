"""From one solve input to what the reconstruction core takes: the image shape, the operators
(from the command line or the file, given the file's geometry) and one measurement tensor per
operator, read from the file or simulated (``--simulate``); fastMRI k-space is cropped to the
model's grid here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from invdiff.cli._common import (
    image_shape,
)
from invdiff.cli._options import OperatorSpec, file_params
from invdiff.errors import InvdiffError
from invdiff.io import SolveInput

Shape = tuple[int, int, int]


def data_shape(image: dict, data: SolveInput, simulate: bool, image_size: int | None) -> Shape:
    """Return (C, H, W) of the images to reconstruct from ``data`` (``image``: the model's).

    A model trained on crops (image.any_size) takes the size from /image (--simulate),
    /ground_truth or /mask, or from --image-size, which must then agree with them.
    """
    if not image.get("any_size"):
        return image_shape(image, image_size)
    if simulate and data.image is None:
        raise InvdiffError(f"--simulate needs /image in {data.path}; store N x C x H x W")
    found = None
    for arr in (data.image if simulate else None, data.ground_truth):
        if found is None and arr is not None and arr.ndim == 4:
            found = tuple(arr.shape[-2:])
    if found is None and data.mask is not None and data.format != "fastmri":
        found = tuple(data.mask.shape[-2:])
    return image_shape(image, image_size, found, data.path)


def build_operators(
    registry, specs: list[OperatorSpec], data: SolveInput, shape: Shape, noise, device
) -> list[tuple[OperatorSpec, object]]:
    """Return [(spec, operator)] for the command line's operators or the file's own; each spec
    holds every parameter the operator ran with (its declared defaults included)."""
    if not specs:  # the caller has checked that the file names its operator
        registry.lookup(data.operator)
        specs = [OperatorSpec(data.operator, dict(data.operator_params))]
    out = []
    for spec in specs:
        params = dict(spec.params)
        entry = registry.lookup(spec.name)
        if data.operator == spec.name:  # the file's parameters, unless overridden
            params = {**file_params(entry, data.operator_params, data.path), **params}
        if noise is not None and "noise_std" not in spec.params:
            params["noise_std"] = noise
        mask = data.mask
        if mask is not None and data.format == "fastmri":
            mask = fastmri_mask(mask, shape)
        with plugin_code(f"operator {entry.name!r} (plugin {entry.plugin!r}, {entry.package})"):
            op = entry.create(shape, **params)
            # The file's geometry (/mask, /angles): the operator adopts or checks it.
            op.set_geometry({"mask": mask, "angles": data.angles}, str(data.path))
            op = op.to(device)
        declared = {p.name: p.default for p in entry.params}
        out.append((OperatorSpec(spec.name, {**declared, **params}), op))
    return out


@contextlib.contextmanager
def plugin_code(what: str) -> Iterator[None]:
    """Run an operator plugin's code: a failure other than a one-line InvdiffError (a bug in the
    plugin) becomes one line naming the operator and its plugin."""
    try:
        yield
    except InvdiffError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a plugin raises
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise InvdiffError(
            f"{what} failed: {type(err).__name__}: {first}; report it to the plugin's authors"
        ) from None


def read_measurements(data: SolveInput, ops, shape: Shape, simulate: bool, seed: int, device):
    """Return one measurement tensor (N, ...) per operator, checked against its shape."""
    import numpy as np
    import torch

    n = data.n
    probe = torch.zeros(1, *shape, device=device)
    if simulate:
        if data.image is None:
            raise InvdiffError(f"--simulate needs /image in {data.path}; store N x C x H x W")
        image = check_images(data.image, shape, "/image", data.path)
        return [
            op.hypothesis_labels(n) if op.time_conditional else _measure(op, image, seed, k, device)
            for k, (_, op) in enumerate(ops)
        ]
    with plugin_code(" and ".join(f"operator {spec.name!r}" for spec, _ in ops)):
        outputs = [None if op.time_conditional else op(probe) for _, op in ops]
    if data.format == "fastmri":
        data.measurements = {"mri": fastmri_kspace(data.measurements["mri"], shape)}
    measured = [spec for spec, op in ops if not op.time_conditional]
    ys = []
    for (spec, op), probed in zip(ops, outputs, strict=True):
        if op.time_conditional:  # a class hypothesis: its "measurement" is the label
            ys.append(op.hypothesis_labels(n).to(device))
            continue
        y = data.measurements.get(spec.name)
        if y is None and len(measured) == 1:
            y = data.measurements.get("")
        if y is None:
            where = f"/measurements/{spec.name}" if len(measured) > 1 else "/measurement"
            raise InvdiffError(f"{data.path} has no {where} for operator {spec.name}")
        expected = tuple(probed.shape[1:])
        if y.ndim == len(expected) and expected[0] == 1:
            y = y[:, None]
        if tuple(y.shape[1:]) != expected:
            raise InvdiffError(
                f"measurement for {spec.name} in {data.path} has shape {tuple(y.shape)} but "
                f"the operator gives (N, {', '.join(map(str, expected))}) for "
                f"{shape[1]}x{shape[2]} images; check the operator options "
                "(e.g. --views, --detectors) and the model"
            )
        complex_needed = probed.is_complex()
        if complex_needed and not np.iscomplexobj(y):
            raise InvdiffError(
                f"{spec.name} measurements are complex but {data.path} stores real data; "
                "store complex k-space"
            )
        if not complex_needed and np.iscomplexobj(y):
            raise InvdiffError(f"{spec.name} measurements are real but the file's are complex")
        dtype = torch.complex64 if complex_needed else torch.float32
        ys.append(torch.as_tensor(np.ascontiguousarray(y)).to(device, dtype))
    return ys


def _measure(op, image, seed: int, k: int, device):
    import torch

    from invdiff.training.train import step_generator

    g = step_generator(seed, 1_000_003 + k)  # measurement noise has its own seed stream
    with plugin_code(f"operator {op.name!r}"):
        y = op.measure(torch.as_tensor(image), g).to(device)
    if not torch.isfinite(y).all():
        raise InvdiffError(
            f"operator {op.name!r} measured NaN or Inf from /image; check its options and /image"
        )
    return y


def check_images(images, shape: Shape, name: str, path: Path | str):
    """Return ``images`` after checking their shape against the model's and their range."""
    if tuple(images.shape[1:]) != shape:
        c, h, w = shape
        raise InvdiffError(
            f"{name} in {path} is {tuple(images.shape[1:])} per slice but the model expects "
            f"({c}, {h}, {w}); resample the data or pass a matching --model"
        )
    if images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise InvdiffError(f"{name} in {path} lies outside [0, 1]; rescale it")
    return images


# fastMRI single-coil files: k-space and mask at the scanner's size -----------------------------


def fastmri_mask(mask, shape: Shape):
    """Return the centre ``W`` columns of a fastMRI column mask as an H x W mask."""
    import numpy as np

    _, h, w = shape
    cols = np.asarray(mask).ravel().astype(bool)
    start = (cols.size - w) // 2
    return np.broadcast_to(cols[start : start + w], (h, w)).astype(np.float32)


def fastmri_kspace(k, shape: Shape):
    """Centre-crop k-space to the model's grid (a low-pass resampling) and normalise."""
    import numpy as np

    _, h, w = shape
    if k.shape[-2] < h or k.shape[-1] < w:
        raise InvdiffError(f"fastMRI k-space {k.shape[-2:]} is smaller than the model {h}x{w}")
    r0, c0 = (k.shape[-2] - h) // 2, (k.shape[-1] - w) // 2
    k = k[..., r0 : r0 + h, c0 : c0 + w]
    axes = (-2, -1)
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)
    img = np.abs(img)
    scale = img.reshape(len(k), -1).max(1).clip(1e-12)
    return (k / scale[:, None, None, None]).astype(np.complex64)
