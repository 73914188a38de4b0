"""Training data sources of the general prior: shape, range, determinism, held-out MNI152 band."""

from __future__ import annotations

import numpy as np
import pytest

from invdiff.data import synthetic


@pytest.mark.parametrize("kind", sorted(synthetic.GENERATORS))
def test_generated_images_have_shape_range_and_are_deterministic(kind):
    a = synthetic.make_images(kind, 3, 40, seed=5)
    assert a.shape == (3, 1, 40, 40) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.01
    b = synthetic.make_images(kind, 2, 40, seed=5)
    np.testing.assert_array_equal(a[:2], b)  # image k depends on (seed, k) only
    c = synthetic.make_images(kind, 2, 40, seed=6)
    assert not np.array_equal(a[:2], c)
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize("kind", sorted(synthetic.GENERATORS))
def test_invdiff_data_writes_each_source_with_its_provenance(kind, tmp_path):
    from typer.testing import CliRunner

    from invdiff.cli import app
    from invdiff.io import read_images

    out = tmp_path / f"{kind}.h5"
    result = CliRunner().invoke(app, ["data", kind, str(out), "--n", "2", "--size", "24"])
    assert result.exit_code == 0, result.output
    images, _, attrs = read_images(out)
    assert images.shape == (2, 1, 24, 24)
    np.testing.assert_array_equal(images, synthetic.make_images(kind, 2, 24, 0))
    assert attrs["generator"] == f"invdiff.synthetic.{kind}" and attrs["license"]


def test_mni152_slices_keep_the_held_out_band_out_of_training():
    pytest.importorskip("nilearn")
    from invdiff.data import mni
    from invdiff.errors import InvdiffError

    assert not set(mni.TRAIN_Z) & set(
        range(mni.HELDOUT_Z.start - mni.MARGIN, mni.HELDOUT_Z.stop + mni.MARGIN)
    )
    images, zs = mni.slices("train", 32, [40, 150])
    assert images.shape == (2, 1, 32, 32) and zs == [40, 150]
    assert 0 <= images.min() and images.max() <= 1 and images.mean() > 0.05
    again, _ = mni.slices("train", 32, [40, 150])
    np.testing.assert_array_equal(images, again)
    with pytest.raises(InvdiffError, match="not in the train split"):
        mni.slices("train", 32, [95])
    with pytest.raises(InvdiffError, match="not in the heldout split"):
        mni.slices("heldout", 32, [40])
