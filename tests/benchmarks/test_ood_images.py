"""The out-of-distribution suite's images and its held-out check (benchmarks/ood_images.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import bench_ood, ood_images
from invdiff.core import checkpoint

nilearn = pytest.importorskip("nilearn")


def test_images_are_unit_range_squares():
    for name in ("shepp_logan", "camera", "mni_z95", *bench_ood.VAL_WIDE):
        img = ood_images.load(name, 32)
        assert img.shape == (1, 1, 32, 32) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.02


def test_blobs_is_piecewise_constant_and_fixed():
    img = ood_images.blobs()
    levels = np.unique(img)
    assert 4 <= len(levels) <= 8 and 0.1 - 1e-9 <= levels.min() < levels.max() <= 0.9 + 1e-9
    np.testing.assert_array_equal(img, ood_images.blobs())  # seeded: the same image every call


def test_the_shipped_default_never_trained_on_the_suite():
    _, config = checkpoint.load_model(checkpoint.resolve_model(None))
    tests = {img for cases in bench_ood.SUITE.values() for img, _ in cases}
    for name in sorted(tests | set(bench_ood.VAL_WIDE)):
        ood_images.check_heldout(name, config)  # raises if the model could have seen it
    assert set(bench_ood.VAL) <= set(bench_ood.VAL_WIDE)
    assert not tests & set(bench_ood.VAL_WIDE)  # no test image chooses a knob


def test_check_heldout_refuses_what_a_model_could_have_seen():
    with pytest.raises(ValueError, match="not in the held-out"):
        ood_images.check_heldout("mni_z70", {})
    photos = {"data": [{"source": "invdiff.photos (skimage)"}]}
    with pytest.raises(ValueError, match="scikit-image"):
        ood_images.check_heldout("camera", photos)
    other_band = {"data": [{"generator": "invdiff.mni.slices", "heldout": "[60, 70) margin 0"}]}
    with pytest.raises(ValueError, match="another held-out band"):
        ood_images.check_heldout("mni_z95", other_band)


def test_each_images_measurement_noise_depends_on_its_name_only():
    from invdiff_operators.masking import Masking

    op = Masking((1, 8, 8), mask="random", fraction=0.5, noise_std=0.1)
    a, b = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    both = bench_ood.measure(op, torch.stack([a, b]), ["val", "test"], seed=0)
    alone = bench_ood.measure(op, b[None], ["test"], seed=0)
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=0)  # a new val image moves nothing
    renamed = bench_ood.measure(op, b[None], ["other"], seed=0)
    assert not torch.equal(renamed, alone)  # the name does choose the stream
    with pytest.raises(ValueError):  # two names for one image
        bench_ood.measure(op, b[None], ["a", "b"], seed=0)
