"""HDF5 input and output; the only module that imports h5py.

The layouts (training images, solve input, solve output, fastMRI and LoDoPaB files) are described
in docs/formats.md. Every writer goes through :func:`invdiff.atomic.atomic_path`, so an
interrupted write never leaves a half-written file and never damages an existing one.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from invdiff.atomic import atomic_path
from invdiff.errors import InvdiffError

MAX_GIB = 16  # the largest dataset read into memory at once


def _array(f, name: str, path: Path, kinds: str = "fiu") -> np.ndarray:
    """Read dataset ``name`` of an open file, refusing groups, empty, and non-numeric data (or
    complex data where ``kinds`` has no 'c') with one line naming the dataset."""
    obj = f.get(name)
    label = "/" + name.lstrip("/")
    if not isinstance(obj, _h5py().Dataset):
        raise InvdiffError(f"{label} in {path} is a group, not a dataset; store an array there")
    kind = obj.dtype.kind
    if kind not in kinds:
        what = "complex" if kind == "c" else f"not numbers ({obj.dtype})"
        raise InvdiffError(f"{label} in {path} is {what}; store a real numeric array")
    if not obj.size:  # 0 entries, or no dataspace at all (h5py.Empty: size None)
        raise InvdiffError(f"{label} in {path} is empty (shape {obj.shape}); store the data")
    gib = obj.size * obj.dtype.itemsize / 2**30
    if gib > MAX_GIB:
        raise InvdiffError(
            f"{label} in {path} is {gib:.0f} GiB (shape {obj.shape}), more than invdiff reads at "
            f"once ({MAX_GIB} GiB); split it into several files"
        )
    # The array and at least one copy of it, at least float32 (the readers convert, the checks
    # copy): 5 bytes a value for uint8 data, which a check of 2 bytes let through to a traceback.
    need = gib + obj.size * max(obj.dtype.itemsize, 4) / 2**30
    available = _available_gib()
    if need > available:
        raise InvdiffError(
            f"{label} in {path} is {gib:.1f} GiB (shape {obj.shape}), {need:.1f} GiB once read "
            f"and converted, more than the memory available ({available:.1f} GiB); split it "
            "into several files"
        )
    try:
        return np.asarray(obj[...])
    except MemoryError:
        raise InvdiffError(
            f"{label} in {path} ({gib:.1f} GiB) does not fit in memory; split it into several files"
        ) from None
    except OSError as err:  # a truncated or damaged file
        raise InvdiffError(
            f"{label} in {path} cannot be read ({str(err).splitlines()[0][:100]}); the file is "
            "truncated or damaged: copy or export it again"
        ) from None


def _h5py():
    import h5py

    return h5py


def _available_gib() -> float:
    """Return the memory available to a new allocation in GiB (MemAvailable; inf if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return math.inf


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[Any]:
    """Open an HDF5 file for reading; yield it. h5py's errors on a damaged file (raised at any
    access: attributes, names, data) become one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise InvdiffError(f"{path} not found; check the path")
    if path.is_dir():
        raise InvdiffError(f"{path} is a folder, not an HDF5 file; give the file's path")
    if not path.is_file():  # a FIFO would block h5py's open forever
        raise InvdiffError(f"{path} is not a regular file (a FIFO or a device); give an HDF5 file")
    if not os.access(path, os.R_OK):
        raise InvdiffError(f"{path} is not readable (permissions); chmod it or copy it")
    try:
        f = _h5py().File(path, "r")
    except OSError:
        raise InvdiffError(f"{path} is not a readable HDF5 file; check that it is HDF5") from None
    with f:
        try:
            yield f
        except (OSError, KeyError, RuntimeError) as err:
            raise InvdiffError(
                f"{path} cannot be read ({(str(err).splitlines() or [''])[0][:100]}); the file is "
                "truncated or damaged: copy or export it again"
            ) from None


def read_array(path: str | Path, name: str, kinds: str = "biuf") -> np.ndarray:
    """Read one dataset of an HDF5 file with the checks every reader here makes (the file, the
    dataset's kind, size and memory); e.g. an operator's mask stored in its own file."""
    with _open(path) as f:
        if name not in f:
            raise InvdiffError(f"{path} has no dataset /{name}; found {list(f)}")
        return _array(f, name, Path(path), kinds)


def read_images(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read ``/images`` as float32 N x C x H x W, the optional ``/labels`` and the attributes."""
    with _open(path) as f:
        if "images" not in f:
            raise InvdiffError(
                f"{path} has no /images dataset; store training images as /images (N x C x H x W)"
            )
        images = _array(f, "images", Path(path)).astype(np.float32)
        labels = _labels(_array(f, "labels", Path(path))) if "labels" in f else None
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise InvdiffError(
            f"/images in {path} has shape {images.shape}; expected N x C x H x W or N x H x W"
        )
    if not np.isfinite(images).all():
        raise InvdiffError(f"/images in {path} contains NaN or Inf; clean the data first")
    if images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise InvdiffError(
            f"/images in {path} spans [{images.min():.3g}, {images.max():.3g}]; rescale to [0, 1]"
        )
    if labels is not None and labels.shape != (images.shape[0],):
        raise InvdiffError(f"/labels in {path} has shape {labels.shape}; expected ({len(images)},)")
    if labels is not None and labels.dtype != np.int64:
        raise InvdiffError(f"/labels in {path} must be integers (one class per image)")
    return images, labels, attrs


def _labels(labels: np.ndarray) -> np.ndarray:
    """Return integer class labels as int64; other values keep their dtype (and are refused)."""
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == labels.round()).all():
        return labels.astype(np.int64)
    return labels.astype(np.int64) if labels.dtype.kind in "iu" else labels


def write_datasets(
    path: str | Path,
    datasets: dict[str, np.ndarray],
    attrs: dict[str, Any] | None = None,
    force: bool = True,
) -> None:
    """Write arrays and attributes to a new HDF5 file atomically."""
    with atomic_path(path, force=force) as tmp:
        _write_h5(tmp, datasets, attrs or {})


def _write_h5(path: Path, datasets: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write an HDF5 file: built in memory, then written in one go, so that a failed write (a
    full disk) is one OSError of Python's, never an h5py file left open and failing again when
    garbage-collected (or at exit)."""
    buffer = io.BytesIO()
    with _h5py().File(buffer, "w") as f:
        for name, arr in datasets.items():
            f.create_dataset(name, data=arr, compression="gzip" if arr.size > 4096 else None)
        for key, value in attrs.items():
            f.attrs[key] = value
    with open(path, "wb") as out:
        out.write(buffer.getbuffer())


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass
class SolveInput:
    """What ``invdiff solve`` reads from one file (see the module docstring)."""

    path: Path
    format: str  # "invdiff", "fastmri" or "lodopab"
    measurements: dict[str, np.ndarray]  # operator name ("" = unnamed) -> N x ...
    image: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    angles: np.ndarray | None = None
    mask: np.ndarray | None = None
    operator: str | None = None
    operator_params: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        for arr in (*self.measurements.values(), self.image):
            if arr is not None:
                return len(arr)
        return 0


def _finite(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise InvdiffError(f"{name} in {path} contains NaN or Inf; clean or re-export the data")
    return arr


def _images(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise InvdiffError(f"{name} in {path} has shape {arr.shape}; expected N x C x H x W")
    return _finite(arr, name, path)


def read_solve_input(path: str | Path) -> SolveInput:
    """Read a solve input in the invdiff, fastMRI or LoDoPaB layout; one-line errors."""
    path = Path(path)
    with _open(path) as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        if "kspace" in f:
            return _slices(_read_fastmri(f, path, attrs))
        if "data" in f and not {"measurement", "image", "images"} & set(f):
            y = _finite(_array(f, "data", path).astype(np.float32), "/data", path)
            if y.ndim != 3:
                raise InvdiffError(f"/data in {path} has shape {y.shape}; LoDoPaB is N x V x D")
            return SolveInput(path, "lodopab", {"": y[:, None]}, attrs=attrs)
        measurements: dict[str, np.ndarray] = {}
        if "measurement" in f:
            measurements[""] = _array(f, "measurement", path, "fiuc")
        if "measurements" in f:
            group = f["measurements"]
            if isinstance(group, _h5py().Dataset):
                raise InvdiffError(f"/measurements in {path} must be a group of datasets")
            for name in group:
                measurements[name] = _array(group, name, path, "fiuc")
        for name, y in measurements.items():
            label = f"/measurements/{name}" if name else "/measurement"
            if y.ndim == 0:
                raise InvdiffError(f"{label} in {path} is a single number; store N x (data)")
            _finite(y, label, path)
        key = "image" if "image" in f else "images" if "images" in f else None  # training layout
        image = _images(_array(f, key, path), f"/{key}", path) if key else None
        truth = (
            _images(_array(f, "ground_truth", path), "/ground_truth", path)
            if "ground_truth" in f
            else None
        )
        if not measurements and image is None:
            raise InvdiffError(
                f"{path} has neither /measurement nor /image; store the data as /measurement "
                "(or /image with --simulate)"
            )
        angles = _geometry(f, "angles", path)
        mask = _geometry(f, "mask", path)
        return _slices(
            SolveInput(
                path,
                "invdiff",
                measurements,
                image,
                truth,
                None if angles is None else angles.astype(np.float64),
                mask,
                _operator(attrs, path),
                _operator_params(attrs, path),
                attrs,
            )
        )


def _geometry(f, name: str, path: Path) -> np.ndarray | None:
    """Return the optional /angles or /mask, numeric and finite."""
    return _finite(_array(f, name, path), f"/{name}", path) if name in f else None


def _operator(attrs: dict[str, Any], path: Path) -> str | None:
    name = attrs.get("operator")
    if name is not None and not isinstance(name, str):
        raise InvdiffError(f"attribute operator of {path} must be an operator name")
    return name


def _operator_params(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    """Return the attribute operator_params, which must be a JSON object (text)."""
    import json

    text = attrs.get("operator_params", "{}")
    example = 'a JSON object such as {"views": 23}'
    if not isinstance(text, str):
        raise InvdiffError(f"attribute operator_params of {path} must be text holding {example}")
    try:
        params = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise InvdiffError(
            f"attribute operator_params of {path} is not JSON; store {example}"
        ) from None
    if not isinstance(params, dict):
        raise InvdiffError(f"attribute operator_params of {path} must be {example}")
    return params


def _slices(data: SolveInput) -> SolveInput:
    """Return ``data`` after checking that its arrays agree on the number of slices N."""
    arrays = {
        f"/measurements/{k}" if k else "/measurement": v for k, v in data.measurements.items()
    }
    arrays.update({"/image": data.image, "/ground_truth": data.ground_truth})
    counts = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise InvdiffError(
            f"{data.path}: the datasets disagree on the number of slices ({listed}); store "
            "one entry per slice in each"
        )
    return data


def _read_fastmri(f, path: Path, attrs: dict[str, Any]) -> SolveInput:
    """fastMRI single-coil: S x H x W complex k-space (centred), optional ``mask`` (W,)."""
    k = _array(f, "kspace", path, "fiuc")
    if not np.iscomplexobj(k) or k.ndim != 3:
        raise InvdiffError(
            f"kspace in {path} is {k.dtype} with shape {k.shape}; fastMRI single-coil k-space is "
            "complex S x H x W (multi-coil files are not supported)"
        )
    _finite(k, "kspace", path)
    mask = _geometry(f, "mask", path)
    if mask is not None and mask.shape != (k.shape[-1],):
        raise InvdiffError(
            f"/mask in {path} has shape {mask.shape}; fastMRI's mask has one entry per k-space "
            f"column ({k.shape[-1]},)"
        )
    truth = None
    if "reconstruction_esc" in f:
        truth = _images(_array(f, "reconstruction_esc", path), "reconstruction_esc", path)
    return SolveInput(
        path, "fastmri", {"mri": k[:, None]}, None, truth, None, mask, "mri", {}, attrs
    )


@dataclass
class SolveOutput:
    """What ``invdiff solve`` writes for one input (see the module docstring).

    ``measurements`` maps operator names to N x ... arrays, the name "" standing for the single
    ``/measurement`` (as in :class:`SolveInput`); ``metrics`` maps names such as ``invdiff_psnr``
    to per-slice values.
    """

    samples: np.ndarray  # N x K x C x H x W
    measurements: dict[str, np.ndarray]
    attrs: dict[str, Any]
    baseline: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    @functools.cached_property
    def reconstruction(self) -> np.ndarray:
        """Return the posterior mean, N x C x H x W."""
        return self.samples.mean(1)

    @functools.cached_property
    def std(self) -> np.ndarray | None:
        """Return the per-pixel posterior std (N x C x H x W), or None for one sample."""
        return self.samples.std(1, ddof=1) if self.samples.shape[1] > 1 else None

    def write(self, path: str | Path) -> None:
        """Write the file atomically (an existing one is replaced: the caller checked --force)."""
        out = {"reconstruction": self.reconstruction, "samples": self.samples}
        if self.baseline is not None:
            out["baseline"] = self.baseline
        if self.std is not None:
            out["std"] = self.std
        for name, y in self.measurements.items():
            out[f"measurements/{name}" if name else "measurement"] = y
        if self.ground_truth is not None:
            out["ground_truth"] = self.ground_truth
        out.update({f"metrics/{name}": v for name, v in self.metrics.items()})
        write_datasets(path, out, self.attrs, force=True)
