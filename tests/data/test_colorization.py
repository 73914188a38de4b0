"""Colorization: the photo-patch data, and gray(output) == gray input through `invdiff solve`."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from invdiff.cli import app
from invdiff.data.photos import HOLDOUT, load_photo, make_patches, photo_names
from invdiff.errors import InvdiffError

runner = CliRunner()
SHIPPED = Path(__file__).parents[2] / "invdiff" / "models" / "rgb32.pt"


def test_patches_are_seeded_and_keep_the_holdout_out_of_training():
    a, which, names = make_patches(6, 16, seed=3)
    b, _, _ = make_patches(6, 16, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 3, 16, 16) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1
    assert HOLDOUT not in names and set(names) < set(photo_names())
    assert which.max() < len(names)
    test, _, test_names = make_patches(3, 16, seed=2, split="test")
    assert test_names == [HOLDOUT]
    # Patch k depends on (seed, k) only: a longer draw starts with the shorter one.
    np.testing.assert_array_equal(make_patches(8, 16, seed=3)[0][:6], a)
    with pytest.raises(InvdiffError, match="holdout"):
        make_patches(1, 16, seed=0, holdout="nope")


def test_every_photograph_loads_as_rgb_in_unit_range():
    for name in photo_names():
        img = load_photo(name)
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256, name
        assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1, name


@pytest.fixture(scope="module")
def tiny_rgb_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgb")
    data = root / "photos.h5"
    result = runner.invoke(app, ["data", "photos", str(data), "--n", "16", "--size", "16"])
    assert result.exit_code == 0, result.output
    with h5py.File(data) as f:
        assert f["images"].shape == (16, 3, 16, 16) and f.attrs["holdout"] == HOLDOUT
    out = root / "rgb.pt"
    args = ["train", str(data), "--out", str(out), "--steps", "2", "--batch-size", "4"]
    args += ["--base", "8", "--mult", "1,2", "--threads", "1", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _solve_gray(tmp_path, model, size, strategy):
    truth = make_patches(3, size, seed=2, split="test")[0]
    src = tmp_path / f"in_{size}.h5"
    with h5py.File(src, "w") as f:
        f["image"] = truth
    out = tmp_path / f"out_{size}_{strategy}.h5"
    args = ["solve", "--model", str(model), "--operator", "grayscale", "--noise-std", "0"]
    args += ["--strategy", strategy, "--steps", "3", "--samples", "2", "--simulate"]
    result = runner.invoke(app, [*args, "--no-progress", "--out", str(out), str(src)])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        samples, mean = f["samples"][...], f["reconstruction"][...]
    gray = truth.mean(1)
    # Exact pseudo-inverse + final hard projection: A x = y up to float32 round-off, relative
    # to the size of x (a barely trained model leaves samples far outside [0, 1]).
    atol = 1e-5 * max(1.0, float(np.abs(samples).max()))
    np.testing.assert_allclose(samples.mean(2), gray[:, None].repeat(2, 1), rtol=0, atol=atol)
    np.testing.assert_allclose(mean.mean(1), gray, rtol=0, atol=atol)
    assert np.abs(samples - samples[:, :1]).max() > 0  # the chroma is sampled, not fixed


@pytest.mark.parametrize("strategy", ["replacement", "projection"])
def test_gray_of_the_output_equals_the_gray_input(tmp_path, tiny_rgb_model, strategy):
    _solve_gray(tmp_path, tiny_rgb_model, 16, strategy)


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped RGB model not present")
def test_shipped_rgb_model_colorizes_consistently(tmp_path):
    _solve_gray(tmp_path, SHIPPED, 32, "replacement")
