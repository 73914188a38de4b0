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


@pytest.mark.parametrize("contrast", ["gm", "wm"])
def test_mni152_tissue_maps_are_other_contrasts_of_the_same_slices(contrast, tmp_path):
    """Grey/white-matter slices: same split and grid as T1, [0, 1], deterministic, recorded."""
    pytest.importorskip("nilearn")
    from typer.testing import CliRunner

    from invdiff.cli import app
    from invdiff.data import mni
    from invdiff.errors import InvdiffError
    from invdiff.io import read_images

    t1, _ = mni.slices("train", 32, [60, 130])
    images, zs = mni.slices("train", 32, [60, 130], contrast=contrast)
    assert images.shape == t1.shape and zs == [60, 130]
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05
    assert np.abs(images - t1).mean() > 0.02  # another contrast, not the T1 image again
    # the tissue lies inside the head: no grey/white matter where T1 is background
    assert images[t1 < 0.01].max() < 0.2
    with pytest.raises(InvdiffError, match="not in the train split"):
        mni.slices("train", 32, [95], contrast=contrast)
    with pytest.raises(InvdiffError, match="unknown MNI152 contrast"):
        mni.slices("train", 32, [40], contrast="t2")
    out = tmp_path / "m.h5"
    args = ["data", "mni152", str(out), "--size", "24", "--contrast", contrast]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written, _, attrs = read_images(out)
    again, _ = mni.slices("train", 24, contrast=contrast)
    np.testing.assert_array_equal(written, again)
    assert attrs["contrast"] == contrast and attrs["generator"] == "invdiff.mni.slices"
    assert f"load_mni152_{contrast}_template" in attrs["source"] and attrs["heldout_z"]


def test_tiles_cut_each_image_row_major_without_overlap():
    from invdiff.data import tiles

    images = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    out = tiles(images, 2)
    assert out.shape == (8, 1, 2, 2)
    np.testing.assert_array_equal(out[0, 0], images[0, 0, :2, :2])
    np.testing.assert_array_equal(out[1, 0], images[0, 0, :2, 2:])  # row-major within an image
    np.testing.assert_array_equal(out[2, 0], images[0, 0, 2:, :2])
    np.testing.assert_array_equal(out[7, 0], images[1, 0, 2:, 2:])
    assert sorted(out.ravel()) == sorted(images.ravel())  # every pixel once
    with pytest.raises(ValueError, match="tiles of 3"):
        tiles(images, 3)


@pytest.mark.parametrize("source", ["ellipses", "phantoms"])
def test_invdiff_data_scale_writes_tiles_of_larger_renders(source, tmp_path):
    from typer.testing import CliRunner

    from invdiff.cli import app
    from invdiff.data import tiles
    from invdiff.data.phantoms import make_phantoms
    from invdiff.io import read_images

    out = tmp_path / "x.h5"
    args = ["data", source, str(out), "--n", "6", "--size", "16", "--scale", "2", "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    images, labels, attrs = read_images(out)
    # 6 tiles: the 4 of rendered image 0 and the first 2 of image 1, rendered at 32 px.
    if source == "phantoms":
        rendered, lesion = make_phantoms(2, 32, 3)
        np.testing.assert_array_equal(labels, np.repeat(lesion, 4)[:6])
    else:
        rendered = synthetic.make_images(source, 2, 32, 3)
    np.testing.assert_array_equal(images, tiles(rendered, 16)[:6])
    assert images.shape == (6, 1, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert attrs["scale"] == 2 and attrs["seed"] == 3
    again = tmp_path / "y.h5"
    assert CliRunner().invoke(app, [*args[:2], str(again), *args[3:]]).exit_code == 0
    np.testing.assert_array_equal(read_images(again)[0], images)  # deterministic


def test_invdiff_data_scale_is_refused_with_twins_and_beyond_4096_px(tmp_path):
    from typer.testing import CliRunner

    from invdiff.cli import app

    out = tmp_path / "x.h5"
    r = CliRunner().invoke(app, ["data", "phantoms", str(out), "--twins", "--scale", "2"])
    assert r.exit_code != 0 and "--scale" in r.output and not out.exists()
    r = CliRunner().invoke(app, ["data", "ellipses", str(out), "--size", "128", "--scale", "64"])
    assert r.exit_code != 0 and "--scale" in r.output and not out.exists()
