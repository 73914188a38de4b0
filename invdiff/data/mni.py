"""Axial slices of the MNI152 templates shipped with nilearn, with a held-out band.

Source: nilearn's ``load_mni152_template(resolution=1)`` (nilearn is BSD-3-Clause; the template is
the ICBM 2009a nonlinear symmetric MNI152 average, Fonov et al., NeuroImage 2011, copyright
McConnell Brain Imaging Centre, free to use with its copyright notice). Volume 197 x 233 x 189
(x, y, z), 1 mm voxels, values in [0, 1]. Nothing is downloaded: the file is inside nilearn.
The same atlas's grey- and white-matter probability maps (``load_mni152_gm_template``,
``load_mni152_wm_template``; same grid, same licence) are other contrasts of the same anatomy:
grey matter bright on a dark background, as cortex looks on many T2- or PD-weighted scans.

The band of axial slices ``HELDOUT_Z`` is reserved for evaluation, and ``MARGIN`` slices on each
side of it are used for neither training nor evaluation (neighbouring 1-mm slices are nearly
identical). :func:`slices` refuses to return a training slice from the band and an evaluation
slice from outside it, so the split is checked in code, not only written down.
"""

from __future__ import annotations

import numpy as np

from invdiff.errors import InvdiffError

LICENSE = (
    "MNI152 ICBM 2009a nonlinear symmetric template (Fonov et al. 2011), (c) McConnell Brain "
    "Imaging Centre, as bundled with nilearn (BSD-3-Clause)"
)
HELDOUT_Z = range(80, 110)  # axial slices kept for evaluation (through the lateral ventricles)
MARGIN = 4
TRAIN_Z = [
    z for z in range(20, 170) if z < HELDOUT_Z.start - MARGIN or z >= HELDOUT_Z.stop + MARGIN
]


CONTRASTS = {  # contrast -> nilearn.datasets loader
    "t1": "load_mni152_template",
    "gm": "load_mni152_gm_template",
    "wm": "load_mni152_wm_template",
}


def load_volume(contrast: str = "t1") -> np.ndarray:
    """Return a template as float32 (x, y, z) in [0, 1]; one-line error without nilearn."""
    if contrast not in CONTRASTS:
        raise InvdiffError(
            f"unknown MNI152 contrast {contrast!r}; use one of {', '.join(CONTRASTS)}"
        )
    try:
        from nilearn import datasets
    except ImportError:
        raise InvdiffError(
            "the MNI152 slices need nilearn; install it with pip install 'invdiff[data]'"
        ) from None
    image = getattr(datasets, CONTRASTS[contrast])(resolution=1)
    vol = np.asarray(image.get_fdata(), dtype=np.float32)
    return np.clip(vol / max(float(vol.max()), 1e-12), 0.0, 1.0)


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a slice to a square and resample it to ``size`` pixels (antialiased)."""
    from skimage.transform import resize

    h, w = img.shape
    side = max(h, w)
    out = np.zeros((side, side), np.float32)
    out[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = img
    return np.clip(resize(out, (size, size), anti_aliasing=True), 0, 1).astype(np.float32)


def slices(
    split: str, size: int, zs: list[int] | None = None, contrast: str = "t1"
) -> tuple[np.ndarray, list[int]]:
    """Return axial slices (n, 1, size, size) of ``split`` ('train' or 'heldout') and their z.

    Slices are shown the radiological way up (anterior at the top). ``zs`` picks slices of the
    split; asking for a slice of the other split is an error. ``contrast`` is a key of
    :data:`CONTRASTS`; every contrast has the same held-out band.
    """
    allowed = {"train": TRAIN_Z, "heldout": list(HELDOUT_Z)}
    if split not in allowed:
        raise InvdiffError(f"unknown MNI152 split {split!r}; use train or heldout")
    zs = allowed[split] if zs is None else list(zs)
    bad = [z for z in zs if z not in allowed[split]]
    if bad:
        raise InvdiffError(
            f"MNI152 slices {bad} are not in the {split} split (held out: z in "
            f"[{HELDOUT_Z.start}, {HELDOUT_Z.stop}), margin {MARGIN})"
        )
    vol = load_volume(contrast)
    images = [_square(np.rot90(vol[:, :, z]), size) for z in zs]
    return np.stack(images)[:, None], zs
