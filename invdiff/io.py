"""HDF5 input and output; the only module that imports h5py.

Training-image layout (``invdiff train``, ``invdiff data``):

- ``/images``: float, N x C x H x W or N x H x W (read as C = 1), values in [0, 1];
- ``/labels`` (optional): int, N, one class per image (e.g. lesion present = 1);
- attributes describe where the data came from (generator, seed, size, ...).

Every writer goes through :func:`atomic_path`: the file is written under a temporary name in the
destination folder and renamed into place only when complete, so an interrupted write never leaves
a half-written file and never damages an existing one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from invdiff.errors import InvdiffError


@contextlib.contextmanager
def atomic_path(path: str | Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    if path.exists() and not force:
        raise InvdiffError(f"{path} exists; pass --force to overwrite it or choose another --out")
    if not path.parent.exists():
        raise InvdiffError(f"folder {path.parent} does not exist; create it or choose another path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _h5py():
    import h5py

    return h5py


def _open(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise InvdiffError(f"{path} not found; check the path")
    try:
        return _h5py().File(path, "r")
    except OSError:
        raise InvdiffError(f"{path} is not a readable HDF5 file; check that it is HDF5") from None


def read_images(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read ``/images`` as float32 N x C x H x W, the optional ``/labels`` and the attributes."""
    with _open(path) as f:
        if "images" not in f:
            raise InvdiffError(
                f"{path} has no /images dataset; store training images as /images (N x C x H x W)"
            )
        images = np.asarray(f["images"][...], dtype=np.float32)
        labels = np.asarray(f["labels"][...]).astype(np.int64) if "labels" in f else None
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
    return images, labels, attrs


def write_datasets(
    path: str | Path,
    datasets: dict[str, np.ndarray],
    attrs: dict[str, Any] | None = None,
    force: bool = True,
) -> None:
    """Write arrays and attributes to a new HDF5 file atomically."""
    with atomic_path(path, force=force) as tmp, _h5py().File(tmp, "w") as f:
        for name, arr in datasets.items():
            f.create_dataset(name, data=arr, compression="gzip" if arr.size > 4096 else None)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
