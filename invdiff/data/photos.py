"""Random colour patches of the photographs bundled with scikit-image (and scikit-learn).

The training data of the shipped RGB model (colorization). Real photographs that load with
no network: scikit-image's ``astronaut``, ``coffee``, ``chelsea``, ``rocket``,
``immunohistochemistry``, ``hubble_deep_field``, ``retina`` and the left view of
``stereo_motorcycle``, plus scikit-learn's two ``load_sample_images`` (``china``, ``flower``)
when scikit-learn is installed (``pip install invdiff[photos]``). One photograph (``HOLDOUT``,
default ``chelsea``) is never used for training; the ``test`` split draws patches from it alone.

Each patch is taken from the photograph downscaled by a random factor in [1/4, 1] (so a 32-pixel
patch sees structure, not just texture), at a random position, randomly flipped left-right. Patch k
depends only on (seed, k): one ``numpy.random.Generator`` per patch.
"""

from __future__ import annotations

import numpy as np

from invdiff.errors import InvdiffError

SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
)
HOLDOUT = "chelsea"
SCALES = (1.0, 0.5, 0.25)  # pyramid levels patches are drawn from (uniformly)


def photo_names() -> list[str]:
    """Return the names of every available photograph (scikit-learn's only if installed)."""
    names = list(SKIMAGE_PHOTOS)
    if sklearn_available():
        from sklearn.datasets import load_sample_images

        names += [f"sklearn:{f.rsplit('/', 1)[-1]}" for f in load_sample_images().filenames]
    return names


def sklearn_available() -> bool:
    """Whether scikit-learn, and with it its two sample photographs, is installed."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def load_photo(name: str) -> np.ndarray:
    """Return photograph ``name`` as float32 H x W x 3 in [0, 1]."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images()
        files = [f.rsplit("/", 1)[-1] for f in imgs.filenames]
        img = imgs.images[files.index(name.split(":", 1)[1])]
    else:
        import skimage.data

        if name not in SKIMAGE_PHOTOS:
            raise InvdiffError(f"unknown photograph {name!r}; choose from {photo_names()}")
        img = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":  # (left, right, disparity): the left photograph
            img = img[0]
    return np.asarray(img[..., :3], dtype=np.float32) / 255.0


def _pyramid(img: np.ndarray, size: int) -> list[np.ndarray]:
    from skimage.transform import rescale

    levels = [
        img if s == 1 else rescale(img, s, channel_axis=-1, anti_aliasing=True) for s in SCALES
    ]
    return [np.clip(lv, 0, 1).astype(np.float32) for lv in levels if min(lv.shape[:2]) >= size]


def make_patches(
    n: int, size: int, seed: int, split: str = "train", holdout: str = HOLDOUT
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Draw ``n`` RGB patches (n x 3 x size x size in [0, 1]) and the index of each one's photo.

    ``split='train'`` samples every photograph except ``holdout`` (equally often); ``'test'``
    samples ``holdout`` only. Returns (patches, photo index, photo names).
    """
    names = photo_names()
    if holdout not in names:
        raise InvdiffError(f"--holdout {holdout!r} is not a photograph; choose from {names}")
    if split == "train":
        names = [m for m in names if m != holdout]
    elif split == "test":
        names = [holdout]
    else:
        raise InvdiffError(f"unknown split {split!r}; use train or test")
    pyramids = [_pyramid(load_photo(m), size) for m in names]
    for name, levels in zip(names, pyramids, strict=True):
        if not levels:
            side = min(load_photo(name).shape[:2])
            raise InvdiffError(f"--size {size} is larger than photograph {name} ({side} px high)")
    out = np.empty((n, 3, size, size), np.float32)
    which = np.empty(n, np.int64)
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        which[k] = rng.integers(len(names))
        levels = pyramids[which[k]]
        img = levels[rng.integers(len(levels))]
        i = rng.integers(img.shape[0] - size + 1)
        j = rng.integers(img.shape[1] - size + 1)
        patch = img[i : i + size, j : j + size]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out[k] = patch.transpose(2, 0, 1)
    return out, which, names
